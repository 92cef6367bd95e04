"""The VNC server of a real running busybox domain, with real clients: the `vnc` file,
typing, restarts after a crash, resize from a client, passwords."""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio
from PIL import Image

from bench.host import parent_pid
from tests.system import VZFS, Instance, wait_for
from tests.test_console import started_shell
from tests.test_vnc_server import RawClient
from vzfs.vnc import encodings as enc


def vnc_port(inst: Instance, name: str) -> int:
    wait_for(lambda: inst.read(name, "vnc").strip() != "", what="the vnc file")
    host, port = inst.read(name, "vnc").strip().rsplit(":", 1)
    assert host == "127.0.0.1"          # loopback unless configured
    return int(port)


def vnc_server_pid(inst: Instance, name: str) -> int:
    """The domain's VNC server: a process named vzfs-vnc:NAME below its controller."""
    out = subprocess.run(["pgrep", "-x", f"vzfs-vnc:{name}"[:15]], capture_output=True,
                         text=True).stdout.split()
    controller = parent_pid(int(inst.read(name, "pid")))
    mine = [int(p) for p in out if _ancestor(int(p), controller)]
    assert len(mine) == 1, (out, controller)
    return mine[0]


def _ancestor(pid: int, ancestor: int) -> bool:
    while pid > 1:
        try:
            pid = parent_pid(pid)
        except FileNotFoundError:
            return False
        if pid == ancestor:
            return True
    return False


def echo_and_settle(inst: Instance, word: str) -> None:
    """Run `echo WORD` in the demo's shell; return once its output and the next prompt
    are on the screen, after which the screen stays still."""
    inst.write("demo", "console", f"echo {word}\n")
    wait_for(lambda: re.search(f"\n{word}\n\\S+:/#\n", inst.read("demo", "screen")),
             what="output and prompt")


def capture(api: Any, port: int, path: Path, password: str | None = None) -> np.ndarray:
    client = api.connect(f"127.0.0.1::{port}", password=password, timeout=20)
    try:
        client.captureScreen(str(path))
    finally:
        client.disconnect()
    return np.asarray(Image.open(path).convert("RGB"))


def test_vncdotool_sees_the_terminal_and_types_into_the_console(
        instance: Instance, vncdotool_api: Any, tmp_path: Path) -> None:
    started_shell(instance)
    port = vnc_port(instance, "demo")
    frame = capture(vncdotool_api, port, tmp_path / "a.png")
    assert frame.shape == (25 * 16, 80 * 8, 3)            # 80x25 cells of 8x16
    token = secrets.token_hex(4)
    client = vncdotool_api.connect(f"127.0.0.1::{port}", timeout=20)
    try:
        for key in f"echo vnc-{token}":
            client.keyPress("space" if key == " " else key)
        client.keyPress("enter")
    finally:
        client.disconnect()
    wait_for(lambda: f"\nvnc-{token}\n" in "\n" + instance.read("demo", "screen"),
             what="the typed command's output on the screen")


def test_asyncvnc_zlib_gets_the_same_frame_as_vncdotool(
        instance: Instance, vncdotool_api: Any, tmp_path: Path) -> None:
    import asyncio
    asyncvnc = pytest.importorskip("asyncvnc")
    started_shell(instance)
    port = vnc_port(instance, "demo")

    async def shot() -> np.ndarray:
        async with asyncvnc.connect("127.0.0.1", port) as client:     # asks for zlib
            return await asyncio.wait_for(client.screenshot(), 20)  # type: ignore[no-any-return]

    rgba = asyncio.run(shot())
    assert np.array_equal(rgba[..., :3], capture(vncdotool_api, port, tmp_path / "raw.png"))
    assert rgba[..., :3].any()          # the banner and prompt are drawn


def test_a_killed_vnc_server_is_restarted_with_the_same_screen(
        instance: Instance, vncdotool_api: Any, tmp_path: Path) -> None:
    started_shell(instance)
    token = secrets.token_hex(4)
    echo_and_settle(instance, f"before-{token}")
    port = vnc_port(instance, "demo")
    before = capture(vncdotool_api, port, tmp_path / "before.png")
    again = capture(vncdotool_api, port, tmp_path / "again.png")
    assert np.array_equal(before, again)
    init_pid = instance.read("demo", "pid")
    server = vnc_server_pid(instance, "demo")
    assert "vnc_restarts 0\n" in instance.read("demo", "stats")
    os.kill(server, signal.SIGKILL)
    wait_for(lambda: "vnc_restarts 1\n" in instance.read("demo", "stats"),
             what="the restart counted")
    assert vnc_port(instance, "demo") == port                 # clients reconnect to the same place
    assert vnc_server_pid(instance, "demo") != server
    after = capture(vncdotool_api, port, tmp_path / "after.png")
    diff = np.argwhere((before != after).any(axis=2))
    assert diff.size == 0, (diff.min(axis=0), diff.max(axis=0), len(diff))
    # The domain never noticed.
    assert instance.read("demo", "pid") == init_pid
    assert instance.read("demo", "state") == "running\n"
    instance.write("demo", "console", f"echo after-{token}\n")
    wait_for(lambda: f"\nafter-{token}\n" in "\n" + instance.read("demo", "screen"), what="output")


def test_a_client_resize_reaches_the_container_as_its_tty_size(instance: Instance) -> None:
    started_shell(instance)
    port = vnc_port(instance, "demo")

    async def resize() -> None:
        with trio.fail_after(20):
            client = await RawClient.connect(port, [enc.RAW, enc.EXTENDED_DESKTOP_SIZE])
            await client.request(incremental=False)
            await client.next_message()
            # Not a multiple of the 8x16 cell (padded): 125x30 cells.
            assert await client.set_desktop_size(1003, 487) == enc.STATUS_OK
            assert (client.decoder.width, client.decoder.height) == (1003, 487)
            await client.stream.aclose()

    trio.run(resize)
    # stty reads the size the kernel keeps for the tty (TIOCGWINSZ): set by TIOCSWINSZ.
    def stty_size() -> str:
        # busybox's stty prefers $LINES/$COLUMNS (pytest's terminal sets them) to the tty.
        r = subprocess.run([*VZFS, "enter", "--mount", str(instance.mnt), "demo", "--",
                            "env", "-u", "LINES", "-u", "COLUMNS", "stty", "-F", "/dev/console", "size"],
                           capture_output=True, text=True)
        return r.stdout + r.stderr

    wait_for(lambda: stty_size() == "30 125\n", what="stty size 30 125")
    # The emulator behind `screen` has the new size too: one line per row.
    wait_for(lambda: len(instance.read("demo", "screen").split("\n")) - 1 == 30,
             what="a 30-row screen")


def test_the_configured_password_is_required(
        instance: Instance, vncdotool_api: Any, tmp_path: Path) -> None:
    instance.define("demo", '[vnc]\npassword = "s3cret"\n')
    instance.write("demo", "state", "start")
    port = vnc_port(instance, "demo")
    frame = capture(vncdotool_api, port, tmp_path / "ok.png", password="s3cret")
    assert frame.shape == (400, 640, 3)
    from vncdotool.client import AuthenticationError
    # The server's refusal, as vncdotool reports it: not a timeout or a crash.
    with pytest.raises(AuthenticationError):
        capture(vncdotool_api, port, tmp_path / "bad.png", password="wrong")
    assert not (tmp_path / "bad.png").exists()


def test_the_vnc_file_is_empty_when_stopped_and_follows_a_configured_port(instance: Instance) -> None:
    instance.define("demo", "[vnc]\nport = 5987\nwebsocket = false\n")
    assert instance.read("demo", "vnc") == ""
    instance.write("demo", "state", "start")
    wait_for(lambda: instance.read("demo", "vnc") == "127.0.0.1:5987\n", what="the vnc file")
    assert instance.read("demo", "vnc_websocket") == ""
    instance.write("demo", "state", "kill")
    assert instance.read("demo", "vnc") == ""


def test_a_restart_keeps_the_vnc_address(instance: Instance) -> None:
    started_shell(instance)
    wait_for(lambda: instance.read("demo", "vnc") != "", what="the vnc file")
    address = instance.read("demo", "vnc")
    instance.write("demo", "state", "restart")
    # The old server is gone before the stop returns: the new one gets its ports back.
    wait_for(lambda: instance.read("demo", "vnc") != "", what="the vnc file")
    assert instance.read("demo", "vnc") == address


def test_novnc_in_chromium_connects_with_the_password_and_types(
        instance: Instance, vncdotool_api: Any, tmp_path: Path) -> None:
    """Debian's noVNC, served by the domain's own WebSocket listener (no websockify)."""
    from selenium.webdriver.common.keys import Keys

    from tests.novnc_browser import NoVNC, novnc_url, require_browser
    require_browser()
    instance.define("demo", '[vnc]\npassword = "pw4vnc"\n')
    instance.write("demo", "state", "start")
    wait_for(lambda: ":/#" in instance.read("demo", "screen"), what="the shell prompt")
    wait_for(lambda: instance.read("demo", "vnc_websocket") != "", what="the vnc_websocket file")
    host, ws_port = instance.read("demo", "vnc_websocket").strip().rsplit(":", 1)
    assert host == "127.0.0.1"
    with NoVNC.start() as browser:
        browser.open(novnc_url(int(ws_port), password="pw4vnc"))
        browser.wait_connected()
        assert browser.canvas_size() == (640, 400)
        # What noVNC drew equals what vncdotool (another client) gets.
        expected = capture(vncdotool_api, vnc_port(instance, "demo"), tmp_path / "ref.png",
                           password="pw4vnc")
        browser.wait_pixels(expected)
        token = secrets.token_hex(4)
        browser.type(f"echo novnc-{token}" + Keys.ENTER)
        wait_for(lambda: f"\nnovnc-{token}\n" in "\n" + instance.read("demo", "screen"),
                 what="what was typed in the browser, run in the container")


def save_screen(inst: Instance, name: str) -> dict[str, Any]:
    """Ask the domain's controller to save its screen on the root, as a checkpoint will."""
    import json
    import socket as socketmod
    with socketmod.socket(socketmod.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(inst.state / "domains" / name / "ctl.sock"))
        sock.sendall(b'{"id": 1, "op": "save_screen"}\n')
        buf = b""
        while True:
            buf += sock.recv(65536)
            for line in buf.split(b"\n")[:-1]:
                msg = json.loads(line)
                if msg.get("id") == 1:
                    return msg


def test_the_screen_saved_on_the_root_is_shown_by_the_next_start(
        instance: Instance, vncdotool_api: Any, tmp_path: Path) -> None:
    started_shell(instance)
    token = secrets.token_hex(4)
    echo_and_settle(instance, f"saved-{token}")
    screen = instance.read("demo", "screen")
    reply = save_screen(instance, "demo")
    assert reply["ok"] and reply["path"] == "/.vzfs/console.json", reply
    root = Path(f"/proc/{instance.read('demo', 'pid').strip()}/root")
    assert (root / ".vzfs" / "console.json").is_file()
    instance.write("demo", "state", "kill")
    # The next start shows the saved screen (and the new boot's output after it);
    # the VNC server, started from the controller's emulator, shows the same.
    instance.write("demo", "state", "start")
    wait_for(lambda: f"saved-{token}" in instance.read("demo", "screen"), what="the saved screen")
    assert instance.read("demo", "screen").startswith(screen.rstrip("\n").rsplit("\n", 1)[0])
    prompts = screen.count(":/#")
    wait_for(lambda: instance.read("demo", "screen").count(":/#") > prompts, what="the new prompt")
    lines = instance.read("demo", "screen").split("\n")
    row = next(i for i, line in enumerate(lines) if line == f"saved-{token}")
    frame = capture(vncdotool_api, vnc_port(instance, "demo"), tmp_path / "restored.png")
    assert frame[row * 16:(row + 1) * 16, :8 * len(lines[row])].any()   # the saved line is drawn
    assert not frame[row * 16:(row + 1) * 16, 8 * len(lines[row]):].any()
    assert not (Path(f"/proc/{instance.read('demo', 'pid').strip()}/root") / ".vzfs" /
                "console.json").exists()       # used once

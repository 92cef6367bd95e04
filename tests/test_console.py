"""The console and screen files on a real busybox domain: typing, following, bounds, replies."""

import errno
import os
import secrets
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.system import VZFS, Instance, wait_for


def read_available(path: Path, limit: float = 0.5) -> bytes:
    """Everything a non-blocking reader gets now (from the scrollback on)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    out = b""
    deadline = time.monotonic() + limit
    try:
        while time.monotonic() < deadline:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                break
            out += chunk
    finally:
        os.close(fd)
    return out


def started_shell(inst: Instance, name: str = "demo") -> Path:
    d = inst.define(name)
    inst.write(name, "state", "start")
    wait_for(lambda: ":/#" in inst.read(name, "screen"), what="the shell prompt on the screen")
    return d


def test_typed_command_shows_in_screen_and_in_two_readers(instance: Instance) -> None:
    d = started_shell(instance)
    readers = [os.open(d / "console", os.O_RDONLY | os.O_NONBLOCK) for _ in range(2)]
    try:
        for fd in readers:        # both start from the scrollback: drain it
            while True:
                try:
                    os.read(fd, 65536)
                except BlockingIOError:
                    break
        token = secrets.token_hex(4)
        with open(d / "console", "w") as f:
            f.write(f"echo hello-{token}\n")
        wait_for(lambda: f"\nhello-{token}\n" in "\n" + instance.read("demo", "screen"),
                 what="the output on the screen")
        for fd in readers:
            got = b""
            deadline = time.monotonic() + 5
            while f"hello-{token}\r\n".encode() not in got and time.monotonic() < deadline:
                try:
                    got += os.read(fd, 65536)
                except BlockingIOError:
                    time.sleep(0.02)
            assert f"echo hello-{token}".encode() in got
            assert f"hello-{token}\r\n".encode() in got
    finally:
        for fd in readers:
            os.close(fd)


def test_screen_rows_are_trimmed_and_sized(instance: Instance) -> None:
    started_shell(instance)
    screen = instance.read("demo", "screen")
    rows = screen.split("\n")
    assert rows[-1] == "" and len(rows) == 26          # 25 rows, each newline-terminated
    assert all(row == row.rstrip(" ") for row in rows)
    instance.write("demo", "console", "stty size\n")
    wait_for(lambda: "25 80" in instance.read("demo", "screen"), what="stty size")


def test_blocking_reader_follows_live_output(instance: Instance) -> None:
    d = started_shell(instance)
    got: list[bytes] = []

    def follow() -> None:
        with open(d / "console", "rb", buffering=0) as f:
            f.read(1 << 20)             # the scrollback
            data = b""
            while b"live-line\r\n" not in data:
                data += f.read(1 << 20)  # blocks until new output
            got.append(data)

    t = threading.Thread(target=follow)
    t.start()
    time.sleep(0.3)
    assert t.is_alive(), "the second read blocks like tail -f"
    instance.write("demo", "console", "echo live-line\n")
    t.join(10)
    assert not t.is_alive()
    assert b"live-line\r\n" in got[0]


def test_blocking_reader_can_be_interrupted(instance: Instance) -> None:
    d = started_shell(instance)
    t = time.monotonic()
    r = subprocess.run(["timeout", "-s", "INT", "1", "cat", str(d / "console")],
                       capture_output=True, timeout=20)
    assert time.monotonic() - t < 5
    assert r.returncode == 124
    assert b"# " in r.stdout


def test_nonblocking_reader_gets_eagain_when_caught_up(instance: Instance) -> None:
    d = started_shell(instance)
    fd = os.open(d / "console", os.O_RDONLY | os.O_NONBLOCK)
    seen = bytearray()

    def prompt_read() -> bool:
        # The daemon's copy of the console follows the controller's a moment behind
        # the screen: until the prompt is in it, EAGAIN is right too.
        try:
            seen.extend(os.read(fd, 1 << 20))
        except BlockingIOError:
            pass
        return b"# " in seen

    try:
        wait_for(prompt_read, what="the prompt in the console")
        with pytest.raises(BlockingIOError):
            os.read(fd, 1 << 20)
    finally:
        os.close(fd)


def test_console_of_stopped_domain(instance: Instance) -> None:
    d = instance.define("off")
    with pytest.raises(OSError) as info:
        instance.write("off", "console", "ls\n")
    assert info.value.errno == errno.EBUSY
    assert instance.read("off", "error") == ("cannot type into the console of domain off: "
                                             "it is not running\n")
    assert read_available(d / "console") == b""
    assert instance.read("off", "screen") == ""


def test_last_screen_kept_after_stop(instance: Instance) -> None:
    started_shell(instance)
    instance.write("demo", "console", "echo before-the-end\n")
    wait_for(lambda: "before-the-end\n" in instance.read("demo", "screen"), what="echo")
    instance.write("demo", "state", "kill")
    assert "before-the-end" in instance.read("demo", "screen")


def test_slow_reader_does_not_stall_and_scrollback_is_bounded(instance: Instance) -> None:
    # 50 MB through the console while one reader never reads: the writer
    # finishes, memory stays bounded, and the lagging reader is told what it missed.
    instance.define("flood", 'init = ["/bin/sh", "-c", "trap \\"exit 0\\" PWR; sleep 100000 & wait"]\n')
    instance.write("flood", "state", "start")
    d = instance.dom("flood")
    lagging = os.open(d / "console", os.O_RDONLY | os.O_NONBLOCK)
    try:
        daemon = instance.daemon_pid()
        rss_before = _rss_kb(daemon)
        t = time.monotonic()
        r = subprocess.run(VZFS + ["enter", "--mount", str(instance.mnt), "flood", "--", "sh", "-c",
                                   "head -c 50000000 /dev/zero | tr '\\0' 'x' > /dev/console; "
                                   "echo; echo flood-done > /dev/console"],
                           capture_output=True, timeout=300)
        assert r.returncode == 0, r.stderr
        took = time.monotonic() - t
        wait_for(lambda: "flood-done" in instance.read("flood", "screen"), timeout=60,
                 what="the end of the flood on the screen")
        assert _rss_kb(daemon) - rss_before < 40 * 1024, "daemon memory stays bounded"
        ctl = _controller_of(int(instance.read("flood", "pid")))
        assert _rss_kb(ctl) < 120 * 1024
        data = os.read(lagging, 1 << 16)
        assert data.startswith(b"\r\n[vzfs: ") and b"bytes of console output skipped]" in data
        skipped = int(data.split(b"[vzfs: ")[1].split()[0])
        assert skipped > 40_000_000
        print(f"50 MB through the console in {took:.2f} s")
    finally:
        os.close(lagging)


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _controller_of(init: int) -> int:
    return int(Path(f"/proc/{init}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_device_attributes_query_is_answered_on_the_pty(instance: Instance) -> None:
    # No shell on this console: the command below is the only reader of the tty.
    instance.define("da", 'init = ["/bin/sh", "-c", "trap \\"exit 0\\" PWR; sleep 100000 & wait"]\n')
    instance.write("da", "state", "start")
    script = ("stty -F /dev/console raw -echo; printf '\\033[c' > /dev/console; "
              "dd if=/dev/console bs=1 count=5 2>/dev/null | od -An -c; stty -F /dev/console sane")
    r = subprocess.run(VZFS + ["enter", "--mount", str(instance.mnt), "da", "--", "sh", "-c", script],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["033", "[", "?", "6", "c"]


def test_resize_sets_the_pty_size_and_the_screen(instance: Instance) -> None:
    # The VNC server resizes through the controller; check the effect inside.
    import json
    import socket
    started_shell(instance)
    ddir = os.open(instance.state / "domains" / "demo", os.O_PATH | os.O_DIRECTORY)
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(f"/proc/self/fd/{ddir}/ctl.sock")
            s.sendall(json.dumps({"id": 1, "op": "resize", "columns": 100, "lines": 30}).encode()
                      + b"\n")
            reply = b""
            while b"\n" not in reply:
                reply += s.recv(4096)
            assert json.loads(reply.split(b"\n")[0]) == {"id": 1, "ok": True, "columns": 100,
                                                         "lines": 30}
            s.sendall(b'{"id": 2, "op": "resize", "columns": 1, "lines": 30}\n')
            reply = b""
            while b"\n" not in reply:
                reply += s.recv(4096)
            assert json.loads(reply.split(b"\n")[0])["ok"] is False
    finally:
        os.close(ddir)
    instance.write("demo", "console", "stty size\n")
    wait_for(lambda: "30 100" in instance.read("demo", "screen"), what="the new size inside")
    assert len(instance.read("demo", "screen").split("\n")) == 31

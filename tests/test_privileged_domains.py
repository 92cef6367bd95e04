"""One privileged run of each kind of system test (issue 15): every other system test runs
against unprivileged domains, the default; `privileged = true` must keep working the
way it did — lifecycle, console and screen, VNC, live mounts, suspend and resume —
with no user namespace (the init's ids are the host's) but the same hardening."""

from __future__ import annotations

import os
import secrets
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from tests.system import VZFS, Instance, wait_for
from tests.test_checkpoint import COUNTER, counter, rootfs
from tests.test_vnc_domain import capture, vnc_port


def privileged(inst: Instance, name: str) -> None:
    inst.define(name)
    config = tomllib.loads(inst.read(name, "config"))
    config["privileged"] = True
    inst.write(name, "config", tomli_w.dumps(config))


def started(inst: Instance, name: str) -> int:
    inst.write(name, "state", "start")
    wait_for(lambda: ":/#" in inst.read(name, "screen"), what="the shell prompt")
    return int(inst.read(name, "pid"))


def no_user_namespace(pid: int) -> None:
    assert os.readlink(f"/proc/{pid}/ns/user") == os.readlink("/proc/self/ns/user")
    uid_line = Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split("\n")[0]
    assert uid_line.split() == ["0", "0", "0", "0"]


def test_a_privileged_domain_lives_its_lifecycle(instance: Instance) -> None:
    privileged(instance, "p")
    assert instance.read("p", "idmap") == ""
    pid = started(instance, "p")
    no_user_namespace(pid)
    assert "Seccomp:\t2" in Path(f"/proc/{pid}/status").read_text()
    instance.write("p", "state", "restart")
    wait_for(lambda: instance.read("p", "state") == "running\n" and
             instance.read("p", "pid").strip() not in ("", str(pid)), what="the restart")
    no_user_namespace(int(instance.read("p", "pid")))
    instance.write("p", "state", "stop")
    wait_for(lambda: instance.read("p", "state") == "stopped\n", timeout=20, what="the stop")
    started(instance, "p")
    instance.write("p", "state", "kill")
    assert instance.read("p", "state") == "stopped\n"


def test_a_privileged_domains_console_screen_and_vnc(
        instance: Instance, vncdotool_api: Any, tmp_path: Path) -> None:
    privileged(instance, "p")
    started(instance, "p")
    token = secrets.token_hex(4)
    instance.write("p", "console", f"echo priv-{token}\n")
    wait_for(lambda: f"\npriv-{token}\n" in "\n" + instance.read("p", "screen"),
             what="the output on the screen")
    frame = capture(vncdotool_api, vnc_port(instance, "p"), tmp_path / "p.png")
    assert frame.shape == (25 * 16, 80 * 8, 3)
    assert frame.any(), "the VNC frame is blank"


def test_a_privileged_domains_live_mounts(instance: Instance, tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "hello").write_text("hello\n")
    os.chown(source / "hello", 0, 0)
    privileged(instance, "p")
    started(instance, "p")
    instance.write("p", "mounts", f"add {source} /data ro")
    r = subprocess.run([*VZFS, "enter", "--mount", str(instance.mnt), "p", "--", "sh", "-c",
                        "stat -c %u /data/hello; cat /data/hello; echo x > /data/x"],
                       capture_output=True, text=True, timeout=30)
    # No map: the host's root owns the file inside too; `ro` holds.
    assert r.stdout == "0\nhello\n" and "Read-only" in r.stderr, (r.stdout, r.stderr)
    instance.write("p", "mounts", "del /data")
    assert instance.read("p", "mounts") == ""


def test_a_privileged_domain_suspends_and_resumes(instance: Instance) -> None:
    privileged(instance, "p")
    started(instance, "p")
    instance.write("p", "console", COUNTER)
    wait_for(lambda: (rootfs(instance, "p") / "counter").exists() and counter(instance, "p") > 2,
             what="the counter counting")
    instance.write("p", "state", "suspend")
    at_suspend = counter(instance, "p")
    instance.write("p", "state", "resume")
    wait_for(lambda: counter(instance, "p") > at_suspend + 2, what="the counter going on")
    pid = int(instance.read("p", "pid"))
    no_user_namespace(pid)
    assert "Seccomp:\t2" in Path(f"/proc/{pid}/status").read_text()

"""What the zygote and its spare do ahead of a start, so that `echo start` does not pay
for it: cffi's call objects built once in the zygote (syscalls.warm), and a blank
console made by the spare that the controller takes when it fits. Real kernel, no mocks."""

import dataclasses
import errno
import os
import socket
from pathlib import Path

import pytest

from vzfs.controller import console, controller
from vzfs.kernel import cgroups, syscalls
from vzfs.model import config as configmod
from vzfs.terminal import make_terminal
from vzfs.terminal.emulator import Terminal
from vzfs.terminal.pyte_backend import PyteTerminal

pytestmark = pytest.mark.system     # the real kernel's mount table, cgroups, a daemon
ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (cgroup layout, mounts)")


def test_warm_changes_nothing() -> None:
    mounts = Path("/proc/self/mountinfo").read_text()
    fds = sorted(os.listdir("/proc/self/fd"))
    cwd = os.getcwd()
    hostname = socket.gethostname()
    syscalls.warm()
    syscalls.warm()         # and twice is as harmless
    assert Path("/proc/self/mountinfo").read_text() == mounts
    assert sorted(os.listdir("/proc/self/fd")) == fds
    assert os.getcwd() == cwd
    assert socket.gethostname() == hostname


def test_the_wrappers_still_report_errors_after_warm() -> None:
    syscalls.warm()
    with pytest.raises(OSError) as info:
        syscalls.pivot_root("/nonexistent-vzfs-test", "/nonexistent-vzfs-test")
    assert info.value.errno == errno.ENOENT
    assert "pivot_root" in str(info.value)
    with pytest.raises(OSError) as info:
        syscalls.open_tree(-1, "relative", 0)
    assert info.value.errno == errno.EBADF
    with pytest.raises(OSError) as info:
        syscalls.umount("/nonexistent-vzfs-test")
    assert info.value.errno == errno.ENOENT


def _request(tmp_path: Path, emulator: str, terminal: object) -> dict[str, object]:
    name = "web1"
    (tmp_path / "domains" / name).mkdir(parents=True)
    cfg = dataclasses.replace(configmod.default(name, 101), console=configmod.Console(emulator))
    return {"name": name, "state_dir": str(tmp_path), "config": configmod.to_dict(cfg),
            "rootfs": str(tmp_path / "root"), "layout": dataclasses.asdict(cgroups.detect()),
            "cgroup": "vzfs/test/101", "terminal": terminal}


@ROOT
def test_the_controller_takes_the_spares_console_when_it_fits(tmp_path: Path) -> None:
    ready = make_terminal(configmod.Console().emulator, console.DEFAULT_COLUMNS,
                          console.DEFAULT_LINES)
    ctl = controller.Controller(_request(tmp_path, "fast", ready))
    try:
        assert ctl.console.term is ready
    finally:
        os.close(ctl.dir_fd)


@ROOT
def test_a_domain_asking_for_pyte_gets_pyte_not_the_spares_console(tmp_path: Path) -> None:
    ready = make_terminal("fast", console.DEFAULT_COLUMNS, console.DEFAULT_LINES)
    ctl = controller.Controller(_request(tmp_path, "pyte", ready))
    try:
        assert isinstance(ctl.console.term, PyteTerminal)
        assert (ctl.console.term.columns, ctl.console.term.lines) == \
            (console.DEFAULT_COLUMNS, console.DEFAULT_LINES)
    finally:
        os.close(ctl.dir_fd)


@ROOT
def test_a_console_of_another_size_is_not_taken(tmp_path: Path) -> None:
    ready = make_terminal("fast", 132, 43)
    ctl = controller.Controller(_request(tmp_path, "fast", ready))
    try:
        assert ctl.console.term is not ready
        assert isinstance(ctl.console.term, Terminal)
        assert (ctl.console.term.columns, ctl.console.term.lines) == \
            (console.DEFAULT_COLUMNS, console.DEFAULT_LINES)
    finally:
        os.close(ctl.dir_fd)


def test_the_rehearsal_leaves_nothing_behind(tmp_path: Path) -> None:
    fds = sorted(os.listdir("/proc/self/fd"))
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        controller.rehearse()
        assert list(tmp_path.iterdir()) == []
    finally:
        os.chdir(cwd)
    assert sorted(os.listdir("/proc/self/fd")) == fds


def _processes_naming(text: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    found.append(int(entry))
        except OSError:
            pass
    return found


def test_the_spares_prepared_inits_end_with_the_daemon(tmp_path: Path) -> None:
    """A spare holds a prepared init of each kind (a builder and an init child each):
    when the daemon goes, every one of them goes too — none keeps another's pipe open."""
    from tests.system import Instance, system_ready, wait_for
    if system_ready():
        pytest.skip(system_ready() or "")
    inst = Instance(tmp_path / "a")
    inst.mount()
    try:
        mnt = str(inst.mnt)
        wait_for(lambda: len(_processes_naming(f"spare {mnt}")) >= 5, timeout=20,
                 what="a spare with both kinds prepared (5 processes)")
        inst.define("d")
        inst.write("d", "state", "start")       # the spare becomes its controller
        inst.write("d", "state", "kill")
        assert inst.read("d", "state") == "stopped\n"
    finally:
        inst.umount()
    wait_for(lambda: _processes_naming(f" {mnt}") == [], timeout=20,
             what="no process of the instance left")

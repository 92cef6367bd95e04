"""What the zygote and its spare do ahead of a start, so that `echo start` does not pay
for it: cffi's call objects built once in the zygote (syscalls.warm), and a blank
console made by the spare that the controller takes when it fits. Real kernel, no mocks."""

import dataclasses
import errno
import os
import socket
from pathlib import Path

import pytest

from vzfs import config as configmod
from vzfs.controller import controller
from vzfs.kernel import cgroups, syscalls
from vzfs.terminal import make_terminal
from vzfs.terminal.emulator import Terminal
from vzfs.terminal.pyte_backend import PyteTerminal

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
    ready = make_terminal(configmod.Console().emulator, controller.DEFAULT_COLUMNS,
                          controller.DEFAULT_LINES)
    ctl = controller.Controller(_request(tmp_path, "fast", ready))
    try:
        assert ctl.term is ready
    finally:
        os.close(ctl.dir_fd)


@ROOT
def test_a_domain_asking_for_pyte_gets_pyte_not_the_spares_console(tmp_path: Path) -> None:
    ready = make_terminal("fast", controller.DEFAULT_COLUMNS, controller.DEFAULT_LINES)
    ctl = controller.Controller(_request(tmp_path, "pyte", ready))
    try:
        assert isinstance(ctl.term, PyteTerminal)
        assert (ctl.term.columns, ctl.term.lines) == (controller.DEFAULT_COLUMNS,
                                                      controller.DEFAULT_LINES)
    finally:
        os.close(ctl.dir_fd)


@ROOT
def test_a_console_of_another_size_is_not_taken(tmp_path: Path) -> None:
    ready = make_terminal("fast", 132, 43)
    ctl = controller.Controller(_request(tmp_path, "fast", ready))
    try:
        assert ctl.term is not ready
        assert isinstance(ctl.term, Terminal)
        assert (ctl.term.columns, ctl.term.lines) == (controller.DEFAULT_COLUMNS,
                                                      controller.DEFAULT_LINES)
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

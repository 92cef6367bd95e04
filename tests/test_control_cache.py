"""state, pid and id are read from the kernel's page cache (no READ request per
open), and the daemon drops that copy at every change: a read never shows old content."""

import errno
import mmap
import os
import signal
from pathlib import Path

import pytest

from tests.system import QUICK_INIT, Instance, wait_for


def pread(fd: int) -> str:
    return os.pread(fd, 4096, 0).decode()


def mappable(path: Path) -> bool:
    """Whether *path* can be mmap'ed: FUSE refuses it for direct_io files (ENODEV)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.read(fd, 4096)
        try:
            with mmap.mmap(fd, os.fstat(fd).st_size, prot=mmap.PROT_READ):
                return True
        except OSError as exc:
            assert exc.errno == errno.ENODEV, exc
            return False
    finally:
        os.close(fd)


def test_only_the_event_driven_files_are_cached(instance: Instance) -> None:
    d = instance.quick("web1")
    for name in ("state", "id"):        # (pid is empty: nothing to map)
        assert mappable(d / name), name
    # Content that changes without an event the daemon sees stays direct.
    for name in ("stats", "screen", "config", "error"):
        assert not mappable(d / name), name
    # A writer's open is direct, so a write never goes through the page cache.
    fd = os.open(d / "state", os.O_RDWR)
    try:
        with pytest.raises(OSError) as exc:
            mmap.mmap(fd, os.fstat(fd).st_size, prot=mmap.PROT_READ)
        assert exc.value.errno == errno.ENODEV
    finally:
        os.close(fd)


def test_cached_files_have_their_exact_size(instance: Instance) -> None:
    # The kernel reads a cached file up to its size: 4096 would leave the zeros
    # after a short READ in the page cache, and a read would return them.
    d = instance.quick("web1")
    fd = os.open(d / "state", os.O_RDONLY)
    try:
        for _ in range(3):
            assert os.read(fd, 65536) == b"stopped\n"
            assert os.fstat(fd).st_size == len(b"stopped\n")
            os.lseek(fd, 0, os.SEEK_SET)
        (d / "state").write_text("start")
        assert os.fstat(fd).st_size == len(b"running\n")
        assert os.read(fd, 65536) == b"running\n"
        (d / "state").write_text("kill")
    finally:
        os.close(fd)


def test_cached_files_show_every_change(instance: Instance) -> None:
    d = instance.quick("web1")
    # Open readers keep the inodes (and any cached pages) alive throughout.
    state_fd = os.open(d / "state", os.O_RDONLY)
    pid_fd = os.open(d / "pid", os.O_RDONLY)
    id_fd = os.open(d / "id", os.O_RDONLY)
    try:
        for _ in range(3):
            assert pread(state_fd) == (d / "state").read_text() == "stopped\n"
            assert pread(pid_fd) == ""
        for _ in range(10):
            # A write returns once its change is visible to every reader.
            (d / "state").write_text("start")
            assert pread(state_fd) == (d / "state").read_text() == "running\n"
            pid = int(pread(pid_fd))
            assert (d / "pid").read_text() == f"{pid}\n"
            (d / "state").write_text("kill")
            assert pread(state_fd) == (d / "state").read_text() == "stopped\n"
            assert pread(pid_fd) == (d / "pid").read_text() == ""

        # A change the daemon only learns about (the init dies) shows too.
        (d / "state").write_text("start")
        assert pread(state_fd) == "running\n"
        os.kill(int(pread(pid_fd)), signal.SIGKILL)
        wait_for(lambda: pread(state_fd) == "crashed\n", what="crashed state")
        assert (d / "state").read_text() == "crashed\n"
        assert pread(pid_fd) == ""

        old_id = int(pread(id_fd))
        init = ", ".join(f'"{a}"' for a in QUICK_INIT)
        (d / "config").write_text(f"id = {old_id + 50}\ninit = [{init}]\n")
        assert int(pread(id_fd)) == int((d / "id").read_text()) == old_id + 50
    finally:
        for fd in (state_fd, pid_fd, id_fd):
            os.close(fd)


"""Ordinary file clients on control files: seeks to 0 and to where a reader is, pread at
its position, sshfs (sftp-server) writing and reading `console`, and the bound on a
`console` write that the domain does not read (issue 16)."""

import errno
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import sshd as sshdmod
from tests.system import Instance, system_ready, wait_for


def test_seek_to_zero_and_to_here_and_pread(instance: Instance) -> None:
    d = instance.quick("web1")
    instance.write("web1", "state", "start")
    wait_for(lambda: "init-up" in instance.read("web1", "screen"), what="init's line")
    for path in (d / "console", instance.mnt / "events", d / "state", d / "events",
                 d / "config", d / "vnc"):
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            assert os.lseek(fd, 0, os.SEEK_SET) == 0, path
            try:
                first = os.read(fd, 64)
            except BlockingIOError:
                first = b""
            here = os.lseek(fd, 0, os.SEEK_CUR)
            assert here == len(first), path
            assert os.lseek(fd, here, os.SEEK_SET) == here, path
            # back to 0: the same bytes again (a stream: what it showed from its open)
            assert os.lseek(fd, 0, os.SEEK_SET) == 0
            if first:
                assert os.pread(fd, len(first), 0) == first, path
            os.fstat(fd)
        finally:
            os.close(fd)
    # the console stream reads on from where a pread at its position stands
    fd = os.open(d / "console", os.O_RDONLY | os.O_NONBLOCK)
    try:
        data = os.read(fd, 1 << 20)
        assert b"init-up" in data
        instance.write("web1", "console", "echo second-line\n")
        wait_for(lambda: "second-line" in instance.read("web1", "screen"), what="the echo")
        time.sleep(0.2)
        more = os.pread(fd, 1 << 20, len(data))
        assert b"second-line" in more
    finally:
        os.close(fd)


@pytest.fixture
def sshfs_mount(instance: Instance, tmp_path: Path) -> Iterator[Path]:
    reason = system_ready() or sshdmod.available()
    if reason:
        pytest.skip(reason)
    if not os.path.exists(sshdmod.SFTP_SERVER) or not shutil_which("sshfs"):
        pytest.skip("needs sshfs and openssh's sftp-server (./bootstrap installs them)")
    server = sshdmod.Sshd(tmp_path / "sshd").start()
    mnt = tmp_path / "sshfs"
    mnt.mkdir()
    try:
        subprocess.run(["sshfs", "-F", str(server.client_config),
                        f"{sshdmod.ALIAS}:{instance.mnt}", str(mnt)], check=True, timeout=30)
        try:
            yield mnt
        finally:
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True,
                           check=False)
    finally:
        server.stop()


def shutil_which(name: str) -> str | None:
    import shutil
    return shutil.which(name)


def test_sshfs_writes_and_reads_the_console(instance: Instance, sshfs_mount: Path) -> None:
    instance.quick("web1")
    instance.write("web1", "state", "start")
    wait_for(lambda: "init-up" in instance.read("web1", "screen"), what="init's line")
    remote = sshfs_mount / "domains" / "web1"
    assert (remote / "state").read_text() == "running\n"
    # sftp-server opens the file, seeks to 0, writes: the bytes are typed
    r = subprocess.run(["bash", "-c", f"echo echo over-sshfs-$((6*7)) > {remote}/console"],
                       capture_output=True, text=True, timeout=30, check=False)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: "over-sshfs-42" in instance.read("web1", "screen"), what="typed input")
    # and a read gives the console's bytes, not 0 of them
    r = subprocess.run(["head", "-c", "4096", f"{remote}/console"], capture_output=True,
                       timeout=30, check=False)
    assert b"init-up" in r.stdout, r


def test_a_console_write_nobody_reads_is_bounded(instance: Instance) -> None:
    # init puts the console in raw mode and never reads it: the pty fills, then the
    # controller's socket, then the daemon's queue.
    instance.define("deaf", 'init = ["/bin/sh", "-c", "stty raw -echo; echo deaf-up; '
                            'trap \\"exit 0\\" PWR TERM; sleep 100000 & wait"]\nstop_timeout = 5\n')
    instance.write("deaf", "state", "start")
    wait_for(lambda: "deaf-up" in instance.read("deaf", "screen"), what="init's line")
    fd = os.open(instance.dom("deaf") / "console", os.O_WRONLY)
    try:
        t = time.monotonic()
        try:
            n = os.write(fd, b"x" * (100 << 20))
        except OSError as exc:
            assert exc.errno == errno.EAGAIN
            n = 0
        took = time.monotonic() - t
        assert n < (4 << 20), n            # a short write at most: the rest was not taken
        assert took < 30, took
        # the next write finds no room either: EAGAIN after the wait
        with pytest.raises(OSError) as info:
            os.write(fd, b"y" * (1 << 20))
        assert info.value.errno == errno.EAGAIN
        assert "bytes waiting for it" in instance.read("deaf", "error")
    finally:
        os.close(fd)
    # O_NONBLOCK: EAGAIN at once
    fd = os.open(instance.dom("deaf") / "console", os.O_WRONLY | os.O_NONBLOCK)
    try:
        t = time.monotonic()
        with pytest.raises(OSError) as info:
            os.write(fd, b"z" * (1 << 20))
        assert info.value.errno == errno.EAGAIN
        assert time.monotonic() - t < 2
    finally:
        os.close(fd)
    instance.write("deaf", "state", "kill")

"""What the zygote does ahead of a start, so that `echo start` does not pay for it:
cffi's call objects built once in the zygote (syscalls.warm). Real kernel, no mocks."""

import errno
import os
import socket
from pathlib import Path

import pytest

from vzfs.kernel import syscalls

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

"""The pipes between a controller and the processes that build its container, through real
pipes: the spec line (split over reads, or abandoned), and the report ("pid N", "E errno
step: message", EOF once init has exec'd)."""

import errno
import json
import os

import pytest

from vzfs.controller import container


def _pipe_with(data: bytes, close: bool = True) -> int:
    r, w = os.pipe()
    os.write(w, data)
    if close:
        os.close(w)
    return r


def test_spec_line_and_abandon() -> None:
    r = _pipe_with(json.dumps({"rootfs": "/r"}).encode() + b"\n")
    assert container._read_spec(r) == {"rootfs": "/r"}
    os.close(r)
    r = _pipe_with(b"")
    assert container._read_spec(r) is None           # closed unread: let go
    os.close(r)
    r = _pipe_with(b'{"rootfs": "/r"')               # closed mid-line: let go too
    assert container._read_spec(r) is None
    os.close(r)


def test_spec_split_over_reads() -> None:
    r, w = os.pipe()
    os.write(w, b'{"init": ["/sbin/')
    pid = os.fork()
    if pid == 0:
        os.write(w, b'init"]}\n')
        os._exit(0)
    os.close(w)
    spec = container._read_spec(r)
    os.waitpid(pid, 0)
    os.close(r)
    assert spec == {"init": ["/sbin/init"]}


def test_report_pid_then_eof_is_an_exec() -> None:
    report = container._Report(_pipe_with(b"pid 4242\n"))
    assert report.wait_pid() == 4242
    report.wait_exec()                                # EOF: init runs
    os.close(report.fd)


def test_report_failure_before_the_pid_carries_errno_and_step() -> None:
    report = container._Report(_pipe_with(b"E 2 populate /dev: No such file or directory\n"))
    with pytest.raises(OSError) as info:
        report.wait_pid()
    assert info.value.errno == errno.ENOENT
    assert info.value.strerror == "populate /dev: No such file or directory"
    os.close(report.fd)


def test_report_failure_after_the_pid_and_an_unended_line() -> None:
    report = container._Report(_pipe_with(b"pid 7\nE 13 exec init /sbin/init: Permission denied"))
    assert report.wait_pid() == 7
    with pytest.raises(OSError) as info:
        report.wait_exec()
    assert (info.value.errno, info.value.strerror) == (errno.EACCES,
                                                       "exec init /sbin/init: Permission denied")
    os.close(report.fd)


def test_report_silence_is_an_error() -> None:
    report = container._Report(_pipe_with(b""))
    with pytest.raises(OSError) as info:
        report.wait_pid()
    assert info.value.errno == errno.EIO
    os.close(report.fd)


def test_a_garbled_errno_is_eio() -> None:
    report = container._Report(_pipe_with(b"pid 7\nE x what: words\n"))
    report.wait_pid()
    with pytest.raises(OSError) as info:
        report.wait_exec()
    assert info.value.errno == errno.EIO
    os.close(report.fd)

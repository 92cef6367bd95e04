"""The spec handed to a prepared init, through a real pipe: the line and the "go" may coalesce."""

import json
import os

from vzfs.controller import container


def _pipe_with(data: bytes, close: bool = True) -> int:
    r, w = os.pipe()
    os.write(w, data)
    if close:
        os.close(w)
    return r


def test_spec_and_go_in_one_read() -> None:
    r = _pipe_with(json.dumps({"rootfs": "/r"}).encode() + b"\n" + container.GO)
    spec, early = container._read_spec(r)
    assert spec == {"rootfs": "/r"}
    assert early == container.GO
    assert container._wait_go(r, early)


def test_spec_then_go_later_and_abandoned() -> None:
    r = _pipe_with(json.dumps({"a": 1}).encode() + b"\n")
    spec, early = container._read_spec(r)
    assert spec == {"a": 1} and early == b""
    assert not container._wait_go(r, early)        # closed without "go": let go
    r = _pipe_with(b"")
    assert container._read_spec(r) == (None, b"")
    os.close(r)


def test_spec_split_over_reads() -> None:
    r, w = os.pipe()
    os.write(w, b'{"init": ["/sbin/')
    pid = os.fork()
    if pid == 0:
        os.write(w, b'init"]}\n' + container.GO)
        os._exit(0)
    os.close(w)
    spec, early = container._read_spec(r)
    os.waitpid(pid, 0)
    assert spec == {"init": ["/sbin/init"]}
    assert container._wait_go(r, early)

"""The controller protocol decoder, fed real bytes whole, split and with trailing bytes."""

from errno import EBUSY, EINVAL, EIO, ENOENT

import pytest

from vzfs.base.errors import VzfsError
from vzfs.wire.framing import MAX_LINE, Decoder, ProtocolError, encode, reply_failure

MESSAGES = [{"id": 1, "op": "status"}, {"event": "exited", "state": "stopped", "reason": "x\ny"},
            {"id": 2, "ok": False, "errno": 16, "error": "busy ü"}]


def test_whole_and_byte_by_byte() -> None:
    data = b"".join(encode(m) for m in MESSAGES)
    assert list(Decoder().feed(data)) == MESSAGES
    d = Decoder()
    out = []
    for i in range(len(data)):
        out.extend(d.feed(data[i:i + 1]))
    assert out == MESSAGES


def test_trailing_partial_message_waits() -> None:
    d = Decoder()
    data = encode(MESSAGES[0]) + encode(MESSAGES[1])[:5]
    assert list(d.feed(data)) == [MESSAGES[0]]
    assert list(d.feed(encode(MESSAGES[1])[5:])) == [MESSAGES[1]]


def test_stops_after_first_leaves_rest_buffered() -> None:
    d = Decoder()
    first = next(iter(d.feed(b"".join(encode(m) for m in MESSAGES))))
    assert first == MESSAGES[0]
    assert list(d.feed(b"")) == MESSAGES[1:]


@pytest.mark.parametrize("bad", [b"nope\n", b"[1,2]\n", b"{\"a\":\n"])
def test_garbage_is_a_protocol_error(bad: bytes) -> None:
    with pytest.raises(ProtocolError):
        list(Decoder().feed(bad))


def test_lines_are_bounded() -> None:
    with pytest.raises(ProtocolError):
        list(Decoder().feed(b"x" * (MAX_LINE + 1)))


def test_a_failed_request_is_replied_to_by_its_kind() -> None:
    assert reply_failure(3, VzfsError(EBUSY, "cannot x: busy")) == \
        {"id": 3, "ok": False, "errno": EBUSY, "error": "cannot x: busy"}
    assert reply_failure(3, FileNotFoundError(ENOENT, "No such file"))["errno"] == ENOENT
    assert reply_failure(3, KeyError("name"))["errno"] == EINVAL
    bug = reply_failure(3, RuntimeError("a bug"))
    assert bug["errno"] == EIO and "RuntimeError: a bug" in bug["error"]

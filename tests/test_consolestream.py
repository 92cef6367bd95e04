"""The console ring and framing, with real bytes: whole, split, trailing, and bounds."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vzfs.wire.consolestream import (
    MAX_FRAME,
    MAX_JSON_FRAME,
    FrameDecoder,
    FrameError,
    Ring,
    data_frame,
    input_frame,
    json_frame,
    parse_json_frame,
    skipped_marker,
)


def test_ring_keeps_the_tail_with_absolute_offsets() -> None:
    r = Ring(10)
    r.append(b"0123456")
    assert (r.start, r.end) == (0, 7)
    r.append(b"789ab")
    assert (r.start, r.end) == (2, 12)
    assert r.read(0, 100) == (b"23456789ab", 12, 2)
    assert r.read(5, 3) == (b"567", 8, 0)
    assert r.read(12, 5) == (b"", 12, 0)
    r.append(b"x" * 25)
    assert (r.start, r.end, bytes(r.buf)) == (27, 37, b"x" * 10)


@given(st.lists(st.binary(max_size=40), max_size=30), st.integers(1, 64))
def test_ring_equals_the_tail_of_everything(chunks: list[bytes], cap: int) -> None:
    r = Ring(cap)
    everything = b""
    for c in chunks:
        r.append(c)
        everything += c
        assert bytes(r.buf) == everything[-cap:] if everything else bytes(r.buf) == b""
        assert r.end == len(everything)
        data, cursor, skipped = r.read(0, 1 << 20)
        assert skipped == max(0, len(everything) - cap)
        assert data == everything[skipped:] and cursor == len(everything)


def test_jump_leaves_a_hole_readers_are_told_about() -> None:
    r = Ring(10)
    r.append(b"abc")
    r.jump(100)
    r.append(b"xyz")
    assert (r.start, r.end) == (100, 103)
    assert r.read(1, 10) == (b"xyz", 103, 99)
    r.jump(50)                      # never backwards
    assert (r.start, r.end) == (100, 103)


def test_marker_says_how_much() -> None:
    assert skipped_marker(1234) == b"\r\n[vzfs: 1234 bytes of console output skipped]\r\n"


def test_frames_whole_byte_by_byte_and_trailing() -> None:
    stream = data_frame(7, b"hello") + input_frame(b"ls\n") + data_frame(1 << 40, b"") + b"D\x00"
    expected = [("D", 7, b"hello"), ("I", 0, b"ls\n"), ("D", 1 << 40, b"")]
    assert list(FrameDecoder().feed(stream)) == expected
    d = FrameDecoder()
    out = []
    for i in range(len(stream)):
        out.extend(d.feed(stream[i:i + 1]))
    assert out == expected
    assert bytes(d.buf) == b"D\x00"


def test_bad_frames() -> None:
    with pytest.raises(FrameError):
        list(FrameDecoder().feed(b"X123"))
    with pytest.raises(FrameError):
        list(FrameDecoder().feed(input_frame(b"")[:1] + (MAX_FRAME + 1).to_bytes(4, "big")))


def test_json_frames_between_data_frames() -> None:
    snapshot = {"op": "snapshot", "offset": 12, "lines": [[" ", 7]] * 3}
    stream = data_frame(0, b"ab") + json_frame(snapshot) + data_frame(2, b"c")
    frames = list(FrameDecoder().feed(stream))
    assert [(k, o) for k, o, _ in frames] == [("D", 0), ("J", 0), ("D", 2)]
    assert parse_json_frame(frames[1][2]) == snapshot
    # A JSON frame may be larger than a data frame (a snapshot), but not without end.
    big = json_frame({"pad": "x" * (MAX_FRAME + 10)})
    assert list(FrameDecoder().feed(big))[0][0] == "J"
    with pytest.raises(FrameError):
        list(FrameDecoder().feed(b"J" + (MAX_JSON_FRAME + 1).to_bytes(4, "big")))
    for bad in (b"[1]", b"{nope"):
        with pytest.raises(FrameError):
            parse_json_frame(bad)

"""The console byte stream: a bounded ring with absolute offsets, and its wire framing (pure).

The controller keeps every byte the container wrote to its console in a Ring;
the daemon keeps its own Ring fed from the controller's, and each reader of the
`console` file has a cursor into it. Offsets are absolute (they count every byte
ever written), so a reader that fell behind the ring's start knows exactly how
much it missed.

Framing on a console connection (after the JSON `{"op": "console"}` request):
controller → daemon ``b"D" + offset:u64 + length:u32 + bytes``;
daemon → controller ``b"I" + length:u32 + bytes`` (typed input).

The controller's link to its VNC server uses the same frames plus
``b"J" + length:u32 + JSON`` for messages in both directions (a snapshot of the
emulator, a resize request, the addresses the server listens on), so that a
message takes its place between data frames.
"""

import json
import struct
from collections.abc import Iterator
from typing import Any

DATA = b"D"
INPUT = b"I"
JSON = b"J"
_DATA_HEAD = struct.Struct(">cQI")
_INPUT_HEAD = struct.Struct(">cI")
MAX_FRAME = 1 << 20
MAX_JSON_FRAME = 64 << 20     # an emulator snapshot of a large terminal


class FrameError(Exception):
    pass


class Ring:
    """The last *capacity* bytes of a stream, addressed by absolute offset."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.buf = bytearray()
        self.start = 0

    @property
    def end(self) -> int:
        return self.start + len(self.buf)

    def append(self, data: bytes) -> None:
        if len(data) >= self.capacity:
            self.start += len(self.buf) + len(data) - self.capacity
            self.buf = bytearray(data[-self.capacity:])
            return
        self.buf += data
        excess = len(self.buf) - self.capacity
        if excess > 0:
            del self.buf[:excess]
            self.start += excess

    def jump(self, offset: int) -> None:
        """Continue the stream at *offset* (> end): the bytes in between are lost."""
        if offset > self.end:
            self.buf = bytearray()
            self.start = offset

    def read(self, cursor: int, size: int) -> tuple[bytes, int, int]:
        """(data, new cursor, bytes skipped because they left the ring)."""
        skipped = 0
        if cursor < self.start:
            skipped = self.start - cursor
            cursor = self.start
        pos = cursor - self.start
        data = bytes(self.buf[pos:pos + size])
        return data, cursor + len(data), skipped


def skipped_marker(count: int) -> bytes:
    return f"\r\n[vzfs: {count} bytes of console output skipped]\r\n".encode()


def data_frame(offset: int, data: bytes) -> bytes:
    return _DATA_HEAD.pack(DATA, offset, len(data)) + data


def input_frame(data: bytes) -> bytes:
    return _INPUT_HEAD.pack(INPUT, len(data)) + data


def json_frame(msg: dict[str, Any]) -> bytes:
    body = json.dumps(msg, separators=(",", ":")).encode()
    return _INPUT_HEAD.pack(JSON, len(body)) + body


def parse_json_frame(payload: bytes) -> dict[str, Any]:
    try:
        msg = json.loads(payload)
    except ValueError as exc:
        raise FrameError(f"J frame is not JSON: {exc}") from exc
    if not isinstance(msg, dict):
        raise FrameError("J frame is not a JSON object")
    return msg


class FrameDecoder:
    """Feed bytes; get ("D", offset, data), ("I", 0, data) or ("J", 0, json) tuples."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes | bytearray) -> Iterator[tuple[str, int, bytes]]:
        self.buf += data
        while self.buf:
            kind = bytes(self.buf[:1])
            if kind == DATA:
                head = _DATA_HEAD
            elif kind in (INPUT, JSON):
                head = _INPUT_HEAD
            else:
                raise FrameError(f"unknown frame type {kind!r}")
            if len(self.buf) < head.size:
                return
            fields = head.unpack_from(self.buf)
            length = fields[-1]
            limit = MAX_JSON_FRAME if kind == JSON else MAX_FRAME
            if length > limit:
                raise FrameError(f"frame of {length} bytes is over the {limit} limit")
            if len(self.buf) < head.size + length:
                return
            payload = bytes(self.buf[head.size:head.size + length])
            del self.buf[:head.size + length]
            yield (kind.decode(), fields[1] if kind == DATA else 0, payload)

"""The daemon ⇄ controller protocol: newline-delimited JSON messages, sans I/O.

Requests carry an ``id`` and an ``op``; replies carry the same ``id`` and either
``ok: true`` plus fields, or ``ok: false`` with ``errno`` and ``error`` (a
sentence). Messages without an ``id`` are events (``event: exited`` …). Lines
are bounded so a confused peer cannot make the other side buffer without end.
"""

import json
from collections.abc import Iterator
from errno import EINVAL, EIO
from typing import Any

from ..base.errors import VzfsError

MAX_LINE = 1 << 20

Message = dict[str, Any]


class ProtocolError(Exception):
    pass


def encode(msg: Message) -> bytes:
    return json.dumps(msg, separators=(",", ":")).encode() + b"\n"


class Decoder:
    """Feed bytes in, get whole messages out."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes | bytearray) -> Iterator[Message]:
        self._buf += data
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                if len(self._buf) > MAX_LINE:
                    raise ProtocolError(f"message longer than {MAX_LINE} bytes")
                return
            line = bytes(self._buf[:nl])
            del self._buf[:nl + 1]
            if not line.strip():
                continue
            try:
                msg = json.loads(line)
            except ValueError as exc:
                raise ProtocolError(f"not JSON: {exc}") from exc
            if not isinstance(msg, dict):
                raise ProtocolError("message is not an object")
            yield msg

    def take_rest(self) -> bytes:
        """Bytes received after the last message (a connection switching protocols)."""
        rest = bytes(self._buf)
        self._buf.clear()
        return rest


def reply_ok(req_id: Any, **fields: Any) -> Message:
    return {"id": req_id, "ok": True, **fields}


def reply_error(req_id: Any, errno: int, sentence: str) -> Message:
    return {"id": req_id, "ok": False, "errno": errno, "error": sentence}


# What a request may fail with that is no bug: a refusal, the kernel's, a malformed request.
EXPECTED_FAILURES = (VzfsError, OSError, KeyError, TypeError, ValueError)


def reply_failure(req_id: Any, exc: Exception) -> Message:
    """The error reply to a request whose handler raised *exc*: a serving loop's one
    boundary (the daemon's migration socket, a migration session's requests). A
    refusal in its own words, a kernel error with its errno, a malformed request
    EINVAL, anything else (a bug) EIO: it costs that request, never the server."""
    if isinstance(exc, VzfsError):
        return reply_error(req_id, exc.errno, exc.sentence)
    if isinstance(exc, OSError):
        return reply_error(req_id, exc.errno or EIO, exc.strerror or str(exc))
    if isinstance(exc, (KeyError, TypeError, ValueError)):
        return reply_error(req_id, EINVAL, f"bad request: {exc!r}")
    return reply_error(req_id, EIO, f"the request failed ({type(exc).__name__}: {exc})"[:400])

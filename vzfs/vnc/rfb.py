"""The server side of one RFB connection as a sans-I/O state machine: bytes in, events and bytes out.

Theory of operation
-------------------
Modelled on h11. The shell owns the socket and does four things:

* ``receive_data(data)`` with whatever it read (``b""`` on EOF);
* ``next_event()`` until it returns ``NEED_DATA`` (or ``CLOSED``), acting on each event;
* ``data_to_send()`` after every such round, writing what the protocol itself must
  answer (handshake, SecurityResult, SetColourMapEntries, Extended Clipboard replies);
* the ``send_*`` methods, which return the bytes of one server message to write.

The handshake (rfbproto §Handshaking Messages) walks the table ``_TRANSITIONS``
below; in NORMAL every client message becomes one event. A malformed or hostile
byte stream raises ``ProtocolError`` (the state becomes CLOSED): the shell closes
the connection. Misuse by the shell raises ``LocalProtocolError``.

Two events need the shell before the protocol can go on:

* ``AuthFailed`` — the failure result is already in ``data_to_send()``; the shell
  waits ``AuthThrottle.record_failure(...)`` seconds, writes it, and closes.
* ``ClientInitDone`` — the shell answers with ``send_server_init(width, height, name)``.

Updates follow the pull model (rfbproto §FramebufferUpdateRequest): the shell tracks
dirty regions per client and answers a pending request with
``send_framebuffer_update(framebuffer, regions, copies)``. Pending pseudo-rectangles
(Cursor, DesktopName) ride along; a pending size change (``resize``,
``reply_set_desktop_size`` or the ExtendedDesktopSize rfbproto requires after a
non-incremental request) goes first in an update of its own, since rfbproto
§ExtendedDesktopSize forbids framebuffer data in the same update.
"""

from __future__ import annotations

import enum
import hmac
import os
import re
import struct
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Final, Sequence

import numpy as np
import numpy.typing as npt

from . import encodings as enc
from .encodings import Encoder, PixelFormat, Screen
from .errors import LocalProtocolError, ProtocolError

try:  # cryptography >= 43 moved the legacy ciphers here
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES  # type: ignore[no-redef]
from cryptography.hazmat.primitives.ciphers import Cipher, modes

__all__ = [
    "RFBServerConnection", "State", "AuthThrottle", "vnc_auth_response", "layout_status",
    "KeyEvent", "PointerEvent", "FramebufferUpdateRequest", "SetPixelFormat", "SetEncodings",
    "ClientCutText", "SetDesktopSize", "ClientInitDone", "AuthSucceeded", "AuthFailed",
    "NeedData", "NEED_DATA", "ConnectionClosed", "CLOSED_EVENT",
    "ProtocolError", "LocalProtocolError",
]

# Bounds on everything a client may make us hold (the issue: every length is bounded).
MAX_ENCODINGS: Final = 1024             # real clients send ~30
MAX_CUT_TEXT: Final = 1 << 20           # ClientCutText and Extended Clipboard text
MAX_HANDSHAKE_BUFFER: Final = 64 << 10  # unparsed bytes before NORMAL
MAX_BUFFER: Final = 4 << 20             # unparsed bytes in NORMAL

SECURITY_INVALID: Final = 0
SECURITY_NONE: Final = 1
SECURITY_VNC_AUTH: Final = 2

# Extended Clipboard pseudo-encoding (0xC0A1E5CE) flags.
CLIP_TEXT: Final = 1 << 0
CLIP_FORMAT_MASK: Final = 0xFFFF
CLIP_CAPS: Final = 1 << 24
CLIP_REQUEST: Final = 1 << 25
CLIP_PEEK: Final = 1 << 26
CLIP_NOTIFY: Final = 1 << 27
CLIP_PROVIDE: Final = 1 << 28
CLIP_SERVER_ACTIONS: Final = CLIP_CAPS | CLIP_REQUEST | CLIP_PEEK | CLIP_NOTIFY | CLIP_PROVIDE


# ---------------------------------------------------------------- events

@dataclass(frozen=True)
class KeyEvent:
    """rfbproto §KeyEvent."""
    down: bool
    keysym: int


@dataclass(frozen=True)
class PointerEvent:
    """rfbproto §PointerEvent: buttons 1..8 are bits 0..7 of ``button_mask``."""
    button_mask: int
    x: int
    y: int


@dataclass(frozen=True)
class FramebufferUpdateRequest:
    """rfbproto §FramebufferUpdateRequest, already cropped to the framebuffer."""
    incremental: bool
    x: int
    y: int
    width: int
    height: int


@dataclass(frozen=True)
class SetPixelFormat:
    """rfbproto §SetPixelFormat; the connection already encodes in the new format."""
    pixel_format: PixelFormat


@dataclass(frozen=True)
class SetEncodings:
    """rfbproto §SetEncodings; ``encoding`` is the one the connection chose from them."""
    encodings: tuple[int, ...]
    encoding: int


@dataclass(frozen=True)
class ClientCutText:
    """rfbproto §ClientCutText (Latin-1) or an Extended Clipboard provide (UTF-8), with \\n line ends."""
    text: str


@dataclass(frozen=True)
class SetDesktopSize:
    """rfbproto §SetDesktopSize: answer with ``reply_set_desktop_size``."""
    width: int
    height: int
    screens: tuple[Screen, ...]


@dataclass(frozen=True)
class ClientInitDone:
    """rfbproto §ClientInit: answer with ``send_server_init``."""
    shared: bool


@dataclass(frozen=True)
class AuthSucceeded:
    """VNC Authentication succeeded (for the throttle's bookkeeping)."""


@dataclass(frozen=True)
class AuthFailed:
    """Security failed; the failure result is queued in ``data_to_send()``; then close.

    ``refused`` is true when the connection was refused up front (``refuse_reason``):
    no password was tried, so the throttle should not count it.
    """
    reason: str
    refused: bool = False


@dataclass(frozen=True)
class NeedData:
    """No complete message is buffered: read more."""


@dataclass(frozen=True)
class ConnectionClosed:
    """The connection is over (EOF, refusal, failed authentication or protocol error)."""


NEED_DATA: Final = NeedData()
CLOSED_EVENT: Final = ConnectionClosed()

Event = (KeyEvent | PointerEvent | FramebufferUpdateRequest | SetPixelFormat | SetEncodings
         | ClientCutText | SetDesktopSize | ClientInitDone | AuthSucceeded | AuthFailed
         | NeedData | ConnectionClosed)


def layout_status(request: SetDesktopSize, max_width: int, max_height: int) -> int:
    """The rfbproto §ExtendedDesktopSize status a server should give this request.

    STATUS_INVALID_LAYOUT for no screen, an empty size or a screen outside the
    requested framebuffer; STATUS_OUT_OF_RESOURCES past the server's limits;
    STATUS_OK otherwise (the caller may still answer STATUS_PROHIBITED).
    """
    if not request.screens or request.width == 0 or request.height == 0:
        return enc.STATUS_INVALID_LAYOUT
    for s in request.screens:
        if s.width == 0 or s.height == 0 or s.x + s.width > request.width or s.y + s.height > request.height:
            return enc.STATUS_INVALID_LAYOUT
    if len({s.id for s in request.screens}) != len(request.screens):
        return enc.STATUS_INVALID_LAYOUT
    if request.width > max_width or request.height > max_height:
        return enc.STATUS_OUT_OF_RESOURCES
    return enc.STATUS_OK


# ---------------------------------------------------------------- states

class State(enum.Enum):
    PROTOCOL_VERSION = "awaiting the client's ProtocolVersion"
    SECURITY_TYPE = "awaiting the client's security-type (3.7, 3.8)"
    VNC_AUTH = "awaiting the VNC Authentication response"
    CLIENT_INIT = "awaiting ClientInit"
    SERVER_INIT = "awaiting the shell's ServerInit"
    NORMAL = "exchanging protocol messages"
    CLOSED = "closed"


S = State
#: (state, verb) → next state. Every verb not listed for a state is an error.
_TRANSITIONS: Final[dict[tuple[State, str], State]] = {
    (S.PROTOCOL_VERSION, "version 3.3, security None"): S.CLIENT_INIT,
    (S.PROTOCOL_VERSION, "version 3.3, security VNC Authentication"): S.VNC_AUTH,
    (S.PROTOCOL_VERSION, "version 3.7 or 3.8"): S.SECURITY_TYPE,
    (S.PROTOCOL_VERSION, "refused"): S.CLOSED,
    (S.SECURITY_TYPE, "security None"): S.CLIENT_INIT,
    (S.SECURITY_TYPE, "security VNC Authentication"): S.VNC_AUTH,
    (S.SECURITY_TYPE, "security type not offered"): S.CLOSED,
    (S.VNC_AUTH, "response right"): S.CLIENT_INIT,
    (S.VNC_AUTH, "response wrong"): S.CLOSED,
    (S.CLIENT_INIT, "ClientInit"): S.SERVER_INIT,
    (S.SERVER_INIT, "ServerInit"): S.NORMAL,
    (S.NORMAL, "client message"): S.NORMAL,
}


# ---------------------------------------------------------------- VNC Authentication

def _reverse_bits(byte: int) -> int:
    return int(f"{byte:08b}"[::-1], 2)


def vnc_auth_response(password: str, challenge: bytes) -> bytes:
    """rfbproto §VNC Authentication: DES-encrypt the challenge with the password as key.

    The key is the password's first 8 bytes (zero-padded) with the bits of each byte
    reversed, as every VNC implementation does; DES is TripleDES with the key thrice.
    """
    key = bytes(_reverse_bits(b) for b in password.encode("latin-1", "replace")[:8].ljust(8, b"\0"))
    encryptor = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()
    return encryptor.update(challenge) + encryptor.finalize()


class AuthThrottle:
    """Delays that grow with failed VNC Authentication attempts per peer address.

    Pure: the caller passes the time. The n-th consecutive failure of a peer costs
    ``base * 2**(n-1)`` seconds (capped at ``max_delay``) before the failure is sent;
    from ``refuse_after`` failures on, new connections from that peer are refused
    outright (rfbproto §Security, zero security types) until ``forget_after``
    seconds pass without a failure. Memory is bounded to ``max_peers`` addresses.
    """

    def __init__(self, base: float = 0.5, max_delay: float = 30.0, refuse_after: int = 10,
                 forget_after: float = 600.0, max_peers: int = 4096) -> None:
        self.base = base
        self.max_delay = max_delay
        self.refuse_after = refuse_after
        self.forget_after = forget_after
        self.max_peers = max_peers
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def _count(self, peer: str, now: float) -> int:
        count, last = self._failures.get(peer, (0, now))
        if now - last > self.forget_after:
            del self._failures[peer]
            return 0
        return count

    def record_failure(self, peer: str, now: float) -> float:
        """Count a failure; return the seconds to wait before telling the client."""
        count = self._count(peer, now) + 1
        self._failures[peer] = (count, now)
        self._failures.move_to_end(peer)
        while len(self._failures) > self.max_peers:
            self._failures.popitem(last=False)
        return float(min(self.max_delay, self.base * 2 ** (count - 1)))

    def record_success(self, peer: str) -> None:
        self._failures.pop(peer, None)

    def refuse_reason(self, peer: str, now: float) -> str | None:
        """A reason to refuse a new connection from ``peer``, or None to let it try."""
        if self._count(peer, now) >= self.refuse_after:
            return "Too many authentication failures; try again later"
        return None


# ---------------------------------------------------------------- the connection

_VERSION_RE: Final = re.compile(rb"RFB (\d{3})\.(\d{3})\n")


class RFBServerConnection:
    """One client of the VNC server, from the server's side."""

    def __init__(self, password: str | None = None, *, refuse_reason: str | None = None,
                 random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        self.state = State.PROTOCOL_VERSION
        self.version: tuple[int, int] | None = None
        self.password = password or None
        self.refuse_reason = refuse_reason
        self._random_bytes = random_bytes
        self._challenge = b""
        self._buffer = bytearray()
        self._outbox = bytearray()
        self._overflow: str | None = None

        self.width = 0
        self.height = 0
        self.name = ""
        self.screens: tuple[Screen, ...] = ()
        self.pixel_format: PixelFormat = enc.NATIVE_FORMAT
        self.encoder = Encoder(self.pixel_format)
        self.encodings: tuple[int, ...] = ()
        self.encoding = enc.RAW

        self._cursor_pending = False
        self._name_pending = False
        self._desktop_size_rects: list[bytes] = []
        self._size_changed = False
        self._clip_client_actions = 0
        self._clip_client_formats = 0
        self._clip_client_text_max = 0
        self._clip_text = ""

        # rfbproto §ProtocolVersion: the server speaks first, offering 3.8.
        self._outbox += b"RFB 003.008\n"

    # -------------------------------------------------------- plumbing

    def _to(self, verb: str) -> None:
        try:
            self.state = _TRANSITIONS[(self.state, verb)]
        except KeyError:
            raise LocalProtocolError(f"{verb!r} is not possible while {self.state.value}") from None

    def receive_data(self, data: bytes | bytearray) -> None:
        """Feed bytes read from the socket; ``b""`` means the client closed its side."""
        if self.state is State.CLOSED:
            return
        if not data:
            self.state = State.CLOSED
            return
        self._buffer += data
        limit = MAX_BUFFER if self.state is State.NORMAL else MAX_HANDSHAKE_BUFFER
        if len(self._buffer) > limit and self._overflow is None:
            # Reported by next_event(), the one place the shell catches ProtocolError.
            self._overflow = f"client sent {len(self._buffer)} bytes we cannot parse yet (limit {limit})"

    def data_to_send(self) -> bytes:
        """Bytes the protocol itself must write now (handshake replies and the like)."""
        out = bytes(self._outbox)
        self._outbox.clear()
        return out

    def next_event(self) -> Event:
        """The next event, ``NEED_DATA`` if more bytes are needed, ``CLOSED_EVENT`` at the end."""
        if self.state is State.CLOSED:
            return CLOSED_EVENT
        try:
            if self._overflow is not None:
                raise ProtocolError(self._overflow)
            return self._parse()
        except ProtocolError:
            self.state = State.CLOSED
            raise

    def _take(self, n: int) -> bytes | None:
        if len(self._buffer) < n:
            return None
        chunk = bytes(self._buffer[:n])
        del self._buffer[:n]
        return chunk

    def _parse(self) -> Event:
        if self.state is State.SERVER_INIT:
            return NEED_DATA  # client messages wait for the shell's ServerInit
        return self._PARSERS[self.state](self)

    # -------------------------------------------------------- handshake

    def _fail(self, verb: str, reason: str) -> AuthFailed:
        """rfbproto §SecurityResult: failed; 3.8 adds the reason string; then close."""
        self._outbox += struct.pack(">I", 1)
        if self.version == (3, 8):
            data = reason.encode("utf-8")
            self._outbox += struct.pack(">I", len(data)) + data
        self._to(verb)
        return AuthFailed(reason)

    def _start_vnc_auth(self) -> None:
        self._challenge = self._random_bytes(16)
        if len(self._challenge) != 16:
            raise LocalProtocolError("random_bytes(16) must return 16 bytes")
        self._outbox += self._challenge

    def _parse_protocol_version(self) -> Event:
        raw = self._take(12)
        if raw is None:
            return NEED_DATA
        match = _VERSION_RE.fullmatch(raw)
        if match is None:
            raise ProtocolError(f"ProtocolVersion {raw!r} is not 'RFB xxx.yyy\\n'")
        major, minor = int(match[1]), int(match[2])
        if major != 3:
            raise ProtocolError(f"ProtocolVersion {major}.{minor} is not RFB 3.x")
        # rfbproto §ProtocolVersion: unknown minors below 3.7 (3.5, UltraVNC's 3.4 and
        # 3.6) mean 3.3; above 3.8 (Apple's 3.889) the client gets 3.8, our offer.
        self.version = (3, 8) if minor >= 8 else (3, 7) if minor == 7 else (3, 3)
        wanted = SECURITY_VNC_AUTH if self.password else SECURITY_NONE
        if self.refuse_reason is not None:
            data = self.refuse_reason.encode("utf-8")
            # rfbproto §Security: zero types (3.7+) or security-type 0 (3.3), then a reason.
            self._outbox += (b"\0" if self.version >= (3, 7) else struct.pack(">I", 0))
            self._outbox += struct.pack(">I", len(data)) + data
            self._to("refused")
            return AuthFailed(self.refuse_reason, refused=True)
        if self.version == (3, 3):
            self._outbox += struct.pack(">I", wanted)
            if wanted == SECURITY_VNC_AUTH:
                self._start_vnc_auth()
                self._to("version 3.3, security VNC Authentication")
            else:
                self._to("version 3.3, security None")
            return self._parse()
        self._outbox += bytes((1, wanted))
        self._to("version 3.7 or 3.8")
        return self._parse()

    def _parse_security_type(self) -> Event:
        raw = self._take(1)
        if raw is None:
            return NEED_DATA
        chosen = raw[0]
        offered = SECURITY_VNC_AUTH if self.password else SECURITY_NONE
        if chosen != offered:
            return self._fail("security type not offered", f"security type {chosen} was not offered")
        if chosen == SECURITY_NONE:
            if self.version == (3, 8):
                self._outbox += struct.pack(">I", 0)  # rfbproto §None: 3.8 sends SecurityResult
            self._to("security None")
        else:
            self._start_vnc_auth()
            self._to("security VNC Authentication")
        return self._parse()

    def _parse_vnc_auth(self) -> Event:
        raw = self._take(16)
        if raw is None:
            return NEED_DATA
        assert self.password is not None
        expected = vnc_auth_response(self.password, self._challenge)
        if not hmac.compare_digest(raw, expected):
            return self._fail("response wrong", "Authentication failed")
        self._outbox += struct.pack(">I", 0)
        self._to("response right")
        return AuthSucceeded()

    def _parse_client_init(self) -> Event:
        raw = self._take(1)
        if raw is None:
            return NEED_DATA
        self._to("ClientInit")
        return ClientInitDone(shared=raw[0] != 0)

    def send_server_init(self, width: int, height: int, name: str) -> bytes:
        """rfbproto §ServerInit with the native 32-bpp true-colour format."""
        self._to("ServerInit")
        self.width, self.height, self.name = width, height, name
        self.screens = (Screen(0, 0, 0, width, height, 0),)
        data = name.encode("utf-8")
        return (struct.pack(">HH", width, height) + enc.NATIVE_FORMAT.pack()
                + struct.pack(">I", len(data)) + data)

    # -------------------------------------------------------- client messages

    def _parse_client_message(self) -> Event:
        # A parser returns None for a message that needs no event (Extended Clipboard
        # caps, requests…): loop rather than recurse, whatever a client pipelines.
        while self._buffer:
            kind = self._buffer[0]
            parser = self._CLIENT_MESSAGES.get(kind)
            if parser is None:
                raise ProtocolError(f"unknown client message type {kind}")
            event = parser(self)
            if event is NEED_DATA:
                return NEED_DATA
            self._to("client message")
            if event is not None:
                return event
        return NEED_DATA

    def _parse_set_pixel_format(self) -> Event:
        raw = self._take(20)
        if raw is None:
            return NEED_DATA
        pf = PixelFormat.unpack(raw[4:20])
        self.pixel_format = self.encoder.pixel_format = pf
        if not pf.true_colour:
            self._outbox += self._colour_map_message()
        if enc.CURSOR in self.encodings:
            self._cursor_pending = True  # the cursor's pixels are in the client's format
        return SetPixelFormat(pf)

    @staticmethod
    def _colour_map_message() -> bytes:
        """rfbproto §SetColourMapEntries for the fixed BGR233 map."""
        entries = enc.colour_map_entries()
        return (struct.pack(">BxHH", 1, 0, len(entries))
                + b"".join(struct.pack(">HHH", *e) for e in entries))

    def _parse_set_encodings(self) -> Event:
        if len(self._buffer) < 4:
            return NEED_DATA
        count = struct.unpack_from(">H", self._buffer, 2)[0]
        if count > MAX_ENCODINGS:
            raise ProtocolError(f"SetEncodings lists {count} encodings (limit {MAX_ENCODINGS})")
        raw = self._take(4 + 4 * count)
        if raw is None:
            return NEED_DATA
        encodings = struct.unpack_from(f">{count}i", raw, 4)
        had_clipboard = enc.EXTENDED_CLIPBOARD in self.encodings
        self.encodings = encodings
        self.encoding = enc.choose_encoding(encodings)
        for e in encodings:
            if enc.COMPRESS_LEVEL_LOW <= e <= enc.COMPRESS_LEVEL_HIGH:
                self.encoder.set_compress_level(e - enc.COMPRESS_LEVEL_LOW)
                break
        self._cursor_pending = enc.CURSOR in encodings
        self._name_pending = enc.DESKTOP_NAME in encodings
        if enc.EXTENDED_CLIPBOARD in encodings and not had_clipboard:
            # Extended Clipboard: the server announces its caps once the client asks for it.
            self._outbox += self._clipboard_message(
                CLIP_SERVER_ACTIONS | CLIP_TEXT, struct.pack(">I", MAX_CUT_TEXT))
        return SetEncodings(encodings, self.encoding)

    def _parse_framebuffer_update_request(self) -> Event:
        raw = self._take(10)
        if raw is None:
            return NEED_DATA
        _kind, incremental, x, y, w, h = struct.unpack(">BBHHHH", raw)
        # rfbproto §FramebufferUpdateRequest: crop to the framebuffer.
        x, y = min(x, self.width), min(y, self.height)
        w, h = min(w, self.width - x), min(h, self.height - y)
        if not incremental and enc.EXTENDED_DESKTOP_SIZE in self.encodings and not self._desktop_size_rects:
            # rfbproto §ExtendedDesktopSize: a non-incremental request gets the current layout.
            self._desktop_size_rects.append(enc.extended_desktop_size(
                self.width, self.height, self.screens, enc.REASON_SERVER, enc.STATUS_OK))
        return FramebufferUpdateRequest(bool(incremental), x, y, w, h)

    def _parse_key_event(self) -> Event:
        raw = self._take(8)
        if raw is None:
            return NEED_DATA
        _kind, down, keysym = struct.unpack(">BB2xI", raw)
        return KeyEvent(bool(down), keysym)

    def _parse_pointer_event(self) -> Event:
        raw = self._take(6)
        if raw is None:
            return NEED_DATA
        _kind, mask, x, y = struct.unpack(">BBHH", raw)
        return PointerEvent(mask, x, y)

    def _parse_client_cut_text(self) -> Event | None:
        if len(self._buffer) < 8:
            return NEED_DATA
        length = struct.unpack_from(">i", self._buffer, 4)[0]
        if length < 0 and enc.EXTENDED_CLIPBOARD in self.encodings:
            size = -length
            if not 4 <= size <= MAX_CUT_TEXT + 1024:
                raise ProtocolError(f"Extended Clipboard message of {size} bytes (limit {MAX_CUT_TEXT})")
            raw = self._take(8 + size)
            if raw is None:
                return NEED_DATA
            return self._extended_clipboard(raw[8:])
        length &= 0xFFFFFFFF
        if length > MAX_CUT_TEXT:
            raise ProtocolError(f"ClientCutText of {length} bytes (limit {MAX_CUT_TEXT})")
        raw = self._take(8 + length)
        if raw is None:
            return NEED_DATA
        return ClientCutText(raw[8:].decode("latin-1"))

    def _parse_set_desktop_size(self) -> Event:
        if len(self._buffer) < 8:
            return NEED_DATA
        count = self._buffer[6]
        raw = self._take(8 + 16 * count)
        if raw is None:
            return NEED_DATA
        _kind, width, height = struct.unpack_from(">BxHH", raw)
        screens = tuple(Screen(*Screen.STRUCT.unpack_from(raw, 8 + 16 * i)) for i in range(count))
        return SetDesktopSize(width, height, screens)

    _CLIENT_MESSAGES: Final[dict[int, Callable[[RFBServerConnection], Event | None]]] = {
        0: _parse_set_pixel_format,
        2: _parse_set_encodings,
        3: _parse_framebuffer_update_request,
        4: _parse_key_event,
        5: _parse_pointer_event,
        6: _parse_client_cut_text,
        251: _parse_set_desktop_size,
    }

    _PARSERS: Final[dict[State, Callable[[RFBServerConnection], Event]]] = {
        State.PROTOCOL_VERSION: _parse_protocol_version,
        State.SECURITY_TYPE: _parse_security_type,
        State.VNC_AUTH: _parse_vnc_auth,
        State.CLIENT_INIT: _parse_client_init,
        State.NORMAL: _parse_client_message,
    }

    # -------------------------------------------------------- Extended Clipboard

    @staticmethod
    def _clipboard_message(flags: int, payload: bytes = b"") -> bytes:
        """ServerCutText with a negative length: an Extended Clipboard message."""
        body = struct.pack(">I", flags) + payload
        return struct.pack(">B3xi", 3, -len(body)) + body

    def _provide_message(self, text: str) -> bytes:
        """Extended Clipboard provide: UTF-8 with CRLF and a NUL, cut to the client's maximum."""
        limit = min(MAX_CUT_TEXT, self._clip_client_text_max or MAX_CUT_TEXT)
        data = text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")[:max(0, limit - 1)]
        data = data.decode("utf-8", "ignore").encode("utf-8") + b"\0"
        packed = zlib.compress(struct.pack(">I", len(data)) + data)
        return self._clipboard_message(CLIP_PROVIDE | CLIP_TEXT, packed)

    def _extended_clipboard(self, payload: bytes) -> Event | None:
        flags = struct.unpack_from(">I", payload)[0]
        formats = flags & CLIP_FORMAT_MASK
        body = payload[4:]
        if flags & CLIP_CAPS:
            self._clip_client_actions = flags & ~CLIP_FORMAT_MASK
            self._clip_client_formats = formats
            sizes = [f for f in range(16) if formats & (1 << f)]
            if len(body) < 4 * len(sizes):
                raise ProtocolError("Extended Clipboard caps lack their size fields")
            if formats & CLIP_TEXT:
                self._clip_client_text_max = struct.unpack_from(">I", body)[0]
        elif flags & CLIP_REQUEST:
            if formats & CLIP_TEXT and self._clip_text:
                self._outbox += self._provide_message(self._clip_text)
        elif flags & CLIP_PEEK:
            self._outbox += self._clipboard_message(CLIP_NOTIFY | (CLIP_TEXT if self._clip_text else 0))
        elif flags & CLIP_NOTIFY:
            if formats & CLIP_TEXT:
                self._outbox += self._clipboard_message(CLIP_REQUEST | CLIP_TEXT)
        elif flags & CLIP_PROVIDE:
            text = self._unpack_provide(formats, body)
            if text is not None:
                return ClientCutText(text)
        return None

    @staticmethod
    def _unpack_provide(formats: int, body: bytes) -> str | None:
        inflater = zlib.decompressobj()
        try:
            data = inflater.decompress(body, MAX_CUT_TEXT + 64 * 4 + 1)
        except zlib.error as exc:
            raise ProtocolError(f"Extended Clipboard provide is not valid zlib: {exc}") from exc
        if len(data) > MAX_CUT_TEXT + 64 * 4 or inflater.unconsumed_tail:
            raise ProtocolError(f"Extended Clipboard provide inflates past {MAX_CUT_TEXT} bytes")
        pos = 0
        text = None
        for f in range(16):
            if not formats & (1 << f):
                continue
            if pos + 4 > len(data):
                raise ProtocolError("Extended Clipboard provide is truncated")
            size = struct.unpack_from(">I", data, pos)[0]
            pos += 4
            if pos + size > len(data):
                raise ProtocolError("Extended Clipboard provide is truncated")
            if 1 << f == CLIP_TEXT:
                raw = data[pos:pos + size].split(b"\0", 1)[0]
                text = raw.decode("utf-8", "replace").replace("\r\n", "\n")
            pos += size
        return text

    # -------------------------------------------------------- server messages

    def _require_normal(self) -> None:
        if self.state is not State.NORMAL:
            raise LocalProtocolError(f"cannot send while {self.state.value}")

    def send_bell(self) -> bytes:
        """rfbproto §Bell."""
        self._require_normal()
        return b"\x02"

    def send_server_cut_text(self, text: str) -> bytes:
        """Offer ``text`` as the server's clipboard: Extended Clipboard (UTF-8) when the
        client has it, else rfbproto §ServerCutText in Latin-1 (others become '?')."""
        self._require_normal()
        self._clip_text = text
        if self._clip_client_actions & CLIP_NOTIFY and self._clip_client_formats & CLIP_TEXT:
            return self._clipboard_message(CLIP_NOTIFY | CLIP_TEXT)
        if self._clip_client_actions & CLIP_PROVIDE and self._clip_client_formats & CLIP_TEXT:
            return self._provide_message(text)
        data = text.encode("latin-1", "replace")[:MAX_CUT_TEXT]
        return struct.pack(">B3xI", 3, len(data)) + data

    def set_desktop_name(self, name: str) -> None:
        """rfbproto §DesktopName: the next update carries the new name if the client wants it."""
        self.name = name
        self._name_pending = enc.DESKTOP_NAME in self.encodings

    @property
    def supports_resize(self) -> bool:
        """Whether this client can follow a change of framebuffer size at all."""
        return bool({enc.DESKTOP_SIZE, enc.EXTENDED_DESKTOP_SIZE} & set(self.encodings))

    def resize(self, width: int, height: int, reason: int = enc.REASON_SERVER) -> None:
        """The framebuffer is now width×height (server-side change, or ``REASON_OTHER_CLIENT``).

        The next ``send_framebuffer_update`` tells the client and then sends the whole
        framebuffer. A client without ``supports_resize`` cannot follow: close it.
        """
        self._require_normal()
        changed = (width, height) != (self.width, self.height)
        self.width, self.height = width, height
        self.screens = (Screen(self.screens[0].id if self.screens else 0, 0, 0, width, height,
                               self.screens[0].flags if self.screens else 0),)
        if enc.EXTENDED_DESKTOP_SIZE in self.encodings:
            self._desktop_size_rects.append(enc.extended_desktop_size(
                width, height, self.screens, reason, enc.STATUS_OK))
        elif enc.DESKTOP_SIZE in self.encodings and changed:
            self._desktop_size_rects.append(enc.desktop_size(width, height))
        self._size_changed |= changed

    def reply_set_desktop_size(self, request: SetDesktopSize, status: int) -> None:
        """rfbproto §SetDesktopSize: answer this client's request with ``status``.

        On ``STATUS_OK`` the framebuffer must already be request.width×request.height
        (exactly: noVNC loops if the size is rounded); tell other clients with
        ``resize(..., REASON_OTHER_CLIENT)``.
        """
        self._require_normal()
        if status == enc.STATUS_OK:
            changed = (request.width, request.height) != (self.width, self.height)
            self.width, self.height = request.width, request.height
            self.screens = request.screens or (Screen(0, 0, 0, request.width, request.height, 0),)
            self._size_changed |= changed
            self._desktop_size_rects.append(enc.extended_desktop_size(
                self.width, self.height, self.screens, enc.REASON_THIS_CLIENT, status))
        else:
            # "All remaining fields are undefined": repeat the current layout.
            self._desktop_size_rects.append(enc.extended_desktop_size(
                self.width, self.height, self.screens, enc.REASON_THIS_CLIENT, status))

    @property
    def has_pending_update(self) -> bool:
        """A pseudo-rectangle or size change waits for the next update even with nothing dirty."""
        return bool(self._desktop_size_rects or self._cursor_pending or self._name_pending
                    or self._size_changed)

    def _pseudo_rects(self) -> list[bytes]:
        rects = []
        if self._cursor_pending:
            rects.append(enc.cursor(self.pixel_format))
            self._cursor_pending = False
        if self._name_pending:
            rects.append(enc.desktop_name(self.name))
            self._name_pending = False
        return rects

    def _update_messages(self, rects: list[bytes]) -> bytes:
        """rfbproto §FramebufferUpdate, using LastRect past 65535 rectangles when allowed."""
        if len(rects) <= 0xFFFF:
            return struct.pack(">BxH", 0, len(rects)) + b"".join(rects)
        if enc.LAST_RECT in self.encodings:
            return struct.pack(">BxH", 0, 0xFFFF) + b"".join(rects) + enc.last_rect()
        return b"".join(struct.pack(">BxH", 0, len(rects[i:i + 0xFFFF])) + b"".join(rects[i:i + 0xFFFF])
                        for i in range(0, len(rects), 0xFFFF))

    def send_rectangles(self, rects: Sequence[bytes]) -> bytes:
        """rfbproto §FramebufferUpdate from rectangles already encoded (``encodings.*``,
        ``conn.encoder.encode``); pending pseudo-rectangles are not added."""
        self._require_normal()
        return self._update_messages(list(rects))

    def send_framebuffer_update(
        self,
        framebuffer: npt.NDArray[np.generic],
        regions: Sequence[tuple[int, int, int, int]] = (),
        copies: Sequence[tuple[int, int, int, int, int, int]] = (),
    ) -> bytes:
        """Answer a FramebufferUpdateRequest.

        ``framebuffer`` is the current frame (H×W uint32 0x00RRGGBB or H×W×3 uint8 RGB);
        ``regions`` are (x, y, width, height) to send in the chosen encoding;
        ``copies`` are (x, y, width, height, src_x, src_y) moves the client can do
        itself — CopyRect when it asked for it, else the destination is encoded.
        Copies go first: they read the client's framebuffer as it was. Both take
        the renderer's ``Damage``: ``regions=damage.rects``, ``copies=[damage.copy]``.

        A pending size change goes first in an update of its own, followed by an
        update with the whole framebuffer if the size changed.
        """
        self._require_normal()
        fb = framebuffer
        if fb.shape[:2] != (self.height, self.width):
            raise LocalProtocolError(f"framebuffer is {fb.shape[1]}x{fb.shape[0]} but the client "
                                     f"knows {self.width}x{self.height}: call resize() first")
        out = b""
        if self._desktop_size_rects:
            out += self._update_messages(self._desktop_size_rects)
            self._desktop_size_rects = []
        if self._size_changed:
            self._size_changed = False
            regions, copies = [(0, 0, self.width, self.height)], []
        rects = self._pseudo_rects()
        use_copy_rect = enc.COPY_RECT in self.encodings
        for x, y, w, h, src_x, src_y in copies:
            if use_copy_rect:
                rects.append(enc.copy_rect(x, y, w, h, src_x, src_y))
            else:
                regions = [*regions, (x, y, w, h)]
        for x, y, w, h in regions:
            x, y = min(x, self.width), min(y, self.height)
            w, h = min(w, self.width - x), min(h, self.height - y)
            if w > 0 and h > 0:
                rects += self.encoder.encode(self.encoding, fb, x, y, w, h)
        return out + self._update_messages(rects)

"""The trio shell that lets a browser's noVNC reach the VNC server without websockify.

Theory of operation. One TCP port speaks HTTP/1.1, parsed by h11. Each request is one
of two kinds:

* a WebSocket upgrade (RFC 6455 §4.2.1), on any path — noVNC asks for ``/websockify``
  by default, which is what websockify accepts too. The parsed request is handed to
  wsproto (``initiate_upgrade_connection``), which answers 101; from then on the
  connection is a `WebSocketStream`, a `trio.abc.Stream` whose bytes are the payloads
  of binary messages, and the caller's ``handler(stream)`` runs it (for vzfs:
  ``TerminalDisplay.serve_client``, which needs nothing but a Stream).
* a GET or HEAD of a static file beneath the web root (noVNC's ``vnc.html``, ``app/``,
  ``core/``), like ``websockify --web``. `resolve_static` maps the target to a path
  purely (percent-decoding, no ``..``, no NUL); `read_static` then opens it and checks
  what was *opened* (``/proc/self/fd``) lies beneath the root's real path, so neither a
  symlink nor a rename race can lead out of it.

h11 and wsproto are sans-I/O; this module only moves their bytes, under timeouts, and
bounds everything a peer controls: the request head (h11's
``max_incomplete_event_size``), bodies (none are accepted), file sizes and the time a
peer may take. A malformed or hostile client gets a 4xx (or a WebSocket close) and its
connection closed; nobody else notices.
"""

from __future__ import annotations

import functools
import logging
import os
import stat
import urllib.parse
from collections.abc import Awaitable, Callable, Collection
from http import HTTPStatus
from pathlib import Path
from typing import Final

import h11
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection, BytesMessage, CloseConnection, Ping, Pong, Request, TextMessage,
)
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import LocalProtocolError as WSLocalProtocolError
from wsproto.utilities import RemoteProtocolError as WSRemoteProtocolError

__all__ = [
    "DEFAULT_WEB_ROOT", "StreamHandler", "WebSocketStream", "content_type", "read_static",
    "resolve_static", "serve_connection", "serve_websocket",
]

log = logging.getLogger(__name__)

DEFAULT_WEB_ROOT: Final = Path("/usr/share/novnc")   # Debian's novnc package
INDEX: Final = "vnc.html"                            # where ``/`` redirects
SUBPROTOCOL: Final = "binary"    # websockify's name for "binary frames"; chosen when offered
MAX_REQUEST_HEAD: Final = 8192   # bytes of request line + headers (h11 answers 431 past it)
MAX_FILE_SIZE: Final = 16 << 20  # noVNC's largest file is a few hundred KiB
REQUEST_TIMEOUT: Final = 10.0    # a request head (or the next keep-alive one) must arrive within this
SEND_TIMEOUT: Final = 30.0       # a peer that takes no bytes for this long is dropped
CLOSE_TIMEOUT: Final = 2.0       # how long a closing WebSocket waits for the peer's Close
RECEIVE_SIZE: Final = 65536
CHUNK: Final = 65536

_Out = h11.Response | h11.Data | h11.EndOfMessage   # what this server sends with h11

StreamHandler = Callable[["WebSocketStream"], Awaitable[object]]
"""Runs one WebSocket connection to its end; owns closing the stream."""

# Explicit, not mimetypes: /etc/mime.types differs between hosts, and browsers refuse
# ES modules (noVNC's core/*.js) unless they come with a JavaScript type (HTML §fetch a
# single module script: "strict MIME type checking").
CONTENT_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".jpg": "image/jpeg",
    ".gif": "image/gif",
    ".ttf": "font/ttf",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".mp3": "audio/mpeg",
    ".oga": "audio/ogg",
    ".ogg": "audio/ogg",
    ".wav": "audio/wav",
}
OCTET_STREAM: Final = "application/octet-stream"


# ------------------------------------------------------------------ static files (no I/O framework)

def content_type(path: str | os.PathLike[str]) -> str:
    return CONTENT_TYPES.get(os.path.splitext(os.fspath(path))[1].lower(), OCTET_STREAM)


def resolve_static(root: str, target: bytes) -> str | None:
    """The path beneath ``root`` that an origin-form request target names, or None.

    ``root`` must be a real path (no symlinks). The query is dropped; the path is
    percent-decoded once (RFC 3986 §2.1) and then split, so ``%2e%2e`` and ``..%2f``
    are the ``..`` they spell and are refused like it. Empty and ``.`` segments are
    dropped. This does not look at the filesystem: `read_static` checks what it opens.
    """
    if not target.startswith(b"/"):          # absolute-form and asterisk-form: not ours
        return None
    raw_path = target.split(b"?", 1)[0].split(b"#", 1)[0]
    decoded = urllib.parse.unquote_to_bytes(raw_path)
    if b"\0" in decoded:
        return None
    segments = [s for s in decoded.split(b"/") if s not in (b"", b".")]
    if b".." in segments:
        return None
    return os.path.join(root, *(os.fsdecode(s) for s in segments))


def _beneath(root: str, path: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def read_static(root: str, path: str) -> bytes | None:
    """The bytes of the regular file at ``path`` if it really lies beneath ``root``.

    Symlinks inside the root are followed (Debian links vnc_auto.html → vnc.html), but
    the file finally opened is checked through /proc/self/fd — proc(5) — so a link or a
    rename pointing out of the root is refused even if it changes between the check
    and the open. O_NONBLOCK: opening a FIFO must not hang.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError:
        return None
    try:
        if not _beneath(root, os.readlink(f"/proc/self/fd/{fd}")):
            return None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_FILE_SIZE:
            return None
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_FILE_SIZE:
            chunk = os.read(fd, CHUNK)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
        return None                           # grew past the limit while we read it
    except OSError:
        return None
    finally:
        os.close(fd)


def _same_origin(request: h11.Request, allowed: Collection[str] | None) -> bool:
    """A browser's WebSocket carries Origin (RFC 6455 §10.2); accept our own pages'.

    Without this any web page the user visits could open ws://127.0.0.1:PORT and, on a
    console without a password, type into it. Non-browser clients send no Origin.
    """
    if allowed is None:
        return True
    headers = dict(request.headers)           # h11 lower-cases names
    origin = headers.get(b"origin")
    if origin is None:
        return True
    text = origin.decode("latin-1")
    if text in allowed:
        return True
    host = headers.get(b"host", b"").decode("latin-1").lower()
    return bool(host) and urllib.parse.urlsplit(text).netloc.lower() == host


def _head_size(request: h11.Request) -> int:
    return len(request.target) + sum(len(k) + len(v) + 4 for k, v in request.headers)


def _is_upgrade(request: h11.Request) -> bool:
    for name, value in request.headers:
        if name == b"upgrade" and value.strip().lower() == b"websocket":
            return True
    return False


# ------------------------------------------------------------------ the WebSocket stream

class WebSocketStream(trio.abc.Stream):
    """One accepted WebSocket connection as a byte stream (RFC 6455 binary messages).

    ``send_all(data)`` sends one binary message; ``receive_some()`` returns payload bytes
    as they arrive, regardless of message boundaries (RFB is a byte stream); the peer's
    Close is end-of-file; ``aclose()`` sends a Close and waits briefly for the answer
    (§7.1.1: the server closes TCP). Pings are answered while receiving. Sends of
    data and of control frames share one lock, so frames never interleave.
    """

    def __init__(self, transport: trio.abc.Stream, ws: WSConnection, target: str,
                 subprotocol: str | None) -> None:
        self.transport = transport
        self.target = target
        self.subprotocol = subprotocol
        self._ws = ws
        self._buffer = bytearray()
        self._eof = False
        self._closed = False
        self._send_lock = trio.Lock()
        self._sending = False
        self._receiving = False

    @property
    def socket(self) -> trio.socket.SocketType | None:
        """The TCP socket, so per-peer policies (the VNC auth throttle) see the real peer."""
        return getattr(self.transport, "socket", None)

    async def _send_frame(self, event: BytesMessage | CloseConnection | Pong) -> None:
        async with self._send_lock:
            try:
                data = self._ws.send(event)
            except WSLocalProtocolError as exc:
                # The state changed while we waited for the lock: the peer closed.
                raise trio.BrokenResourceError("the WebSocket is closing") from exc
            with trio.fail_after(SEND_TIMEOUT):
                await self.transport.send_all(data)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the WebSocket stream was closed")
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this WebSocket")
        self._sending = True
        try:
            if self._ws.state is not ConnectionState.OPEN:
                raise trio.BrokenResourceError("the WebSocket peer closed the connection")
            if not data:
                await trio.lowlevel.checkpoint()
                return
            await self._send_frame(BytesMessage(data=bytes(data)))
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._closed:
            raise trio.ClosedResourceError("the WebSocket stream was closed")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this WebSocket")
        self._receiving = True
        try:
            while True:
                await self._handle_events()
                if self._buffer or self._eof:
                    break
                data = await self.transport.receive_some(RECEIVE_SIZE)
                self._ws.receive_data(bytes(data) or None)   # None: TCP EOF, wsproto says 1006
            if not self._buffer:
                await trio.lowlevel.checkpoint()
                return b""
            n = len(self._buffer) if max_bytes is None else min(max_bytes, len(self._buffer))
            chunk = bytes(self._buffer[:n])
            del self._buffer[:n]
            return chunk
        finally:
            self._receiving = False

    async def _handle_events(self) -> None:
        for event in self._ws.events():
            if isinstance(event, BytesMessage):
                self._buffer += event.data
            elif isinstance(event, Ping):
                await self._send_frame(event.response())
            elif isinstance(event, CloseConnection):
                self._eof = True
                if event.code not in (CloseReason.NORMAL_CLOSURE, CloseReason.GOING_AWAY,
                                      CloseReason.NO_STATUS_RCVD):
                    log.info("WebSocket %s closed: %s %s", self.target, event.code, event.reason)
                if self._ws.state is ConnectionState.REMOTE_CLOSING:
                    await self._send_frame(event.response())
                elif self._ws.state is ConnectionState.OPEN:
                    # wsproto reports a malformed frame as a Close it did not send:
                    # send it (§7.1.7 "Fail the WebSocket Connection").
                    await self._send_frame(CloseConnection(code=event.code, reason=event.reason))
                return
            elif isinstance(event, TextMessage):
                # RFB is binary; noVNC never sends text (RFC 6455 §7.4.1: 1003).
                self._eof = True
                log.info("WebSocket %s sent a text message: closing", self.target)
                await self._send_frame(CloseConnection(code=CloseReason.UNSUPPORTED_DATA,
                                                       reason="binary messages only"))
                return
            # Pong: nothing to do.

    async def aclose(self) -> None:
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        try:
            with trio.move_on_after(CLOSE_TIMEOUT):
                if self._ws.state is ConnectionState.OPEN:
                    await self._send_frame(CloseConnection(code=CloseReason.NORMAL_CLOSURE))
                    if not self._receiving:
                        await self._wait_close()
                elif self._ws.state is ConnectionState.REMOTE_CLOSING:
                    await self._send_frame(CloseConnection(code=CloseReason.NORMAL_CLOSURE))
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, OSError):
            pass                                # the peer is gone: nothing left to say
        finally:
            await self.transport.aclose()

    async def _wait_close(self) -> None:
        while self._ws.state is ConnectionState.LOCAL_CLOSING:
            data = await self.transport.receive_some(RECEIVE_SIZE)
            self._ws.receive_data(bytes(data) or None)
            for _ in self._ws.events():
                pass


# ------------------------------------------------------------------ the HTTP side

class _Refused(Exception):
    """A request this server answers with an error status, then closes."""

    def __init__(self, status: int, reason: str, headers: list[tuple[bytes, bytes]] | None = None
                 ) -> None:
        super().__init__(reason)
        self.status = status
        self.headers = headers or []


async def _next_event(transport: trio.abc.Stream, http: h11.Connection) -> object:
    while True:
        event = http.next_event()
        if event is not h11.NEED_DATA:
            return event
        http.receive_data(bytes(await transport.receive_some(RECEIVE_SIZE)))


async def _send(transport: trio.abc.Stream, http: h11.Connection, *events: _Out) -> None:
    data = b"".join(http.send(e) for e in events)
    with trio.fail_after(SEND_TIMEOUT):
        await transport.send_all(data)


async def _respond(transport: trio.abc.Stream, http: h11.Connection, status: int,
                   body: bytes, ctype: str = "text/plain; charset=utf-8",
                   headers: list[tuple[bytes, bytes]] | None = None, head: bool = False) -> None:
    fields = [
        (b"Content-Type", ctype.encode()),
        (b"Content-Length", str(len(body)).encode()),
        (b"X-Content-Type-Options", b"nosniff"),
        (b"Cache-Control", b"no-cache"),
        *(headers or []),
    ]
    events: list[_Out] = [h11.Response(status_code=status, headers=fields,
                                         reason=HTTPStatus(status).phrase.encode())]
    if not head:
        events += [h11.Data(data=body[i:i + CHUNK]) for i in range(0, len(body), CHUNK)]
    events.append(h11.EndOfMessage())
    await _send(transport, http, *events)


async def _drain_body(transport: trio.abc.Stream, http: h11.Connection) -> None:
    """Read up to the request's end; GET and HEAD take no body, so any is refused."""
    while True:
        event = await _next_event(transport, http)
        if isinstance(event, h11.EndOfMessage):
            return
        if isinstance(event, h11.Data) and event.data:
            raise _Refused(400, "a request body is not accepted here")
        if isinstance(event, h11.ConnectionClosed):
            raise trio.BrokenResourceError("the peer closed in the middle of a request")


async def _serve_static(transport: trio.abc.Stream, http: h11.Connection,
                        request: h11.Request, root: str | None) -> None:
    head = request.method == b"HEAD"
    if request.method not in (b"GET", b"HEAD"):
        raise _Refused(405, "only GET and HEAD are served", [(b"Allow", b"GET, HEAD")])
    if root is None:
        await _respond(transport, http, 404, b"not found\n", head=head)
        return
    path = resolve_static(root, bytes(request.target))
    if path == root:
        # ``/`` is noVNC's page; keep the query, which carries its settings.
        query = bytes(request.target).partition(b"?")
        location = b"/" + INDEX.encode() + (query[1] + query[2])
        await _respond(transport, http, 302, b"", headers=[(b"Location", location)], head=head)
        return
    body = None if path is None else await trio.to_thread.run_sync(read_static, root, path)
    if path is None or body is None:
        await _respond(transport, http, 404, b"not found\n", head=head)
        return
    await _respond(transport, http, 200, body, content_type(path), head=head)


async def _upgrade(transport: trio.abc.Stream, http: h11.Connection, request: h11.Request,
                   allowed_origins: Collection[str] | None) -> WebSocketStream:
    if not _same_origin(request, allowed_origins):
        raise _Refused(403, "WebSocket connections are accepted from this server's own pages only")
    ws = WSConnection(ConnectionType.SERVER)
    try:
        ws.initiate_upgrade_connection(list(request.headers), bytes(request.target))
    except WSRemoteProtocolError as exc:
        hint = exc.event_hint
        status = getattr(hint, "status_code", 400)
        headers = [(bytes(k), bytes(v)) for k, v in getattr(hint, "headers", [])]
        raise _Refused(status, f"bad WebSocket handshake: {exc}", headers) from exc
    offer = next(e for e in ws.events() if isinstance(e, Request))
    subprotocol = SUBPROTOCOL if SUBPROTOCOL in offer.subprotocols else None
    with trio.fail_after(SEND_TIMEOUT):
        await transport.send_all(ws.send(AcceptConnection(subprotocol=subprotocol)))
    trailing, _ = http.trailing_data        # frames sent right behind the request
    if trailing:
        ws.receive_data(bytes(trailing))
    return WebSocketStream(transport, ws, offer.target, subprotocol)


def _peer(transport: trio.abc.Stream) -> str:
    sock = getattr(transport, "socket", None)
    try:
        return str(sock.getpeername()[0]) if sock is not None else "local"
    except (OSError, IndexError, TypeError):
        return "unknown"


async def serve_connection(transport: trio.abc.Stream, handler: StreamHandler, *,
                           web_root: str | None = os.fspath(DEFAULT_WEB_ROOT),
                           allowed_origins: Collection[str] | None = ()) -> None:
    """Serve one TCP connection: static GETs (kept alive) until a WebSocket upgrade,
    which is handed to ``handler``; closes the connection when done.

    ``web_root`` is a real path (see `serve_websocket`) or None to serve no files.
    """
    peer = _peer(transport)
    http = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD)
    try:
        while True:
            try:
                with trio.fail_after(REQUEST_TIMEOUT):
                    event = await _next_event(transport, http)
                    if not isinstance(event, h11.Request):
                        return                  # ConnectionClosed between requests
                    if _head_size(event) > MAX_REQUEST_HEAD:
                        # h11's limit only bounds an *incomplete* head; a whole one
                        # that came in one read is checked here.
                        raise _Refused(431, "the request head is too large")
                    await _drain_body(transport, http)
                    if _is_upgrade(event):
                        stream = await _upgrade(transport, http, event, allowed_origins)
                    else:
                        stream = None
                if stream is not None:
                    await handler(stream)
                    return
                await _serve_static(transport, http, event, web_root)
            except (_Refused, h11.RemoteProtocolError) as exc:
                status = exc.status if isinstance(exc, _Refused) else exc.error_status_hint
                log.info("refusing HTTP client %s: %s %s", peer, status, exc)
                if http.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    await _respond(transport, http, status, f"{exc}\n".encode(),
                                   headers=[(b"Connection", b"close"),
                                            *getattr(exc, "headers", [])])
                return
            if http.our_state is not h11.DONE or http.their_state is not h11.DONE:
                return
            http.start_next_cycle()
    except trio.TooSlowError:
        log.info("closing HTTP client %s: it was too slow", peer)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        log.info("HTTP client %s went away: %s", peer, exc)
    finally:
        with trio.move_on_after(1) as cleanup:
            cleanup.shield = True
            await transport.aclose()


async def serve_websocket(listener: trio.abc.Listener[trio.abc.Stream], handler: StreamHandler,
                          *, web_root: str | os.PathLike[str] | None = DEFAULT_WEB_ROOT,
                          allowed_origins: Collection[str] | None = (),
                          task_status: trio.TaskStatus[list[trio.abc.Listener[trio.abc.Stream]]]
                          = trio.TASK_STATUS_IGNORED) -> None:
    """Accept connections forever: WebSocket upgrades run ``handler(stream)``, GETs
    serve the files beneath ``web_root`` (None: no files).

    ``allowed_origins`` lists extra browser origins (``"http://host:port"``) whose pages
    may open WebSockets, besides pages this server served itself; None allows any.
    trio.serve_listeners owns the connection tasks and rides out EMFILE/ENFILE.
    """
    root = None if web_root is None else os.path.realpath(web_root)
    await trio.serve_listeners(
        functools.partial(serve_connection, handler=handler, web_root=root,
                          allowed_origins=allowed_origins),
        [listener], task_status=task_status)

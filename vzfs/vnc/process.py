"""The VNC tty server process: one per running domain, started and restarted by its controller.

Theory of operation. The controller's spawner forks this process with one end of a
socketpair, the *link*, framed as in `wire.consolestream`. Over the link the
controller sends first ``J {"op": "init", …}`` — the emulator's snapshot, the
domain's ``[vnc]`` settings and the ports to prefer — then the console's bytes as
``D`` frames from the snapshot's offset, and ``J {"op": "snapshot"}`` whenever our
emulator must take the controller's state instead of its own (after a resize, or
when we fell behind the console ring). We send ``J {"event": "listening"}`` once
bound, ``I`` frames for what clients type and paste, and ``J {"op": "resize"}``
for a client's SetDesktopSize.

The process owns nothing of the domain: the pty, the console ring and the emulator
whose screen `screen` shows stay in the controller. Killing this process loses only
its connections; the controller starts another, which shows the same screen, and
clients reconnect and get a full frame. It ends when the link closes.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import logging
import os
import socket
import sys
from typing import Any, NoReturn

import trio

from ..kernel import proctitle
from ..terminal import BACKENDS
from ..wire.consolestream import FrameDecoder, input_frame, json_frame, parse_json_frame
from . import websocket
from .font import default_font
from .render import Renderer
from .server import TerminalDisplay

RFB_BASE = 5900           # 5900 + N: VNC display N
WEBSOCKET_BASE = 15900    # 15900 + N: the RFB port + 10000, clear of the RFB range
DISPLAYS = 1000           # display numbers tried when the port is 0 (5900..6899)
WEB_ROOT = "/usr/share/novnc"


_INHERITED_HANDLERS: list[logging.Handler] = []

FONT = None
"""The terminal font, loaded once by `preload()` in the zygote and shared by every fork."""


def preload() -> None:
    """Load what every VNC server needs (the font: its OpenType files and the glyphs
    of ASCII) before the zygote forks, so a server starts without that work."""
    global FONT
    FONT = default_font()
    for char in map(chr, range(0x20, 0x7F)):
        FONT.lookup(char)


def address(host: str, port: int) -> str:
    """`HOST:PORT`, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind_socket(host: str, port: int, base: int, prefer: int = 0) -> socket.socket:
    """A listening TCP socket on *host*: *port*, or when it is 0 the *prefer*red port and
    then base+0, base+1, … (the first free VNC display)."""
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    candidates = [port] if port else ([prefer] if prefer else []) + [base + n for n in range(DISPLAYS)]
    last: OSError | None = None
    for candidate in candidates:
        sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, candidate))
            sock.listen(64)
        except OSError as exc:
            sock.close()
            last = exc
            if exc.errno != errno.EADDRINUSE:
                break
            continue
        return sock
    what = f"port {port}" if port else f"ports {base}..{base + DISPLAYS - 1}"
    raise OSError(last.errno if last else errno.EADDRINUSE,
                  f"cannot listen on {host} {what}: {last.strerror if last else 'all in use'}")


def listen(vnc: dict[str, Any], prefer: dict[str, int]) -> tuple[socket.socket, socket.socket | None]:
    """The RFB and (unless turned off) WebSocket listening sockets for a domain's `[vnc]`.

    Made by the controller, which holds them while the domain runs, as systemd's socket
    activation holds a service's: its address is known the moment the domain starts,
    and every VNC server it runs, restarted or not, serves the same sockets."""
    host = vnc.get("listen", "127.0.0.1")
    rfb = bind_socket(host, int(vnc.get("port", 0)), RFB_BASE, prefer.get("rfb", 0))
    if not vnc.get("websocket", True):
        return rfb, None
    display_number = rfb.getsockname()[1] - RFB_BASE
    preferred = prefer.get("websocket") or (
        WEBSOCKET_BASE + display_number if 0 <= display_number < DISPLAYS else 0)
    try:
        ws = bind_socket(host, int(vnc.get("websocket_port", 0)), WEBSOCKET_BASE, preferred)
    except OSError:
        rfb.close()
        raise
    return rfb, ws


def _listener(sock: socket.socket) -> trio.SocketListener:
    return trio.SocketListener(trio.socket.from_stdlib_socket(sock))


class Server:
    """This process's state: the display and the link's outgoing queue."""

    def __init__(self, link: trio.SocketStream, frames: FrameDecoder, init: dict[str, Any],
                 name: str = "vzfs", sockets: tuple[socket.socket, ...] = ()) -> None:
        self.link = link
        self.sockets = sockets
        self.frames = frames
        self.vnc: dict[str, Any] = init["vnc"]
        self.prefer: dict[str, int] = init.get("prefer", {})
        backend = BACKENDS[init.get("emulator", "fast")]
        terminal = backend.restore(init["snapshot"])
        self.display = TerminalDisplay(
            terminal, Renderer(terminal.columns, terminal.lines, FONT or default_font()),
            on_resize=self._on_resize, name=name)
        self.outgoing: list[bytes] = []
        self.wake = trio.Event()

    def _queue(self, frame: bytes) -> None:
        self.outgoing.append(frame)
        self.wake.set()

    def _on_input(self, data: bytes) -> None:
        self._queue(input_frame(data))

    def _on_resize(self, columns: int, lines: int) -> None:
        self._queue(json_frame({"op": "resize", "columns": columns, "lines": lines}))

    def handle_frame(self, kind: str, payload: bytes) -> None:
        if kind == "D":
            self.display.feed(payload)         # replies: the controller's emulator answers
        elif kind == "J":
            msg = parse_json_frame(payload)
            if msg.get("op") == "snapshot":
                self.display.load(msg["snapshot"])

    def _listen(self) -> tuple[trio.SocketListener, trio.SocketListener | None]:
        if self.sockets:           # the controller's (listen): served as they are
            rfb_sock, ws_sock = self.sockets[0], (self.sockets[1] if len(self.sockets) > 1
                                                  else None)
        else:
            rfb_sock, ws_sock = listen(self.vnc, self.prefer)
        return _listener(rfb_sock), (_listener(ws_sock) if ws_sock is not None else None)

    async def run(self) -> None:
        host = self.vnc.get("listen", "127.0.0.1")
        password = self.vnc.get("password") or None
        try:
            rfb, ws = self._listen()
        except OSError as exc:
            # The controller logs it, shows no address, and tries again later.
            await self.link.send_all(json_frame({"event": "error", "error": exc.strerror or str(exc),
                                                 "errno": exc.errno or errno.EIO}))
            return
        listening = {"event": "listening", "pid": os.getpid(),
                     "rfb": address(host, rfb.socket.getsockname()[1]),
                     "websocket": address(host, ws.socket.getsockname()[1]) if ws else ""}
        async with trio.open_nursery() as nursery:
            if ws is not None:
                handler = functools.partial(self.display.serve_client, password=password,
                                            on_input=self._on_input)
                nursery.start_soon(functools.partial(
                    websocket.serve_websocket, ws, handler, web_root=WEB_ROOT))
            await nursery.start(self.display.serve, rfb, password, self._on_input)
            nursery.start_soon(self.display.blink)
            nursery.start_soon(self._send_link)
            self._queue(json_frame(listening))
            await self._read_link()
            nursery.cancel_scope.cancel()

    async def _send_link(self) -> None:
        while True:
            await self.wake.wait()
            self.wake = trio.Event()
            out, self.outgoing = b"".join(self.outgoing), []
            await self.link.send_all(out)

    async def _read_link(self) -> None:
        """Follow the console until the controller closes the link."""
        while True:
            data = await self.link.receive_some(1 << 16)
            if not data:
                return
            for kind, _, payload in self.frames.feed(data):
                self.handle_frame(kind, payload)
                # Let clients be served between frames of a burst.
                await trio.lowlevel.checkpoint()


async def _main(link_fd: int, name: str, listen_fds: tuple[int, ...] = ()) -> None:
    link = trio.SocketStream(trio.socket.from_stdlib_socket(
        socket.socket(fileno=link_fd)))
    frames = FrameDecoder()
    pending: list[tuple[str, int, bytes]] = []
    while not pending:
        data = await link.receive_some(1 << 20)
        if not data:
            return
        pending.extend(frames.feed(data))
    kind, _, payload = pending.pop(0)
    init = parse_json_frame(payload) if kind == "J" else {}
    if init.get("op") != "init":
        raise RuntimeError("the controller's first message is not init")
    server = Server(link, frames, init, name=f"{name} on {socket.gethostname()}",
                    sockets=tuple(socket.socket(fileno=fd) for fd in listen_fds))
    # Frames that arrived with the init message come first.
    for kind, _, payload in pending:
        server.handle_frame(kind, payload)
    await server.run()


def _log_to_stderr() -> None:
    """Log to stderr (the controller's log): the daemon's handlers we inherited write to
    descriptors the spawner closed. Client comings and goings are not worth a line."""
    root = logging.getLogger()
    # Kept referenced: a dropped file handler would close, when collected, a descriptor
    # number that is now someone else's (the link's, say).
    _INHERITED_HANDLERS.extend(root.handlers)
    root.handlers = [logging.StreamHandler(sys.stderr)]
    root.handlers[0].setFormatter(logging.Formatter("vzfs-vnc: %(levelname)s %(name)s: %(message)s"))
    root.setLevel(logging.WARNING)


def run(name: str, link_fd: int, listen_fds: tuple[int, ...] = ()) -> NoReturn:
    """The server's life, in the process the spawner forked. Never returns."""
    proctitle.name(f"vzfs: vnc {name}", f"vzfs-vnc:{name}")
    _log_to_stderr()
    trio.run(_main, link_fd, name, listen_fds)
    os._exit(0)

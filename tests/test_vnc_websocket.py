"""The WebSocket + static-file listener over loopback TCP, with clients written directly
on wsproto and h11 (not on the stream class under test) and raw bytes for hostile ones."""

from __future__ import annotations

import functools
import os
import struct
from pathlib import Path

import h11
import numpy as np
import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection, BytesMessage, CloseConnection, Ping, Pong, RejectConnection, Request,
    TextMessage,
)

from tests.test_vnc_server import RawClient
from tests.vnc_decoder import Decoder
from vzfs.terminal.emulator import Terminal
from vzfs.vnc import encodings as enc
from vzfs.vnc import websocket
from vzfs.vnc.render import Renderer
from vzfs.vnc.server import TerminalDisplay

TIMEOUT = 20
NOVNC = Path("/usr/share/novnc")
PASSWD = Path("/etc/passwd").read_bytes()


class Served:
    def __init__(self, display: TerminalDisplay, port: int) -> None:
        self.display = display
        self.port = port
        self.typed = bytearray()


async def start(nursery: trio.Nursery, *, display: TerminalDisplay | None = None,
                password: str | None = None, web_root: str | os.PathLike[str] | None = NOVNC,
                ) -> Served:
    display = display or TerminalDisplay(Terminal(20, 6), Renderer(20, 6))
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    served = Served(display, listeners[0].socket.getsockname()[1])
    handler = functools.partial(display.serve_client, password=password,
                                on_input=served.typed.extend)
    await nursery.start(functools.partial(websocket.serve_websocket, listeners[0], handler,
                                          web_root=web_root))
    return served


class Rejected(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class WSClient:
    """A WebSocket client on wsproto and a plain trio socket, with a Stream's two methods."""

    def __init__(self, tcp: trio.SocketStream, ws: WSConnection, subprotocol: str | None) -> None:
        self.tcp = tcp
        self.ws = ws
        self.subprotocol = subprotocol
        self.buffer = bytearray()
        self.pongs: list[bytes] = []
        self.close: CloseConnection | None = None

    @classmethod
    async def connect(cls, port: int, target: str = "/websockify",
                      subprotocols: tuple[str, ...] = ("binary",),
                      headers: tuple[tuple[bytes, bytes], ...] = ()) -> WSClient:
        tcp = await trio.open_tcp_stream("127.0.0.1", port)
        ws = WSConnection(ConnectionType.CLIENT)
        await tcp.send_all(ws.send(Request(host=f"127.0.0.1:{port}", target=target,
                                           subprotocols=list(subprotocols),
                                           extra_headers=list(headers))))
        while True:
            data = await tcp.receive_some(65536)
            assert data, "server closed during the handshake"
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, AcceptConnection):
                    return cls(tcp, ws, event.subprotocol)
                if isinstance(event, RejectConnection):
                    await tcp.aclose()
                    raise Rejected(event.status_code)

    async def send_all(self, data: bytes) -> None:
        await self.tcp.send_all(self.ws.send(BytesMessage(data=data)))

    async def receive_some(self, max_bytes: int = 65536) -> bytes:
        while not self.buffer:
            if self.close is not None:
                return b""
            data = await self.tcp.receive_some(65536)
            self.ws.receive_data(data or None)
            for event in self.ws.events():
                if isinstance(event, BytesMessage):
                    self.buffer += event.data
                elif isinstance(event, Pong):
                    self.pongs.append(bytes(event.payload))
                elif isinstance(event, CloseConnection):
                    self.close = event
        out = bytes(self.buffer[:max_bytes])
        del self.buffer[:max_bytes]
        return out

    async def wait_closed(self) -> CloseConnection:
        with trio.fail_after(TIMEOUT):
            while await self.receive_some():
                pass
        assert self.close is not None
        return self.close


async def rfb_handshake(stream: WSClient, encodings: list[int]) -> RawClient:
    """RFB 3.8, security None, shared — tests.test_vnc_server.RawClient.connect over a WebSocket."""
    client = RawClient(stream)  # type: ignore[arg-type]
    assert await client.read(12) == b"RFB 003.008\n"
    await stream.send_all(b"RFB 003.008\n")
    count = (await client.read(1))[0]
    assert 1 in await client.read(count)
    await stream.send_all(b"\x01")
    assert await client.read(4) == b"\0\0\0\0"
    # ClientInit and SetEncodings one byte per message: the stream is bytes, not messages.
    for byte in b"\x01":
        await stream.send_all(bytes([byte]))
    width, height = struct.unpack(">HH", await client.read(4))
    pixel_format = await client.read(16)
    client.name = (await client.read(struct.unpack(">I", await client.read(4))[0])).decode()
    client.decoder = Decoder(pixel_format, width, height)
    message = struct.pack(f">BxH{len(encodings)}i", 2, len(encodings), *encodings)
    for i in range(len(message)):
        await stream.send_all(message[i:i + 1])
    return client


# ------------------------------------------------------------------ WebSocket


@pytest.mark.trio
async def test_rfb_over_websocket_gets_framebuffer_updates() -> None:
    async with trio.open_nursery() as nursery:
        served = await start(nursery)
        served.display.feed(b"\x1b[1;31mvzfs\x1b[0m ws")
        with trio.fail_after(TIMEOUT):
            ws = await WSClient.connect(served.port)
            assert ws.subprotocol == "binary"
            client = await rfb_handshake(ws, [enc.COPY_RECT, enc.RAW])
            await client.request(incremental=False)
            assert await client.next_message() == 0
            assert np.array_equal(client.rgb(), served.display.framebuffer)
            served.display.feed(b"\r\nmore")
            await client.request(incremental=True)
            assert await client.next_message() == 0
            assert np.array_equal(client.rgb(), served.display.framebuffer)
            # A ping in the middle of the RFB stream is answered, and the stream goes on.
            await ws.tcp.send_all(ws.ws.send(Ping(payload=b"are you there")))
            # KeyEvent 'a' down and up.
            await ws.send_all(struct.pack(">BBxxI", 4, 1, ord("a")) + struct.pack(">BBxxI", 4, 0, ord("a")))
            while bytes(served.typed) != b"a":
                await trio.sleep(0.01)
            await client.request(incremental=False)
            assert await client.next_message() == 0
            assert ws.pongs == [b"are you there"]
            # A normal close is answered with a Close.
            await ws.tcp.send_all(ws.ws.send(CloseConnection(code=1000)))
            assert (await ws.wait_closed()).code == 1000
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_a_client_offering_no_subprotocol_is_served() -> None:
    """noVNC 1.3 offers none (rfb.js: wsProtocols defaults to [])."""
    async with trio.open_nursery() as nursery:
        served = await start(nursery, web_root=None)
        with trio.fail_after(TIMEOUT):
            ws = await WSClient.connect(served.port, target="/any/path", subprotocols=())
            assert ws.subprotocol is None
            client = await rfb_handshake(ws, [enc.RAW])
            await client.request(incremental=False)
            assert await client.next_message() == 0
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_pages_of_other_origins_cannot_open_the_console() -> None:
    async with trio.open_nursery() as nursery:
        served = await start(nursery)
        with trio.fail_after(TIMEOUT):
            with pytest.raises(Rejected) as refused:
                await WSClient.connect(served.port, headers=((b"Origin", b"http://evil.example"),))
            assert refused.value.status == 403
            own = f"http://127.0.0.1:{served.port}".encode()
            ws = await WSClient.connect(served.port, headers=((b"Origin", own),))
            await rfb_handshake(ws, [enc.RAW])
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_text_and_malformed_frames_close_only_their_client() -> None:
    async with trio.open_nursery() as nursery:
        served = await start(nursery)
        with trio.fail_after(TIMEOUT):
            good = await WSClient.connect(served.port)
            client = await rfb_handshake(good, [enc.RAW])

            text = await WSClient.connect(served.port)
            await text.tcp.send_all(text.ws.send(TextMessage(data="RFB 003.008\n")))
            assert (await text.wait_closed()).code == 1003

            # An unmasked client frame (RFC 6455 §5.1: the server must close, 1002).
            bad = await WSClient.connect(served.port)
            await bad.tcp.send_all(b"\x82\x05hello")
            assert (await bad.wait_closed()).code == 1002

            # Garbage instead of HTTP, and a header bigger than the limit.
            for junk in (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(200),
                         b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 20000 + b"\r\n\r\n"):
                reply = await raw_request(served.port, junk)
                assert reply.startswith((b"HTTP/1.1 400", b"HTTP/1.1 431")), reply[:40]

            await client.request(incremental=False)
            assert await client.next_message() == 0
            assert np.array_equal(client.rgb(), served.display.framebuffer)
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_a_silent_client_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(websocket, "REQUEST_TIMEOUT", 0.2)
    async with trio.open_nursery() as nursery:
        served = await start(nursery)
        with trio.fail_after(TIMEOUT):
            tcp = await trio.open_tcp_stream("127.0.0.1", served.port)
            await tcp.send_all(b"GET /vnc.html HTTP/1.1\r\n")      # and never the rest
            assert await tcp.receive_some(65536) == b""
        nursery.cancel_scope.cancel()


# ------------------------------------------------------------------ static files


async def raw_request(port: int, data: bytes) -> bytes:
    """Send bytes; everything the server answers until it closes."""
    with trio.fail_after(TIMEOUT):
        tcp = await trio.open_tcp_stream("127.0.0.1", port)
        await tcp.send_all(data)
        reply = bytearray()
        while chunk := await tcp.receive_some(65536):
            reply += chunk
        return bytes(reply)


async def get(port: int, *targets: bytes, method: bytes = b"GET"
              ) -> list[tuple[int, dict[bytes, bytes], bytes]]:
    """Requests on one kept-alive connection, parsed by h11 as a client."""
    out = []
    with trio.fail_after(TIMEOUT):
        tcp = await trio.open_tcp_stream("127.0.0.1", port)
        http = h11.Connection(h11.CLIENT)
        for target in targets:
            await tcp.send_all(http.send(h11.Request(method=method, target=target,
                                                     headers=[(b"Host", b"127.0.0.1")]))
                               + http.send(h11.EndOfMessage()))
            response, body = None, bytearray()
            while True:
                event = http.next_event()
                if event is h11.NEED_DATA:
                    http.receive_data(await tcp.receive_some(65536))
                elif isinstance(event, h11.Response):
                    response = event
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
                else:
                    raise AssertionError(event)
            assert response is not None
            out.append((response.status_code, dict(response.headers), bytes(body)))
            if http.our_state is h11.MUST_CLOSE or http.their_state is h11.MUST_CLOSE:
                break
            http.start_next_cycle()
        await tcp.aclose()
    return out


@pytest.mark.trio
async def test_novnc_files_are_served_with_their_types() -> None:
    async with trio.open_nursery() as nursery:
        served = await start(nursery)
        html, js, css, svg, root = await get(
            served.port, b"/vnc.html", b"/core/rfb.js", b"/app/styles/base.css",
            b"/app/images/connect.svg", b"/?autoconnect=1&password=x")
        assert html == (200, html[1], (NOVNC / "vnc.html").read_bytes())
        assert html[1][b"content-type"] == b"text/html; charset=utf-8"
        assert html[1][b"x-content-type-options"] == b"nosniff"
        assert js[0] == 200 and js[1][b"content-type"].startswith(b"text/javascript")
        assert js[2] == (NOVNC / "core/rfb.js").read_bytes()
        assert css[0] == 200 and css[1][b"content-type"].startswith(b"text/css")
        assert svg[0] == 200 and svg[1][b"content-type"] == b"image/svg+xml"
        assert root[0] == 302 and root[1][b"location"] == b"/vnc.html?autoconnect=1&password=x"
        # Debian's vnc_auto.html is a symlink to vnc.html, inside the root: followed.
        [(status, _, body)] = await get(served.port, b"/vnc_auto.html")
        assert (status, body) == (200, (NOVNC / "vnc.html").read_bytes())
        [(status, headers, body)] = await get(served.port, b"/vnc.html", method=b"HEAD")
        assert (status, body) == (200, b"")
        assert int(headers[b"content-length"]) == (NOVNC / "vnc.html").stat().st_size
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_only_get_and_head() -> None:
    async with trio.open_nursery() as nursery:
        served = await start(nursery)
        [(status, headers, _)] = await get(served.port, b"/vnc.html", method=b"DELETE")
        assert status == 405 and headers[b"allow"] == b"GET, HEAD"
        reply = await raw_request(served.port, b"POST /vnc.html HTTP/1.1\r\nHost: x\r\n"
                                               b"Content-Length: 5\r\n\r\nhello")
        assert reply.startswith(b"HTTP/1.1 400")
        nursery.cancel_scope.cancel()


TRAVERSALS = [
    b"/../../etc/passwd",
    b"/../../../../../../../../etc/passwd",
    b"/%2e%2e/%2e%2e/etc/passwd",
    b"/%2E%2E/%2E%2E/%2E%2E/%2E%2E/etc/passwd",
    b"/..%2f..%2f..%2f..%2fetc%2fpasswd",
    b"/%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    b"/app/../../../../etc/passwd",
    b"/vnc.html/../../../../etc/passwd",
    b"/./.././../etc/passwd",
    b"//etc/passwd",
    b"/%2fetc%2fpasswd",
    b"/%252e%252e/%252e%252e/etc/passwd",
    b"/etc/passwd%00.html",
    b"http://127.0.0.1/etc/passwd",
    b"/out", b"/outdir/passwd", b"/inside/out", b"/loop",
]


@pytest.mark.trio
async def test_no_path_leads_out_of_the_web_root(tmp_path: Path) -> None:
    root = tmp_path / "web"
    (root / "sub").mkdir(parents=True)
    (root / "index.txt").write_text("inside\n")
    (root / "out").symlink_to("/etc/passwd")
    (root / "outdir").symlink_to("/etc")
    (root / "inside").symlink_to("sub")
    (root / "sub" / "out").symlink_to("../../../../../../etc/passwd")
    (root / "link.txt").symlink_to("index.txt")
    (root / "loop").symlink_to("loop")
    os.mkfifo(root / "fifo")
    async with trio.open_nursery() as nursery:
        served = await start(nursery, web_root=root)
        for target in TRAVERSALS:
            reply = await raw_request(served.port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n"
                                                   b"Connection: close\r\n\r\n")
            assert reply.startswith((b"HTTP/1.1 404", b"HTTP/1.1 400")), (target, reply[:40])
            assert b"root:" not in reply and PASSWD not in reply, target
        ok, link, fifo, directory = await get(served.port, b"/index.txt", b"/link.txt", b"/fifo",
                                              b"/sub")
        assert ok[0] == 200 and ok[2] == b"inside\n"
        assert link[0] == 200 and link[2] == b"inside\n"
        assert fifo[0] == 404 and directory[0] == 404
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_no_web_root_serves_no_files() -> None:
    async with trio.open_nursery() as nursery:
        served = await start(nursery, web_root=None)
        [(status, _, _)] = await get(served.port, b"/vnc.html")
        assert status == 404
        nursery.cancel_scope.cancel()


def test_resolve_static_is_pure() -> None:
    r = websocket.resolve_static
    assert r("/w", b"/") == "/w"
    assert r("/w", b"/a/./b//c?x=/../..") == "/w/a/b/c"
    assert r("/w", b"/a%20b") == "/w/a b"
    for bad in (b"/..", b"/a/../b", b"/%2e%2e", b"/a%2f..%2fb", b"/a%00", b"*", b"http://x/a"):
        assert r("/w", bad) is None, bad
    assert websocket.content_type("x/y.JS").startswith("text/javascript")
    assert websocket.content_type("x/noext") == "application/octet-stream"

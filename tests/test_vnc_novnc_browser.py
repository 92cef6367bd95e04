"""noVNC 1.3 (Debian's) in headless Chromium, served by vzfs.vnc.websocket alone — no
websockify: it connects with a password, draws the terminal with Tight, and what a
person types in the page reaches the console."""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Iterator
from typing import TypeVar

import numpy as np
import pytest
import trio

from tests.novnc_browser import NoVNC, novnc_url, require_browser
from tests.vnc_decoder import Decoder, Reader
from vzfs.terminal.emulator import Terminal
from vzfs.vnc import encodings as enc
from vzfs.vnc.render import Renderer
from vzfs.vnc.server import TerminalDisplay
from vzfs.vnc.websocket import WebSocketStream, serve_websocket

T = TypeVar("T")
TIMEOUT = 60
SECRET = "SECRET"


@pytest.fixture(scope="module")
def browser() -> Iterator[NoVNC]:
    require_browser()
    with NoVNC.start() as browser:
        yield browser


async def in_thread(fn: Callable[..., T], *args: object) -> T:
    """Selenium blocks: run it in a thread while the server runs in trio."""
    with trio.fail_after(TIMEOUT):
        return await trio.to_thread.run_sync(functools.partial(fn, *args))


class Recording(trio.abc.Stream):
    """Passes a stream through and keeps both directions, to read the RFB bytes after."""

    def __init__(self, inner: WebSocketStream) -> None:
        self.inner = inner
        self.socket = inner.socket
        self.from_client = bytearray()
        self.to_client = bytearray()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.to_client += data
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        data = await self.inner.receive_some(max_bytes)
        self.from_client += data
        return data

    async def aclose(self) -> None:
        await self.inner.aclose()


class Served:
    def __init__(self, display: TerminalDisplay) -> None:
        self.display = display
        self.typed = bytearray()
        self.sessions: list[Recording] = []
        self.port = 0

    async def handle(self, stream: WebSocketStream, password: str) -> None:
        recording = Recording(stream)
        self.sessions.append(recording)
        await self.display.serve_client(recording, password=password, on_input=self.typed.extend)

    async def wait_typed(self, expected: bytes) -> None:
        with trio.fail_after(TIMEOUT):
            while bytes(self.typed) != expected:
                assert expected.startswith(bytes(self.typed)), bytes(self.typed)
                await trio.sleep(0.02)


async def start(nursery: trio.Nursery, password: str) -> Served:
    served = Served(TerminalDisplay(Terminal(40, 12), Renderer(40, 12)))
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    served.port = listeners[0].socket.getsockname()[1]
    await nursery.start(serve_websocket, listeners[0],
                        functools.partial(served.handle, password=password))
    return served


def replay(session: Recording) -> tuple[list[int], Decoder]:
    """Read a VNC-auth session back: the client's SetEncodings list, and a decoder fed
    every server message (its ``encodings_seen`` and framebuffer)."""
    c = Reader(bytes(session.from_client))
    assert c.take(12) == b"RFB 003.008\n"
    assert c.u8() == 2                                    # VNC authentication
    c.take(16 + 1)                                        # response, ClientInit
    pixel_format, encodings = None, []
    while not c.at_end():
        kind = c.u8()
        if kind == 0:                                     # SetPixelFormat
            c.take(3)
            pixel_format = c.take(16)
        elif kind == 2:                                   # SetEncodings
            c.take(1)
            encodings = [c.s32() for _ in range(c.u16())]
        elif kind == 3:                                   # FramebufferUpdateRequest
            c.take(9)
        elif kind == 4:                                   # KeyEvent
            c.take(7)
        elif kind == 5:                                   # PointerEvent
            c.take(5)
        elif kind == 6:                                   # ClientCutText
            c.take(3)
            c.take(abs(c.s32()))
        else:
            raise AssertionError(f"unexpected client message {kind}")
    s = Reader(bytes(session.to_client))
    assert s.take(12) == b"RFB 003.008\n"
    s.take(s.u8())                                        # security types
    s.take(16)                                            # challenge
    assert s.u32() == 0                                   # SecurityResult OK
    width, height = s.u16(), s.u16()
    decoder = Decoder(s.take(16), width, height)
    s.take(s.u32())                                       # name
    if pixel_format is not None:
        decoder.set_pixel_format(pixel_format)
    while not s.at_end():
        if s.data[s.pos] == 3:
            # ServerCutText; a negative length is Extended Clipboard (noVNC asks for
            # it), which the in-repo decoder does not parse.
            s.take(4)
            s.take(abs(s.s32()))
        else:
            s.pos = decoder.server_message(s.data, s.pos)
    return encodings, decoder


@pytest.mark.trio
async def test_novnc_connects_renders_tight_and_types(browser: NoVNC) -> None:
    from selenium.webdriver.common.keys import Keys

    async with trio.open_nursery() as nursery:
        served = await start(nursery, password=SECRET)
        display = served.display
        display.feed(b"\x1b[1;32mvzfs\x1b[0m console\r\n\x1b[7mreverse\x1b[0m $ ")

        await in_thread(browser.open, novnc_url(served.port, password=SECRET))
        await in_thread(browser.wait_connected)
        assert await in_thread(browser.canvas_visible)
        assert await in_thread(browser.canvas_size) == (display.width, display.height)
        # Every pixel noVNC drew is the server's: the text, its colours, the cursor.
        shown = await in_thread(browser.wait_pixels, display.framebuffer.copy())
        assert len(np.unique(shown[:display.renderer.cell_height].reshape(-1, 3), axis=0)) > 1

        display.feed(b"\r\nhello from the pty")
        await in_thread(browser.wait_pixels, display.framebuffer.copy())

        await in_thread(browser.type, "ls -l /tmp" + Keys.ENTER)
        await served.wait_typed(b"ls -l /tmp\r")
        await in_thread(browser.chord, Keys.CONTROL, "c")
        await served.wait_typed(b"ls -l /tmp\r\x03")

        [session] = served.sessions
        encodings, decoder = replay(session)
        assert enc.choose_encoding(encodings) == enc.TIGHT, encodings
        assert enc.TIGHT in decoder.encodings_seen
        assert np.array_equal(decoder.rgb_components().astype(np.uint8), display.framebuffer)
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_novnc_with_a_wrong_password_shows_the_failure(browser: NoVNC) -> None:
    async with trio.open_nursery() as nursery:
        served = await start(nursery, password=SECRET)
        await in_thread(browser.open, novnc_url(served.port, password="wrong"))
        text, kind = await in_thread(browser.wait_failed)
        assert kind == "error" and "rejected" in text, text
        await in_thread(browser.type, "rm -rf /\n")
        await trio.sleep(0.5)
        assert served.typed == b"" and served.display.clients == 0
        [session] = served.sessions
        assert struct.unpack(">I", session.to_client[12 + 2 + 16:12 + 2 + 16 + 4]) == (1,)
        nursery.cancel_scope.cancel()

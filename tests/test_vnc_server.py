"""The trio VNC shell with real clients (vncdotool, asyncvnc) over loopback TCP."""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
import trio
from PIL import Image

from tests.vnc_decoder import DecodeError, Decoder
from vzfs.terminal.emulator import Terminal
from vzfs.vnc import encodings as enc
from vzfs.vnc.render import Renderer
from vzfs.vnc.server import PendingDamage, TerminalDisplay

T = TypeVar("T")
TIMEOUT = 20


class Served:
    """A display served on an ephemeral loopback port, recording what clients typed."""

    def __init__(self, display: TerminalDisplay, port: int) -> None:
        self.display = display
        self.port = port
        self.typed = bytearray()

    async def wait_typed(self, expected: bytes) -> None:
        with trio.fail_after(TIMEOUT):
            while bytes(self.typed) != expected:
                assert expected.startswith(bytes(self.typed)), bytes(self.typed)
                await trio.sleep(0.01)


async def start(nursery: trio.Nursery, password: str | None = None,
                display: TerminalDisplay | None = None) -> Served:
    display = display or TerminalDisplay()
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    served = Served(display, listeners[0].socket.getsockname()[1])
    await nursery.start(display.serve, listeners[0], password, served.typed.extend)
    return served


async def blocking(fn: Callable[[], T]) -> T:
    """Run a blocking client call in a thread while the server runs in trio."""
    with trio.fail_after(TIMEOUT):
        return await trio.to_thread.run_sync(fn)


def capture(client: Any, path: Path, incremental: bool = False) -> np.ndarray:
    client.captureScreen(str(path), incremental=incremental)
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.mark.trio
async def test_capture_matches_the_framebuffer(vncdotool_api: Any, tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        served = await start(nursery)
        served.display.feed(b"\x1b[1;32mvzfs\x1b[0m console\r\n$ ")
        renderer = served.display.renderer
        assert (served.display.width, served.display.height) == (80 * renderer.cell_width,
                                                                 25 * renderer.cell_height)

        def run() -> np.ndarray:
            client = vncdotool_api.connect(f"127.0.0.1::{served.port}", timeout=TIMEOUT)
            try:
                return capture(client, tmp_path / "a.png")
            finally:
                client.disconnect()

        image = await blocking(run)
        assert image.shape == (renderer.height, renderer.width, 3)
        assert np.array_equal(image, served.display.framebuffer)
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_fed_text_reaches_a_connected_client(vncdotool_api: Any, tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        served = await start(nursery)
        client = await blocking(lambda: vncdotool_api.connect(f"127.0.0.1::{served.port}",
                                                              timeout=TIMEOUT))
        try:
            before = await blocking(lambda: capture(client, tmp_path / "before.png"))
            served.display.feed(b"hello")
            # An incremental request is answered with the damage only, drawn on the
            # client's copy of the frame.
            after = await blocking(lambda: capture(client, tmp_path / "after.png", True))
            assert not np.array_equal(before, after)
            assert np.array_equal(after, served.display.framebuffer)
            # Scrolls merged over a burst; vncdotool asks for Raw only, so the copy is
            # sent as pixels — the client still ends up equal.
            served.display.feed(b"\r\n" * 30 + b"bottom")
            scrolled = await blocking(lambda: capture(client, tmp_path / "scrolled.png", True))
            assert np.array_equal(scrolled, served.display.framebuffer)
        finally:
            await blocking(client.disconnect)
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_typing_reaches_on_input(vncdotool_api: Any) -> None:
    async with trio.open_nursery() as nursery:
        served = await start(nursery)
        served.display.feed(b"\x1b[?1h")           # DECCKM: arrows become SS3

        def run() -> None:
            client = vncdotool_api.connect(f"127.0.0.1::{served.port}", timeout=TIMEOUT)
            try:
                for key in ["l", "s", "space", "-", "l", "enter", "ctrl-c", "up", "alt-x", "f5"]:
                    client.keyPress(key)
            finally:
                client.disconnect()

        await blocking(run)
        await served.wait_typed(b"ls -l\r\x03\x1bOA\x1bx\x1b[15~")
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_password(vncdotool_api: Any, tmp_path: Path) -> None:
    asyncvnc = pytest.importorskip("asyncvnc")
    async with trio.open_nursery() as nursery:
        served = await start(nursery, password="s3cret")

        def right() -> np.ndarray:
            client = vncdotool_api.connect(f"127.0.0.1::{served.port}", password="s3cret",
                                           timeout=TIMEOUT)
            try:
                return capture(client, tmp_path / "ok.png")
            finally:
                client.disconnect()

        assert np.array_equal(await blocking(right), served.display.framebuffer)

        async def wrong() -> None:
            async with asyncvnc.connect("127.0.0.1", served.port, password="wrong"):
                pass

        def attempt() -> BaseException | None:
            try:
                asyncio.run(asyncio.wait_for(wrong(), TIMEOUT))
            except Exception as exc:
                return exc
            return None

        assert isinstance(await blocking(attempt), (PermissionError, ValueError))
        assert served.display.clients == 0
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_two_clients_at_once(vncdotool_api: Any, tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        served = await start(nursery)
        connect = lambda: vncdotool_api.connect(f"127.0.0.1::{served.port}",  # noqa: E731
                                                timeout=TIMEOUT)
        one, two = await blocking(connect), await blocking(connect)
        try:
            await blocking(lambda: capture(one, tmp_path / "one0.png"))
            await blocking(lambda: capture(two, tmp_path / "two0.png"))
            assert served.display.clients == 2
            served.display.feed(b"shared screen")
            first = await blocking(lambda: capture(one, tmp_path / "one.png", True))
            second = await blocking(lambda: capture(two, tmp_path / "two.png", True))
            assert np.array_equal(first, served.display.framebuffer)
            assert np.array_equal(second, served.display.framebuffer)
            await blocking(lambda: one.keyPress("a"))
            await blocking(lambda: two.keyPress("b"))
            await served.wait_typed(b"ab")
        finally:
            await blocking(one.disconnect)
            await blocking(two.disconnect)
        with trio.fail_after(TIMEOUT):
            while served.display.clients:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_a_garbage_client_is_closed_and_others_go_on(vncdotool_api: Any, tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        served = await start(nursery)
        stream = await trio.open_tcp_stream("127.0.0.1", served.port)
        with trio.fail_after(TIMEOUT):
            assert await stream.receive_some(12) == b"RFB 003.008\n"
            await stream.send_all(b"HTTP/1.1 GET /\r\n\r\n")
            while await stream.receive_some(1024):
                pass
        await stream.aclose()

        def run() -> np.ndarray:
            client = vncdotool_api.connect(f"127.0.0.1::{served.port}", timeout=TIMEOUT)
            try:
                return capture(client, tmp_path / "a.png")
            finally:
                client.disconnect()

        assert np.array_equal(await blocking(run), served.display.framebuffer)
        nursery.cancel_scope.cancel()


def apply_client(client_fb: np.ndarray, server_fb: np.ndarray, pending: PendingDamage) -> None:
    """What a client does with an update: copies in order, then the rectangles' pixels."""
    copies, rects = pending.take()
    for c in copies:
        client_fb[c.y:c.y + c.height, c.x:c.x + c.width] = \
            client_fb[c.src_y:c.src_y + c.height, c.src_x:c.src_x + c.width].copy()
    for r in rects:
        client_fb[r.y:r.y + r.height, r.x:r.x + r.width] = server_fb[r.y:r.y + r.height,
                                                                     r.x:r.x + r.width]


@pytest.mark.parametrize("seed", range(20))
def test_merged_damage_brings_a_lagging_client_up_to_date(seed: int) -> None:
    """Several feeds (scrolls in both directions, writes, cursor moves) between two
    updates: the merged copies and rectangles still rebuild the frame exactly."""
    rng = np.random.default_rng(seed)
    terminal = Terminal(20, 8)
    display = TerminalDisplay(terminal, Renderer(20, 8))
    pending = PendingDamage(display.width, display.height)
    display._broadcast = pending.add  # type: ignore[method-assign]
    client_fb = display.framebuffer.copy()
    chunks = [b"line\r\n", b"\x1bM", b"\x1b[2;6r", b"\x1b[r", b"\x1b[5;3H", b"xyz",
              b"\x1b[2S", b"\x1b[T", b"\x1b[7m!\x1b[0m", b"\r\n\r\n"]
    for _ in range(12):
        for _ in range(int(rng.integers(1, 6))):
            display.feed(chunks[int(rng.integers(len(chunks)))] + bytes([65 + int(rng.integers(26))]))
        apply_client(client_fb, display.framebuffer, pending)
        assert np.array_equal(client_fb, display.framebuffer)


class RawClient:
    """A hand-written RFB 3.8 client (security None) over a trio stream, decoding with
    the in-repo decoder; it asks for the encodings a test chooses (CopyRect, DesktopName)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()
        self.decoder = Decoder(bytes(16), 0, 0)
        self.name = ""
        self.bells = 0

    async def read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            data = await self.stream.receive_some(65536)
            assert data, "server closed the connection"
            self.buffer += data
        out = bytes(self.buffer[:n])
        del self.buffer[:n]
        return out

    @classmethod
    async def connect(cls, port: int, encodings: list[int]) -> RawClient:
        self = cls(await trio.open_tcp_stream("127.0.0.1", port))
        assert await self.read(12) == b"RFB 003.008\n"
        await self.stream.send_all(b"RFB 003.008\n")
        count = (await self.read(1))[0]
        assert 1 in await self.read(count)
        await self.stream.send_all(b"\x01")
        assert await self.read(4) == b"\0\0\0\0"
        await self.stream.send_all(b"\x01")                       # ClientInit, shared
        width, height = struct.unpack(">HH", await self.read(4))
        pixel_format = await self.read(16)
        self.name = (await self.read(struct.unpack(">I", await self.read(4))[0])).decode()
        self.decoder = Decoder(pixel_format, width, height)
        await self.stream.send_all(struct.pack(f">BxH{len(encodings)}i", 2, len(encodings),
                                               *encodings))
        return self

    async def set_desktop_size(self, width: int, height: int) -> int:
        """Ask for a width×height framebuffer (one screen); the status of the server's
        answer: the next ExtendedDesktopSize record with reason 1, this client's request."""
        def answers() -> list[int]:
            # Records are (reason, status, width, height, screens).
            return [d[1] for d in self.decoder.desktop_sizes if d[0] == 1]
        before = len(answers())
        await self.stream.send_all(set_desktop_size(width, height))
        await self.request(incremental=True)
        while len(answers()) == before:
            await self.next_message()
        return answers()[before]

    async def request(self, incremental: bool) -> None:
        d = self.decoder
        await self.stream.send_all(struct.pack(">BBHHHH", 3, incremental, 0, 0, d.width, d.height))

    async def next_message(self) -> int:
        """Decode one server message; its type. Partial decodes are rolled back."""
        while True:
            if self.buffer:
                d = self.decoder
                saved = (d.fb.copy(), list(d.encodings_seen))
                try:
                    end = d.server_message(bytes(self.buffer))
                except DecodeError:
                    d.fb, d.encodings_seen = saved
                else:
                    kind = self.buffer[0]
                    del self.buffer[:end]
                    return kind
            data = await self.stream.receive_some(65536)
            assert data, "server closed the connection"
            self.buffer += data

    def rgb(self) -> np.ndarray:
        return self.decoder.rgb_components().astype(np.uint8)  # type: ignore[no-any-return]


async def small_display(nursery: trio.Nursery) -> Served:
    return await start(nursery, display=TerminalDisplay(Terminal(20, 6), Renderer(20, 6)))


@pytest.mark.trio
async def test_scrolls_are_copy_rects_and_updates_are_pulled() -> None:
    async with trio.open_nursery() as nursery:
        served = await small_display(nursery)
        with trio.fail_after(TIMEOUT):
            client = await RawClient.connect(served.port, [enc.COPY_RECT, enc.RAW])
            await client.request(incremental=False)
            assert await client.next_message() == 0
            assert np.array_equal(client.rgb(), served.display.framebuffer)
            served.display.feed(b"".join(b"\r\nline %d" % i for i in range(8)))
            await client.request(incremental=True)
            assert await client.next_message() == 0
            served.display.feed(b"\r\nscrolled\r\nby two")
            # Pull model: nothing is sent until the client asks.
            with trio.move_on_after(0.1):
                await client.next_message()
                raise AssertionError("an update came without a request")
            await client.request(incremental=True)
            assert await client.next_message() == 0
        assert enc.COPY_RECT in client.decoder.encodings_seen
        assert np.array_equal(client.rgb(), served.display.framebuffer)
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_title_bell_and_paste() -> None:
    async with trio.open_nursery() as nursery:
        served = await small_display(nursery)
        served.display.feed(b"\x1b]2;first\x07")
        with trio.fail_after(TIMEOUT):
            client = await RawClient.connect(served.port, [enc.RAW, enc.DESKTOP_NAME])
            assert client.name == "first"
            await client.request(incremental=False)
            assert await client.next_message() == 0
            served.display.feed(b"\x1b]2;second\x07\x07")
            assert await client.next_message() == 2          # Bell, unasked
            await client.request(incremental=True)
            assert await client.next_message() == 0
            assert client.decoder.name == "second"
            # ClientCutText is kept, not typed; Shift+Insert pastes it, bracketed
            # because the application asked (DECSET 2004).
            served.display.feed(b"\x1b[?2004h")
            text = b"echo hi\n\x1b[31m"
            await client.stream.send_all(struct.pack(">B3xI", 6, len(text)) + text)
            await trio.sleep(0.05)
            assert served.typed == b""
            shift, insert = 0xFFE1, 0xFF63
            for down, key in [(1, shift), (1, insert), (0, insert), (0, shift)]:
                await client.stream.send_all(struct.pack(">BBxxI", 4, down, key))
        await served.wait_typed(b"\x1b[200~echo hi\r[31m\x1b[201~")
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_a_client_that_stops_reading_slows_nobody(vncdotool_api: Any, tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        served = await start(nursery)
        with trio.fail_after(TIMEOUT):
            stuck = await RawClient.connect(served.port, [enc.RAW])
            # Ask for many raw full frames (1.15 MB each) and never read them.
            for _ in range(20):
                await stuck.request(incremental=False)
            await trio.sleep(0.1)
        for i in range(200):
            served.display.feed(b"output line %d\r\n" % i)

        def run() -> np.ndarray:
            client = vncdotool_api.connect(f"127.0.0.1::{served.port}", timeout=TIMEOUT)
            try:
                return capture(client, tmp_path / "a.png")
            finally:
                client.disconnect()

        assert np.array_equal(await blocking(run), served.display.framebuffer)
        with trio.fail_after(TIMEOUT):             # the stuck one is still connected
            while served.display.clients != 1:
                await trio.sleep(0.01)
        await stuck.stream.aclose()
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_blinking_text_blinks(autojump_clock: Any) -> None:
    display = TerminalDisplay(Terminal(20, 6), Renderer(20, 6))
    display.feed(b"\x1b[5mblink\x1b[25m\r\n")
    shown = display.framebuffer.copy()
    pending = PendingDamage(display.width, display.height)
    display._broadcast = pending.add  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(display.blink)
        await trio.sleep(0.9)
        assert not np.array_equal(display.framebuffer, shown)
        assert pending.take()[1]
        await trio.sleep(0.6)
        assert np.array_equal(display.framebuffer, shown)
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_asyncvnc_zlib_capture() -> None:
    asyncvnc = pytest.importorskip("asyncvnc")
    async with trio.open_nursery() as nursery:
        served = await start(nursery)
        served.display.feed(b"\x1b[44m blue \x1b[0m\r\n\xe2\x94\x8c\xe2\x94\x80\xe2\x94\x90")

        async def shot() -> np.ndarray:
            async with asyncvnc.connect("127.0.0.1", served.port) as client:
                return await asyncio.wait_for(client.screenshot(), TIMEOUT)  # type: ignore[no-any-return]

        rgba = await blocking(lambda: asyncio.run(shot()))
        assert np.array_equal(rgba[..., :3], served.display.framebuffer)
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_middle_click_pastes() -> None:
    async with trio.open_nursery() as nursery:
        served = await small_display(nursery)
        with trio.fail_after(TIMEOUT):
            client = await RawClient.connect(served.port, [enc.RAW])
            text = b"pasted"
            await client.stream.send_all(struct.pack(">B3xI", 6, len(text)) + text)
            for mask in [0, 2, 2, 0, 1, 0]:        # one middle press, then a left click
                await client.stream.send_all(struct.pack(">BBHH", 5, mask, 3, 3))
        await served.wait_typed(b"pasted")
        await trio.sleep(0.05)
        assert served.typed == b"pasted"
        nursery.cancel_scope.cancel()


def test_a_restored_display_shows_the_same_screen() -> None:
    display = TerminalDisplay(Terminal(30, 8), Renderer(30, 8))
    display.feed(b"\x1b]2;title\x07\x1b[31mred\x1b[0m\r\n\x1b[?25l" + b"x\r\n" * 10 + b"\x1b[?25hend")
    snapshot = json.loads(json.dumps(display.snapshot()))
    restored = TerminalDisplay.restore(snapshot)
    assert restored.terminal.title == "title"
    assert np.array_equal(restored.framebuffer, display.framebuffer)


@pytest.mark.trio
async def test_hostile_streams_close_only_their_client() -> None:
    rng = np.random.default_rng(5)
    async with trio.open_nursery() as nursery:
        served = await small_display(nursery)
        for _ in range(20):
            with trio.fail_after(TIMEOUT):
                client = await RawClient.connect(served.port, [enc.RAW])
                garbage = rng.integers(0, 256, int(rng.integers(1, 4096)), dtype=np.uint8)
                try:
                    # Message type 7 is unknown to rfbproto: the server must close.
                    await client.stream.send_all(b"\x07" + garbage.tobytes())
                    while await client.stream.receive_some(65536):
                        pass
                except trio.BrokenResourceError:
                    pass
                await client.stream.aclose()
        with trio.fail_after(TIMEOUT):
            client = await RawClient.connect(served.port, [enc.RAW])
            await client.request(incremental=False)
            assert await client.next_message() == 0
            assert np.array_equal(client.rgb(), served.display.framebuffer)
        nursery.cancel_scope.cancel()


def set_desktop_size(width: int, height: int) -> bytes:
    """rfbproto §SetDesktopSize with one screen covering the framebuffer."""
    return struct.pack(">BxHHBxIHHHHI", 251, width, height, 1, 0, 0, 0, width, height, 0)


@pytest.mark.trio
async def test_set_desktop_size_resizes_the_terminal_exactly() -> None:
    resized: list[tuple[int, int]] = []
    display = TerminalDisplay(Terminal(20, 6), Renderer(20, 6), on_resize=lambda c, r: resized.append((c, r)))
    display.feed(b"keep me")
    async with trio.open_nursery() as nursery:
        served = await start(nursery, display=display)
        with trio.fail_after(TIMEOUT):
            asker = await RawClient.connect(served.port, [enc.RAW, enc.EXTENDED_DESKTOP_SIZE])
            other = await RawClient.connect(served.port, [enc.RAW, enc.DESKTOP_SIZE])
            for client in (asker, other):
                await client.request(incremental=False)
                while client.decoder.encodings_seen.count(enc.RAW) == 0:
                    await client.next_message()
            # Not a multiple of the 8x16 cell: the framebuffer is exactly this, padded.
            assert await asker.set_desktop_size(333, 170) == enc.STATUS_OK
            assert (asker.decoder.width, asker.decoder.height) == (333, 170)
            assert resized == [(41, 10)]
            assert (display.terminal.columns, display.terminal.lines) == (41, 10)
            # The other client is told the new size (DesktopSize) and gets the frame.
            await other.request(incremental=True)
            while (other.decoder.width, other.decoder.height) != (333, 170):
                await other.next_message()
            for client in (asker, other):
                await client.request(incremental=False)
                await client.next_message()
                assert np.array_equal(client.rgb(), display.framebuffer)
            assert display.terminal.text().startswith("keep me")
            # Too small for 2x2 cells: refused (invalid layout), nothing changes.
            assert await asker.set_desktop_size(12, 20) == enc.STATUS_INVALID_LAYOUT
            assert resized == [(41, 10)] and display.width == 333
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_set_desktop_size_is_refused_without_a_pty_to_resize() -> None:
    async with trio.open_nursery() as nursery:
        served = await small_display(nursery)
        with trio.fail_after(TIMEOUT):
            client = await RawClient.connect(served.port, [enc.RAW, enc.EXTENDED_DESKTOP_SIZE])
            await client.request(incremental=False)
            await client.next_message()
            assert await client.set_desktop_size(400, 200) == enc.STATUS_PROHIBITED
            assert served.display.width == 160
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_load_replaces_the_screen_and_follows_its_size() -> None:
    async with trio.open_nursery() as nursery:
        served = await small_display(nursery)
        with trio.fail_after(TIMEOUT):
            client = await RawClient.connect(served.port, [enc.RAW, enc.DESKTOP_SIZE])
            await client.request(incremental=False)
            await client.next_message()
            truth = Terminal(30, 8)
            truth.feed(b"from the controller")
            served.display.load(truth.snapshot())
            await client.request(incremental=True)
            while (client.decoder.width, client.decoder.height) != (240, 128):
                await client.next_message()
            await client.request(incremental=False)
            await client.next_message()
            assert np.array_equal(client.rgb(), served.display.framebuffer)
            assert served.display.terminal.text() == truth.text()
        nursery.cancel_scope.cancel()

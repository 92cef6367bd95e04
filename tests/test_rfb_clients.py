"""Real VNC clients (vncdotool, asyncvnc) against the sans-I/O connection behind a throwaway socket loop.

The loop below is test scaffolding only — the product's shell is the trio one.
It answers every FramebufferUpdateRequest with the whole frame when
non-incremental and stays quiet otherwise (nothing changes).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from tests.test_encodings import terminal_frame
from vzfs.vnc.rfb import (
    CLOSED_EVENT, NEED_DATA, AuthFailed, ClientInitDone, FramebufferUpdateRequest, KeyEvent,
    ProtocolError, RFBServerConnection,
)

FRAME = terminal_frame(5, 20, seed=21)   # 180×80


class LoopbackServer:
    def __init__(self, password: str | None = None) -> None:
        self.password = password
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.events: list[object] = []
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                sock, _addr = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._client, args=(sock,), daemon=True).start()

    def _client(self, sock: socket.socket) -> None:
        conn = RFBServerConnection(self.password)
        sock.settimeout(10)
        try:
            sock.sendall(conn.data_to_send())
            while True:
                data = sock.recv(65536)
                conn.receive_data(data)
                while True:
                    event = conn.next_event()
                    if event is NEED_DATA:
                        break
                    if event is CLOSED_EVENT:
                        sock.sendall(conn.data_to_send())
                        return
                    self.events.append(event)
                    if isinstance(event, ClientInitDone):
                        sock.sendall(conn.send_server_init(FRAME.shape[1], FRAME.shape[0], "vzfs test"))
                    elif isinstance(event, AuthFailed):
                        sock.sendall(conn.data_to_send())
                        return
                    elif isinstance(event, FramebufferUpdateRequest) and not event.incremental:
                        sock.sendall(conn.data_to_send())
                        sock.sendall(conn.send_framebuffer_update(
                            FRAME, [(event.x, event.y, event.width, event.height)]))
                sock.sendall(conn.data_to_send())
        except (OSError, ProtocolError) as exc:
            self.errors.append(exc)
        finally:
            sock.close()

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    s = LoopbackServer()
    yield s
    s.close()


@pytest.fixture
def password_server() -> Iterator[LoopbackServer]:
    s = LoopbackServer("s3cret")
    yield s
    s.close()


def rgb_of(frame: np.ndarray) -> np.ndarray:
    return np.stack([(frame >> 16) & 0xFF, (frame >> 8) & 0xFF, frame & 0xFF], axis=-1).astype(np.uint8)


def test_vncdotool_captures_and_types(vncdotool_api: object, server: LoopbackServer, tmp_path: object) -> None:
    api = vncdotool_api
    client = api.connect(f"127.0.0.1::{server.port}", timeout=10)  # type: ignore[attr-defined]
    try:
        path = f"{tmp_path}/capture.png"
        client.captureScreen(path)
        client.keyPress("a")
    finally:
        client.disconnect()
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape == (80, 180, 3)
    assert np.array_equal(image, rgb_of(FRAME))
    deadline = time.monotonic() + 10          # the server thread may still be reading
    while KeyEvent(True, ord("a")) not in server.events and time.monotonic() < deadline:
        time.sleep(0.01)
    assert KeyEvent(True, ord("a")) in server.events
    assert not server.errors


def test_vncdotool_with_password(vncdotool_api: object, password_server: LoopbackServer, tmp_path: object) -> None:
    api = vncdotool_api
    client = api.connect(f"127.0.0.1::{password_server.port}", password="s3cret", timeout=10)  # type: ignore[attr-defined]
    try:
        path = f"{tmp_path}/capture.png"
        client.captureScreen(path)
    finally:
        client.disconnect()
    assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), rgb_of(FRAME))


def test_asyncvnc_zlib_screenshot(server: LoopbackServer) -> None:
    asyncvnc = pytest.importorskip("asyncvnc")

    async def shot() -> np.ndarray:
        async with asyncvnc.connect("127.0.0.1", server.port) as client:
            return await asyncio.wait_for(client.screenshot(), 10)  # type: ignore[no-any-return]

    rgba = asyncio.run(shot())
    assert rgba.shape == (80, 180, 4)
    assert np.array_equal(rgba[..., :3], rgb_of(FRAME))
    assert not server.errors


def test_asyncvnc_wrong_password_rejected(password_server: LoopbackServer) -> None:
    asyncvnc = pytest.importorskip("asyncvnc")

    async def attempt() -> None:
        async with asyncvnc.connect("127.0.0.1", password_server.port, password="wrong"):
            pass

    with pytest.raises((PermissionError, ValueError)):
        asyncio.run(attempt())
    deadline = time.monotonic() + 10
    while not any(isinstance(e, AuthFailed) for e in password_server.events) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert any(isinstance(e, AuthFailed) for e in password_server.events)


def test_asyncvnc_right_password(password_server: LoopbackServer) -> None:
    asyncvnc = pytest.importorskip("asyncvnc")

    async def shot() -> np.ndarray:
        async with asyncvnc.connect("127.0.0.1", password_server.port, password="s3cret") as client:
            return await asyncio.wait_for(client.screenshot(), 10)  # type: ignore[no-any-return]

    assert np.array_equal(asyncio.run(shot())[..., :3], rgb_of(FRAME))

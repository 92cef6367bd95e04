"""The RFB server state machine against a minimal in-memory client, byte for byte per rfbproto."""

from __future__ import annotations

import ast
import pathlib
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

from tests.test_encodings import expected_client_values, terminal_frame
from tests.vnc_decoder import Decoder
from vzfs.vnc import encodings as enc
from vzfs.vnc import rfb
from vzfs.vnc.rfb import (
    CLOSED_EVENT, NEED_DATA, AuthFailed, AuthSucceeded, AuthThrottle, ClientCutText, ClientInitDone,
    FramebufferUpdateRequest, KeyEvent, LocalProtocolError, PointerEvent, ProtocolError,
    RFBServerConnection, SetDesktopSize, SetEncodings, SetPixelFormat, State,
)

CHALLENGE = bytes(range(16))
NATIVE_PF = bytes((32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0))


def fixed_random(n: int) -> bytes:
    return CHALLENGE[:n]


def events(conn: RFBServerConnection) -> list[object]:
    out = []
    while True:
        e = conn.next_event()
        if e is NEED_DATA or e is CLOSED_EVENT:
            return out
        out.append(e)


def exchange(conn: RFBServerConnection, data: bytes) -> tuple[list[object], bytes]:
    conn.receive_data(data)
    evs = events(conn)
    return evs, conn.data_to_send()


def connect(version: bytes = b"RFB 003.008\n", password: str | None = None,
            encodings: tuple[int, ...] = ()) -> RFBServerConnection:
    """A connection in NORMAL with a 90×64 framebuffer named 'dom'."""
    conn = RFBServerConnection(password, random_bytes=fixed_random)
    assert conn.data_to_send() == b"RFB 003.008\n"
    client = version
    if version >= b"RFB 003.007\n":
        client += b"\x02" if password else b"\x01"
    if password:
        client += rfb.vnc_auth_response(password, CHALLENGE)
    client += b"\x01"
    evs, _ = exchange(conn, client)
    assert evs[-1] == ClientInitDone(shared=True)
    conn.send_server_init(90, 64, "dom")
    if encodings:
        exchange(conn, struct.pack(f">BxH{len(encodings)}i", 2, len(encodings), *encodings))
    return conn


# ------------------------------------------------------------------ handshake


def test_handshake_3_8_none_exact_bytes() -> None:
    conn = RFBServerConnection(random_bytes=fixed_random)
    assert conn.data_to_send() == b"RFB 003.008\n"
    assert exchange(conn, b"RFB 003.008\n") == ([], b"\x01\x01")          # one type: None
    assert exchange(conn, b"\x01") == ([], b"\x00\x00\x00\x00")           # SecurityResult OK
    assert exchange(conn, b"\x00") == ([ClientInitDone(shared=False)], b"")
    assert conn.state is State.SERVER_INIT
    init = conn.send_server_init(720, 400, "web1")
    assert init == b"\x02\xd0\x01\x90" + NATIVE_PF + b"\x00\x00\x00\x04web1"
    assert conn.state is State.NORMAL


def test_handshake_3_7_none_has_no_security_result() -> None:
    conn = RFBServerConnection(random_bytes=fixed_random)
    conn.data_to_send()
    assert exchange(conn, b"RFB 003.007\n") == ([], b"\x01\x01")
    assert exchange(conn, b"\x01\x01") == ([ClientInitDone(shared=True)], b"")


def test_handshake_3_3_none_server_decides() -> None:
    conn = RFBServerConnection(random_bytes=fixed_random)
    conn.data_to_send()
    assert exchange(conn, b"RFB 003.003\n") == ([], b"\x00\x00\x00\x01")
    assert exchange(conn, b"\x01") == ([ClientInitDone(shared=True)], b"")


@pytest.mark.parametrize("version", [b"RFB 003.003\n", b"RFB 003.007\n", b"RFB 003.008\n"])
def test_vnc_auth_right_password(version: bytes) -> None:
    conn = RFBServerConnection("s3cret", random_bytes=fixed_random)
    conn.data_to_send()
    evs, out = exchange(conn, version)
    if version == b"RFB 003.003\n":
        assert out == b"\x00\x00\x00\x02" + CHALLENGE
    else:
        assert out == b"\x01\x02"
        assert exchange(conn, b"\x02") == ([], CHALLENGE)
    evs, out = exchange(conn, rfb.vnc_auth_response("s3cret", CHALLENGE))
    assert evs == [AuthSucceeded()] and out == b"\x00\x00\x00\x00"
    assert exchange(conn, b"\x01") == ([ClientInitDone(shared=True)], b"")


@pytest.mark.parametrize("version,failure", [
    (b"RFB 003.003\n", b"\x00\x00\x00\x01"),
    (b"RFB 003.007\n", b"\x00\x00\x00\x01"),
    (b"RFB 003.008\n", b"\x00\x00\x00\x01\x00\x00\x00\x15Authentication failed"),
])
def test_vnc_auth_wrong_password(version: bytes, failure: bytes) -> None:
    conn = RFBServerConnection("s3cret", random_bytes=fixed_random)
    conn.data_to_send()
    exchange(conn, version if version == b"RFB 003.003\n" else version + b"\x02")
    evs, out = exchange(conn, rfb.vnc_auth_response("guess", CHALLENGE) + b"\x01")
    assert evs == [AuthFailed("Authentication failed")]
    assert out == failure
    assert conn.state is State.CLOSED
    assert conn.next_event() is CLOSED_EVENT


def test_security_type_not_offered() -> None:
    conn = RFBServerConnection("pw", random_bytes=fixed_random)
    conn.data_to_send()
    evs, out = exchange(conn, b"RFB 003.008\n\x01")     # None, but only VNC auth offered
    assert evs == [AuthFailed("security type 1 was not offered")]
    assert out == b"\x01\x02" + b"\x00\x00\x00\x01" + struct.pack(">I", 31) + b"security type 1 was not offered"


@pytest.mark.parametrize("sent,version", [
    (b"RFB 003.005\n", (3, 3)), (b"RFB 003.004\n", (3, 3)), (b"RFB 003.006\n", (3, 3)),
    (b"RFB 003.889\n", (3, 8)), (b"RFB 003.014\n", (3, 8)), (b"RFB 003.007\n", (3, 7)),
])
def test_unknown_3_x_versions(sent: bytes, version: tuple[int, int]) -> None:
    conn = RFBServerConnection()
    conn.receive_data(sent)
    conn.next_event()
    assert conn.version == version


@pytest.mark.parametrize("sent", [b"RFB 004.000\n", b"GET / HTTP/1.1\r\n", b"RFB 003.00x\n", b"\0" * 12])
def test_bad_versions_are_protocol_errors(sent: bytes) -> None:
    conn = RFBServerConnection()
    conn.receive_data(sent)
    with pytest.raises(ProtocolError):
        conn.next_event()
    assert conn.state is State.CLOSED
    assert conn.next_event() is CLOSED_EVENT


@pytest.mark.parametrize("version,expected", [
    (b"RFB 003.008\n", b"\x00" + struct.pack(">I", 11) + b"Go away now"),
    (b"RFB 003.003\n", b"\x00\x00\x00\x00" + struct.pack(">I", 11) + b"Go away now"),
])
def test_refused_connection(version: bytes, expected: bytes) -> None:
    conn = RFBServerConnection(refuse_reason="Go away now")
    conn.data_to_send()
    assert exchange(conn, version) == ([AuthFailed("Go away now", refused=True)], expected)
    assert conn.state is State.CLOSED


def test_handshake_byte_by_byte_and_pipelined() -> None:
    client = (b"RFB 003.008\n\x02" + rfb.vnc_auth_response("pw", CHALLENGE) + b"\x01")
    conn = RFBServerConnection("pw", random_bytes=fixed_random)
    seen: list[object] = []
    for b in client:
        conn.receive_data(bytes((b,)))
        seen += events(conn)
    assert seen == [AuthSucceeded(), ClientInitDone(shared=True)]
    assert conn.data_to_send() == b"RFB 003.008\n\x01\x02" + CHALLENGE + b"\0\0\0\0"


def test_messages_pipelined_before_server_init_wait_for_it() -> None:
    conn = RFBServerConnection()
    conn.receive_data(b"RFB 003.008\n\x01\x01" + struct.pack(">BBxxI", 4, 1, 0x61))
    assert events(conn) == [ClientInitDone(shared=True)]
    conn.send_server_init(10, 10, "x")
    assert events(conn) == [KeyEvent(True, 0x61)]


def test_handshake_buffer_is_bounded() -> None:
    conn = RFBServerConnection()
    conn.receive_data(b"RFB 003.008\n\x01")         # waiting for ServerInit from here on
    conn.next_event()
    conn.receive_data(b"\x04" * (rfb.MAX_HANDSHAKE_BUFFER + 1))
    with pytest.raises(ProtocolError):
        conn.next_event()
    assert conn.state is State.CLOSED


def test_eof_closes() -> None:
    conn = connect()
    conn.receive_data(b"")
    assert conn.next_event() is CLOSED_EVENT


def test_server_init_out_of_order_is_local_error() -> None:
    conn = RFBServerConnection()
    with pytest.raises(LocalProtocolError):
        conn.send_server_init(1, 1, "x")
    with pytest.raises(LocalProtocolError):
        conn.send_bell()


# ------------------------------------------------------------------ VNC Authentication


def test_vnc_auth_agrees_with_vncdotool() -> None:
    vnc = pytest.importorskip("vncdotool.rfb")
    rng = np.random.default_rng(5)
    for password in ["", "a", "password", "longer-than-eight", "s3cret!"]:
        challenge = rng.integers(0, 256, 16, dtype=np.uint8).tobytes()
        assert rfb.vnc_auth_response(password, challenge) == vnc.des_encrypt(vnc._vnc_des(password), challenge)


def test_auth_throttle() -> None:
    t = AuthThrottle(base=1.0, max_delay=8.0, refuse_after=5, forget_after=100.0, max_peers=2)
    assert [t.record_failure("a", 0.0) for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert t.refuse_reason("a", 1.0) is not None
    assert t.refuse_reason("b", 1.0) is None
    assert t.refuse_reason("a", 200.0) is None            # forgotten after quiet time
    t.record_failure("a", 300.0)
    t.record_success("a")
    assert t.record_failure("a", 301.0) == 1.0
    t.record_failure("b", 302.0)
    t.record_failure("c", 303.0)                          # evicts the oldest peer, "a"
    assert t.record_failure("a", 304.0) == 1.0


# ------------------------------------------------------------------ client messages


def feed_exact(conn: RFBServerConnection, message: bytes) -> object:
    """h11's tr(): whole, byte by byte, and with a trailing message after it."""
    conn.receive_data(message + struct.pack(">BBHH", 5, 0, 1, 1))
    first = events(conn)
    assert first[-1] == PointerEvent(0, 1, 1) and len(first) == 2
    for b in message:
        assert conn.next_event() is NEED_DATA
        conn.receive_data(bytes((b,)))
    second = events(conn)
    assert second == first[:1]
    return first[0]


def test_key_pointer_and_request() -> None:
    conn = connect()
    assert feed_exact(conn, struct.pack(">BBxxI", 4, 1, 0xFF0D)) == KeyEvent(True, 0xFF0D)
    assert feed_exact(conn, struct.pack(">BBHH", 5, 0x81, 10, 20)) == PointerEvent(0x81, 10, 20)
    # rfbproto §FramebufferUpdateRequest: cropped to 90×64
    assert (feed_exact(conn, struct.pack(">BBHHHH", 3, 1, 80, 60, 100, 100))
            == FramebufferUpdateRequest(True, 80, 60, 10, 4))
    assert (feed_exact(conn, struct.pack(">BBHHHH", 3, 0, 500, 500, 1, 1))
            == FramebufferUpdateRequest(False, 90, 64, 0, 0))


def test_set_encodings_chooses_first_supported() -> None:
    conn = connect()
    msg = struct.pack(">BxH5i", 2, 5, enc.CURSOR, 2, enc.ZRLE, enc.TIGHT, enc.COPY_RECT)
    assert feed_exact(conn, msg) == SetEncodings((enc.CURSOR, 2, enc.ZRLE, enc.TIGHT, enc.COPY_RECT), enc.ZRLE)
    assert conn.encoding == enc.ZRLE


def test_set_pixel_format_changes_encoding_format() -> None:
    conn = connect()
    pf = enc.PixelFormat(16, 16, True, True, 31, 63, 31, 11, 5, 0)
    assert feed_exact(conn, b"\0\0\0\0" + pf.pack()) == SetPixelFormat(pf)
    assert conn.encoder.pixel_format == pf


def test_colour_map_format_sends_colour_map() -> None:
    conn = connect()
    evs, out = exchange(conn, b"\0\0\0\0" + bytes((8, 8, 0, 0)) + bytes(12))
    assert evs == [SetPixelFormat(enc.COLOUR_MAP_BGR233)]
    assert out[:6] == b"\x01\x00\x00\x00\x01\x00" and len(out) == 6 + 256 * 6


def test_client_cut_text_latin1() -> None:
    conn = connect()
    assert feed_exact(conn, struct.pack(">B3xI", 6, 4) + "caf\xe9".encode("latin-1")) == ClientCutText("café")


def test_set_desktop_size_message() -> None:
    conn = connect()
    msg = struct.pack(">BxHHBx", 251, 800, 600, 1) + enc.Screen(7, 0, 0, 800, 600, 0).pack()
    assert feed_exact(conn, msg) == SetDesktopSize(800, 600, (enc.Screen(7, 0, 0, 800, 600, 0),))


@pytest.mark.parametrize("message", [
    struct.pack(">BxH", 2, rfb.MAX_ENCODINGS + 1),                  # too many encodings
    struct.pack(">B3xI", 6, rfb.MAX_CUT_TEXT + 1),                  # cut text too long
    struct.pack(">B3xi", 6, -5),                                    # negative without Extended Clipboard
    b"\x07",                                                        # unknown message type
    b"\xfe",
    b"\0\0\0\0" + bytes((24, 24, 0, 1)) + bytes(12),                # 24 bpp
])
def test_hostile_lengths_rejected_from_the_header(message: bytes) -> None:
    conn = connect()
    conn.receive_data(message)
    with pytest.raises(ProtocolError):
        conn.next_event()
    assert conn.next_event() is CLOSED_EVENT


# ------------------------------------------------------------------ Extended Clipboard


def ext_clip(flags: int, payload: bytes = b"") -> bytes:
    body = struct.pack(">I", flags) + payload
    return struct.pack(">B3xi", 6, -len(body)) + body


def test_extended_clipboard_both_ways() -> None:
    conn = RFBServerConnection()
    conn.receive_data(b"RFB 003.008\n\x01\x01")
    events(conn)
    conn.send_server_init(10, 10, "x")
    conn.data_to_send()
    evs, out = exchange(conn, struct.pack(">BxHi", 2, 1, enc.EXTENDED_CLIPBOARD))
    # server caps: ServerCutText with negative length, caps|request|peek|notify|provide + text, max size
    assert out == struct.pack(">B3xiII", 3, -8, 0x1F000001, rfb.MAX_CUT_TEXT)
    evs, out = exchange(conn, ext_clip(rfb.CLIP_CAPS | rfb.CLIP_REQUEST | rfb.CLIP_NOTIFY
                                       | rfb.CLIP_PROVIDE | rfb.CLIP_TEXT, struct.pack(">I", 1 << 20)))
    assert evs == [] and out == b""
    # client notify → server requests text → client provides → event
    evs, out = exchange(conn, ext_clip(rfb.CLIP_NOTIFY | rfb.CLIP_TEXT))
    assert out == struct.pack(">B3xiI", 3, -4, rfb.CLIP_REQUEST | rfb.CLIP_TEXT)
    text = "héllo\r\nwörld ✓\0".encode("utf-8")
    provide = zlib.compress(struct.pack(">I", len(text)) + text)
    evs, out = exchange(conn, ext_clip(rfb.CLIP_PROVIDE | rfb.CLIP_TEXT, provide))
    assert evs == [ClientCutText("héllo\nwörld ✓")]
    # server clipboard: notify, then provide on request
    msg = conn.send_server_cut_text("ünïcode\nline")
    assert msg == struct.pack(">B3xiI", 3, -4, rfb.CLIP_NOTIFY | rfb.CLIP_TEXT)
    evs, out = exchange(conn, ext_clip(rfb.CLIP_REQUEST | rfb.CLIP_TEXT))
    flags = struct.unpack_from(">I", out, 8)[0]
    assert out[0] == 3 and flags == rfb.CLIP_PROVIDE | rfb.CLIP_TEXT
    data = zlib.decompress(out[12:])
    size = struct.unpack_from(">I", data)[0]
    assert data[4:4 + size] == "ünïcode\r\nline\0".encode("utf-8")


def test_extended_clipboard_bomb_is_rejected() -> None:
    conn = connect(encodings=(enc.EXTENDED_CLIPBOARD,))
    bomb = zlib.compress(struct.pack(">I", 50 << 20) + bytes(50 << 20))
    conn.receive_data(ext_clip(rfb.CLIP_PROVIDE | rfb.CLIP_TEXT, bomb))
    with pytest.raises(ProtocolError):
        events(conn)


def test_legacy_server_cut_text() -> None:
    conn = connect()
    assert conn.send_server_cut_text("a€b") == struct.pack(">B3xI", 3, 3) + b"a?b"
    assert conn.send_bell() == b"\x02"


# ------------------------------------------------------------------ updates


def client_for(conn: RFBServerConnection) -> Decoder:
    return Decoder(NATIVE_PF, conn.width, conn.height)


def decode_all(decoder: Decoder, data: bytes) -> None:
    pos = 0
    while pos < len(data):
        pos = decoder.server_message(data, pos)


@pytest.mark.parametrize("encoding", [enc.RAW, enc.ZLIB, enc.HEXTILE, enc.ZRLE, enc.TIGHT],
                         ids=lambda e: enc.ENCODING_NAMES[e])
def test_first_update_and_scroll(encoding: int) -> None:
    conn = connect(encodings=(encoding, enc.COPY_RECT, enc.CURSOR, enc.EXTENDED_DESKTOP_SIZE,
                              enc.DESKTOP_SIZE, enc.DESKTOP_NAME, enc.LAST_RECT))
    client = client_for(conn)
    evs, _ = exchange(conn, struct.pack(">BBHHHH", 3, 0, 0, 0, 90, 64))
    assert evs == [FramebufferUpdateRequest(False, 0, 0, 90, 64)]
    fb = terminal_frame(4, 10, seed=11)
    out = conn.send_framebuffer_update(fb, [(0, 0, 90, 64)])
    decode_all(client, out)
    assert client.desktop_sizes == [(0, 0, 90, 64, [(0, 0, 0, 90, 64, 0)])]
    assert client.name == "dom" and client.cursor is not None
    assert np.array_equal(client.fb, fb)
    # scroll by one 16-px row: CopyRect + the new bottom row
    fb2 = np.vstack([fb[16:], terminal_frame(1, 10, seed=12)])
    out = conn.send_framebuffer_update(fb2, [(0, 48, 90, 16)], [(0, 0, 90, 48, 0, 16)])
    decode_all(client, out)
    assert client.encodings_seen[-2:-1] == [enc.COPY_RECT] or enc.COPY_RECT in client.encodings_seen
    assert np.array_equal(client.fb, fb2)


def test_copies_without_copy_rect_are_encoded() -> None:
    conn = connect(encodings=(enc.HEXTILE,))
    client = client_for(conn)
    fb = terminal_frame(4, 10, seed=1)
    decode_all(client, conn.send_framebuffer_update(fb, [(0, 0, 90, 64)]))
    fb2 = np.roll(fb, -16, axis=0)
    decode_all(client, conn.send_framebuffer_update(fb2, [(0, 48, 90, 16)], [(0, 0, 90, 48, 0, 16)]))
    assert enc.COPY_RECT not in client.encodings_seen
    assert np.array_equal(client.fb, fb2)


def test_set_desktop_size_accepted_and_refused() -> None:
    conn = connect(encodings=(enc.ZRLE, enc.EXTENDED_DESKTOP_SIZE, enc.DESKTOP_SIZE))
    client = client_for(conn)
    screen = enc.Screen(0, 0, 0, 100, 48, 0)
    evs, _ = exchange(conn, struct.pack(">BxHHBx", 251, 100, 48, 1) + screen.pack())
    request = evs[0]
    assert isinstance(request, SetDesktopSize)
    conn.reply_set_desktop_size(request, enc.STATUS_OK)
    fb = terminal_frame(3, 12, seed=2)[:, :100]
    assert conn.has_pending_update
    decode_all(client, conn.send_framebuffer_update(fb))
    assert client.desktop_sizes[-1] == (1, 0, 100, 48, [(0, 0, 0, 100, 48, 0)])
    assert np.array_equal(client.fb, fb)                  # whole new frame follows
    conn.reply_set_desktop_size(request, enc.STATUS_PROHIBITED)
    decode_all(client, conn.send_framebuffer_update(fb))
    assert client.desktop_sizes[-1][:2] == (1, 1)
    with pytest.raises(LocalProtocolError):
        conn.send_framebuffer_update(np.zeros((10, 10), dtype=np.uint32))


def test_desktop_size_only_client_and_other_client_reason() -> None:
    conn = connect(encodings=(enc.RAW, enc.DESKTOP_SIZE))
    client = client_for(conn)
    conn.resize(90, 64)                                   # no change: nothing to say
    assert not conn.has_pending_update
    conn.resize(45, 32)
    fb = terminal_frame(2, 5, seed=3)
    decode_all(client, conn.send_framebuffer_update(fb))
    assert client.desktop_sizes == [(0, 0, 45, 32, [])] and np.array_equal(client.fb, fb)
    other = connect(encodings=(enc.RAW, enc.EXTENDED_DESKTOP_SIZE))
    other.resize(45, 32, enc.REASON_OTHER_CLIENT)
    client2 = client_for(other)
    decode_all(client2, other.send_framebuffer_update(fb))
    assert client2.desktop_sizes[-1][:4] == (2, 0, 45, 32)


def test_update_in_client_pixel_format_and_cursor_resent() -> None:
    conn = connect(encodings=(enc.TIGHT, enc.CURSOR))
    pf = enc.PixelFormat(16, 16, False, True, 31, 63, 31, 11, 5, 0)
    exchange(conn, b"\0\0\0\0" + pf.pack())
    assert conn.has_pending_update
    client = Decoder(pf.pack(), 90, 64)
    fb = terminal_frame(4, 10, seed=8)
    decode_all(client, conn.send_framebuffer_update(fb, [(0, 0, 90, 64)]))
    assert np.array_equal(client.fb, expected_client_values(fb, pf))
    assert client.cursor is not None and len(client.cursor[4]) == 12 * 19


def test_desktop_name_change() -> None:
    conn = connect(encodings=(enc.RAW, enc.DESKTOP_NAME))
    client = client_for(conn)
    decode_all(client, conn.send_framebuffer_update(np.zeros((64, 90), dtype=np.uint32)))
    conn.set_desktop_name("vim README — dom")
    assert conn.has_pending_update
    decode_all(client, conn.send_framebuffer_update(np.zeros((64, 90), dtype=np.uint32)))
    assert client.name == "vim README — dom"


# ------------------------------------------------------------------ the import rule


PURE = ["vzfs/vnc/rfb.py", "vzfs/vnc/encodings.py", "vzfs/vnc/errors.py"]
FORBIDDEN = {"trio", "socket", "pyfuse3", "cffi", "_cffi_backend", "asyncio", "selectors"}


@pytest.mark.parametrize("path", PURE)
def test_pure_modules_import_no_io(path: str) -> None:
    root = pathlib.Path(__file__).resolve().parent.parent
    tree = ast.parse((root / path).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        for name in names:
            assert name.split(".")[0] not in FORBIDDEN, f"{path} imports {name}"
            assert not name.startswith("vzfs.kernel"), f"{path} imports {name}"


def test_importing_the_protocol_loads_no_io_framework() -> None:
    root = pathlib.Path(__file__).resolve().parent.parent
    code = ("import sys, vzfs.vnc.rfb, vzfs.vnc.encodings; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('trio', 'socket', 'pyfuse3') "
            "or m.startswith('vzfs.kernel')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(root)})
    assert out.stdout.strip() == "[]"


def test_layout_status() -> None:
    one = (enc.Screen(0, 0, 0, 800, 600, 0),)
    assert rfb.layout_status(SetDesktopSize(800, 600, one), 4096, 4096) == enc.STATUS_OK
    assert rfb.layout_status(SetDesktopSize(800, 600, ()), 4096, 4096) == enc.STATUS_INVALID_LAYOUT
    assert rfb.layout_status(SetDesktopSize(700, 600, one), 4096, 4096) == enc.STATUS_INVALID_LAYOUT
    assert rfb.layout_status(SetDesktopSize(800, 600, one * 2), 4096, 4096) == enc.STATUS_INVALID_LAYOUT
    assert rfb.layout_status(SetDesktopSize(800, 600, one), 640, 4096) == enc.STATUS_OUT_OF_RESOURCES


def test_extended_clipboard_respects_client_maximum() -> None:
    conn = connect(encodings=(enc.EXTENDED_CLIPBOARD,))
    conn.data_to_send()
    exchange(conn, ext_clip(rfb.CLIP_CAPS | rfb.CLIP_PROVIDE | rfb.CLIP_TEXT, struct.pack(">I", 6)))
    msg = conn.send_server_cut_text("ééé-long")                     # no notify: provide directly
    data = zlib.decompress(msg[12:])
    assert data == struct.pack(">I", 5) + "éé".encode("utf-8") + b"\0"


# What noVNC 1.7 sends after the handshake (core/rfb.js _sendEncodings), in its order.
NOVNC_ENCODINGS = (1, 7, -260, 16, 21, 5, 2, 6, 0, -26, -254, -223, -224, -258, -261, -308, -309,
                   -312, -313, -307, enc.EXTENDED_CLIPBOARD, -316, 0x574D5664, -239)
NOVNC_PF = enc.PixelFormat(32, 24, False, True, 255, 255, 255, 0, 8, 16)


def test_novnc_session_start() -> None:
    conn = RFBServerConnection("pw", random_bytes=fixed_random)
    conn.data_to_send()
    client = (b"RFB 003.008\n\x02" + rfb.vnc_auth_response("pw", CHALLENGE) + b"\x01"
              + b"\0\0\0\0" + NOVNC_PF.pack()
              + struct.pack(f">BxH{len(NOVNC_ENCODINGS)}i", 2, len(NOVNC_ENCODINGS), *NOVNC_ENCODINGS)
              + struct.pack(">BBHHHH", 3, 0, 0, 0, 720, 400))
    conn.receive_data(client)
    assert conn.next_event() == AuthSucceeded()
    assert conn.next_event() == ClientInitDone(shared=True)
    assert conn.data_to_send() == b"\x01\x02" + CHALLENGE + b"\0\0\0\0"
    conn.send_server_init(720, 400, "web1")
    evs = events(conn)
    assert [type(e) for e in evs] == [SetPixelFormat, SetEncodings, FramebufferUpdateRequest]
    assert conn.encoding == enc.TIGHT and conn.encoder.compress_level == 2
    caps = conn.data_to_send()
    assert struct.unpack_from(">B3xiI", caps) == (3, -8, 0x1F000001)
    fb = terminal_frame(25, 80, seed=4)
    client_view = Decoder(NOVNC_PF.pack(), 720, 400)
    decode_all(client_view, conn.send_framebuffer_update(fb, [(0, 0, 720, 400)]))
    assert client_view.desktop_sizes == [(0, 0, 720, 400, [(0, 0, 0, 720, 400, 0)])]
    assert client_view.name == "web1" and client_view.cursor is not None
    assert np.array_equal(client_view.fb, expected_client_values(fb, NOVNC_PF))


def test_send_rectangles_and_last_rect() -> None:
    conn = connect(encodings=(enc.RAW, enc.LAST_RECT))
    one = enc.copy_rect(0, 0, 1, 1, 1, 1)
    assert conn.send_rectangles([one]) == b"\0\0\0\x01" + one
    many = conn.send_rectangles([one] * 70000)
    assert many[:4] == b"\0\0\xff\xff" and many.endswith(enc.last_rect())
    plain = connect(encodings=(enc.RAW,)).send_rectangles([one] * 70000)
    assert plain[:4] == b"\0\0\xff\xff" and plain[4 + 65535 * len(one):][:4] == struct.pack(">BxH", 0, 70000 - 65535)


def test_rgb_framebuffer_as_the_renderer_draws_it() -> None:
    conn = connect(encodings=(enc.TIGHT, enc.COPY_RECT))
    client = client_for(conn)
    fb = terminal_frame(4, 10, seed=6)
    rgb = np.stack([(fb >> 16) & 0xFF, (fb >> 8) & 0xFF, fb & 0xFF], axis=-1).astype(np.uint8)
    decode_all(client, conn.send_framebuffer_update(rgb, [(0, 0, 90, 64)]))
    rgb2 = np.concatenate([rgb[16:], rgb[:16]])
    decode_all(client, conn.send_framebuffer_update(rgb2, [(0, 48, 90, 16)], [(0, 0, 90, 48, 0, 16)]))
    assert np.array_equal(client.fb, np.concatenate([fb[16:], fb[:16]]))

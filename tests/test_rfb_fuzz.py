"""Hostile byte streams: the RFB server connection raises nothing but ProtocolError, and then stays closed."""

from __future__ import annotations

import struct
import zlib

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vzfs.vnc import encodings as enc
from vzfs.vnc import rfb
from vzfs.vnc.rfb import (
    CLOSED_EVENT, NEED_DATA, ClientInitDone, FramebufferUpdateRequest, ProtocolError,
    RFBServerConnection, SetDesktopSize, State,
)

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def drive(conn: RFBServerConnection, chunks: list[bytes]) -> None:
    """Feed chunks the way the shell does, answering what the shell must answer."""
    framebuffer = np.zeros((48, 64), dtype=np.uint32)
    framebuffer[::3, ::5] = 0xFFFFFF
    try:
        for chunk in chunks:
            conn.receive_data(chunk)
            while True:
                event = conn.next_event()
                if event is NEED_DATA or event is CLOSED_EVENT:
                    break
                if isinstance(event, ClientInitDone):
                    conn.send_server_init(64, 48, "fuzz")
                elif isinstance(event, SetDesktopSize):
                    conn.reply_set_desktop_size(event, enc.STATUS_PROHIBITED)
                elif isinstance(event, FramebufferUpdateRequest):
                    conn.send_framebuffer_update(framebuffer, [(event.x, event.y, event.width, event.height)],
                                                 [(0, 0, 64, 47, 0, 1)])
            conn.data_to_send()
    except ProtocolError as exc:
        assert exc.reason
        assert conn.state is State.CLOSED
        assert conn.next_event() is CLOSED_EVENT


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points + [len(data)]:
        pieces.append(data[last:p])
        last = p
    return [p for p in pieces if p]


@FUZZ
@given(st.binary(max_size=400), st.lists(st.integers(0, 1000), max_size=8))
def test_random_bytes_from_the_start(data: bytes, cuts: list[int]) -> None:
    drive(RFBServerConnection(), split(data, cuts))


@FUZZ
@given(st.sampled_from([b"RFB 003.003\n", b"RFB 003.007\n\x02", b"RFB 003.008\n\x02"]),
       st.binary(max_size=64), st.lists(st.integers(0, 100), max_size=4))
def test_random_bytes_during_auth(version: bytes, data: bytes, cuts: list[int]) -> None:
    drive(RFBServerConnection("pw"), split(version + data, cuts))


def u8(v: int) -> bytes:
    return bytes((v & 0xFF,))


messages = st.one_of(
    st.builds(lambda pf: b"\0\0\0\0" + pf, st.binary(min_size=16, max_size=16)),
    st.builds(lambda pf: b"\0\0\0\0" + pf, st.sampled_from([
        enc.PixelFormat(16, 16, True, True, 31, 63, 31, 11, 5, 0).pack(),
        enc.PixelFormat(8, 8, False, False, 0, 0, 0, 0, 0, 0).pack(),
        enc.PixelFormat(32, 24, True, True, 255, 255, 255, 8, 16, 24).pack()])),
    st.builds(lambda es: struct.pack(f">BxH{len(es)}i", 2, len(es), *es),
              st.lists(st.sampled_from([0, 1, 5, 6, 7, 16, -223, -224, -239, -247, -256, -307, -308,
                                        enc.EXTENDED_CLIPBOARD, 99, -1]), max_size=12)),
    st.builds(lambda n, tail: struct.pack(">BxH", 2, n) + tail, st.integers(0, 0xFFFF), st.binary(max_size=40)),
    st.builds(lambda i, x, y, w, h: struct.pack(">BBHHHH", 3, i, x, y, w, h),
              st.integers(0, 255), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF),
              st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)),
    st.builds(lambda d, k: struct.pack(">BBxxI", 4, d, k), st.integers(0, 255), st.integers(0, 2**32 - 1)),
    st.builds(lambda m, x, y: struct.pack(">BBHH", 5, m, x, y), st.integers(0, 255),
              st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)),
    st.builds(lambda n, t: struct.pack(">B3xi", 6, n) + t, st.integers(-2**31, 2**31 - 1), st.binary(max_size=40)),
    st.builds(lambda flags, payload, z: struct.pack(">B3xi", 6, -(4 + len(zlib.compress(payload) if z else payload)))
              + struct.pack(">I", flags) + (zlib.compress(payload) if z else payload),
              st.integers(0, 2**32 - 1), st.binary(max_size=40), st.booleans()),
    st.builds(lambda w, h, n, screens: struct.pack(">BxHHBx", 251, w, h, n) + screens,
              st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 255), st.binary(max_size=64)),
    st.binary(min_size=1, max_size=8),
)


@FUZZ
@given(st.lists(messages, max_size=12), st.lists(st.integers(0, 2000), max_size=6))
def test_hostile_messages_after_handshake(msgs: list[bytes], cuts: list[int]) -> None:
    conn = RFBServerConnection()
    conn.receive_data(b"RFB 003.008\n\x01\x01")
    assert conn.next_event() == ClientInitDone(shared=True)
    conn.send_server_init(64, 48, "fuzz")
    # enable the Extended Clipboard so that negative lengths reach its parser
    conn.receive_data(struct.pack(">BxHi", 2, 1, enc.EXTENDED_CLIPBOARD))
    conn.next_event()
    drive(conn, split(b"".join(msgs), cuts))


def test_many_pipelined_clipboard_messages_do_not_recurse() -> None:
    conn = RFBServerConnection()
    conn.receive_data(b"RFB 003.008\n\x01\x01")
    conn.next_event()
    conn.send_server_init(8, 8, "x")
    conn.receive_data(struct.pack(">BxHi", 2, 1, enc.EXTENDED_CLIPBOARD))
    conn.next_event()
    caps = struct.pack(">B3xiI", 6, -4, rfb.CLIP_CAPS)
    conn.receive_data(caps * 100_000)
    assert conn.next_event() is NEED_DATA


valid_messages = st.one_of(
    st.builds(lambda d, k: struct.pack(">BBxxI", 4, d, k), st.integers(0, 1), st.integers(0, 2**32 - 1)),
    st.builds(lambda m, x, y: struct.pack(">BBHH", 5, m, x, y), st.integers(0, 255),
              st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)),
    st.builds(lambda i, x, y, w, h: struct.pack(">BBHHHH", 3, i, x, y, w, h), st.integers(0, 1),
              st.integers(0, 100), st.integers(0, 100), st.integers(0, 100), st.integers(0, 100)),
    st.builds(lambda es: struct.pack(f">BxH{len(es)}i", 2, len(es), *es),
              st.lists(st.sampled_from([0, 1, 5, 6, 7, 16, -223, -239, -307, -308]), max_size=8)),
    st.builds(lambda t: struct.pack(">B3xI", 6, len(t)) + t, st.binary(max_size=30)),
    st.builds(lambda w, h: struct.pack(">BxHHBx", 251, w, h, 1) + enc.Screen(0, 0, 0, w, h, 0).pack(),
              st.integers(1, 200), st.integers(1, 200)),
    st.just(b"\0\0\0\0" + enc.PixelFormat(16, 16, False, True, 31, 63, 31, 11, 5, 0).pack()),
)


@FUZZ
@given(st.lists(valid_messages, max_size=15), st.lists(st.integers(0, 3000), max_size=10))
def test_chunking_never_changes_the_events(msgs: list[bytes], cuts: list[int]) -> None:
    """h11-style: the same bytes give the same events however the reads split them."""
    def run(chunks: list[bytes]) -> list[object]:
        conn = RFBServerConnection()
        conn.receive_data(b"RFB 003.008\n\x01\x01")
        conn.next_event()
        conn.send_server_init(64, 48, "x")
        seen = []
        for chunk in chunks:
            if not chunk:
                continue        # b"" would mean EOF
            conn.receive_data(chunk)
            while (event := conn.next_event()) is not NEED_DATA:
                assert event is not CLOSED_EVENT
                seen.append(event)
        return seen

    data = b"".join(msgs)
    whole = run([data])
    assert len(whole) == len(msgs)
    assert run(split(data, cuts)) == whole
    assert run([bytes((b,)) for b in data]) == whole

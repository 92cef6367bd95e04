"""Every encoding, every pixel format: encode, decode independently, compare pixel for pixel."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.vnc_decoder import Decoder
from vzfs.vnc import encodings as enc
from vzfs.vnc.encodings import Encoder, PixelFormat
from vzfs.vnc.errors import ProtocolError

FORMATS = {
    "native-32-le": PixelFormat(32, 24, False, True, 255, 255, 255, 16, 8, 0),
    "bgr-32-be": PixelFormat(32, 24, True, True, 255, 255, 255, 0, 8, 16),
    "high-32-le": PixelFormat(32, 24, False, True, 255, 255, 255, 24, 16, 8),
    "high-32-be": PixelFormat(32, 24, True, True, 255, 255, 255, 8, 16, 24),
    "depth16-in-32": PixelFormat(32, 16, False, True, 31, 63, 31, 11, 5, 0),
    "rgb565-le": PixelFormat(16, 16, False, True, 31, 63, 31, 11, 5, 0),
    "rgb565-be": PixelFormat(16, 16, True, True, 31, 63, 31, 11, 5, 0),
    "rgb555-le": PixelFormat(16, 15, False, True, 31, 31, 31, 10, 5, 0),
    "bgr233-8": PixelFormat(8, 8, False, True, 7, 7, 3, 0, 3, 6),
    "rgb332-8": PixelFormat(8, 8, False, True, 7, 7, 3, 5, 2, 0),
    "colour-map-8": enc.COLOUR_MAP_BGR233,
}
ENCODINGS = [enc.RAW, enc.ZLIB, enc.HEXTILE, enc.ZRLE, enc.TIGHT]


def expected_client_values(rgb: np.ndarray, pf: PixelFormat) -> np.ndarray:
    """Client pixel values computed from rfbproto §ServerInit alone (not via PixelFormat.convert)."""
    r = (rgb >> 16) & 0xFF
    g = (rgb >> 8) & 0xFF
    b = rgb & 0xFF
    out = np.zeros(rgb.shape, dtype=np.int64)
    for c, mx, shift in ((r, pf.red_max, pf.red_shift), (g, pf.green_max, pf.green_shift),
                         (b, pf.blue_max, pf.blue_shift)):
        out |= ((c.astype(np.int64) * mx + 127) // 255) << shift
    return out


def update_message(rects: list[bytes]) -> bytes:
    return struct.pack(">BxH", 0, len(rects)) + b"".join(rects)


def roundtrip(fb: np.ndarray, pf: PixelFormat, encoding: int, encoder: Encoder | None = None,
              decoder: Decoder | None = None) -> Decoder:
    height, width = fb.shape
    encoder = encoder or Encoder(pf)
    decoder = decoder or Decoder(pf.pack(), width, height)
    msg = update_message(encoder.encode(encoding, fb, 0, 0, width, height))
    end = decoder.server_message(msg)
    assert end == len(msg), "trailing bytes after the update"
    return decoder


def terminal_frame(rows: int, cols: int, seed: int = 0, cell_w: int = 9, cell_h: int = 16) -> np.ndarray:
    """White-ish text on black: each cell a random 'glyph' of strokes, some cells blank."""
    rng = np.random.default_rng(seed)
    fb = np.zeros((rows * cell_h, cols * cell_w), dtype=np.uint32)
    colours = np.array([0xAAAAAA, 0xFFFFFF, 0x55FF55, 0x5555FF], dtype=np.uint32)
    for row in range(rows):
        for col in range(cols):
            if rng.random() < 0.35:
                continue
            glyph = rng.random((cell_h - 4, cell_w - 2)) < 0.3
            cell = fb[row * cell_h + 2:row * cell_h + cell_h - 2, col * cell_w + 1:col * cell_w + cell_w - 1]
            cell[glyph] = colours[0 if rng.random() < 0.8 else rng.integers(1, 4)]
    return fb


frames = st.builds(
    lambda h, w, ncolours, seed: np.random.default_rng(seed).choice(
        np.random.default_rng(seed + 1).integers(0, 1 << 24, ncolours, dtype=np.uint32), size=(h, w)),
    st.integers(1, 70), st.integers(1, 140), st.sampled_from([1, 2, 3, 5, 17, 200, 5000]),
    st.integers(0, 2**32 - 1))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("encoding", ENCODINGS, ids=lambda e: enc.ENCODING_NAMES[e])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fb=frames)
def test_random_frames_roundtrip(fmt: str, encoding: int, fb: np.ndarray) -> None:
    pf = FORMATS[fmt]
    decoder = roundtrip(fb, pf, encoding)
    assert np.array_equal(decoder.fb, expected_client_values(fb, pf))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("encoding", ENCODINGS, ids=lambda e: enc.ENCODING_NAMES[e])
def test_terminal_frame_roundtrip(fmt: str, encoding: int) -> None:
    pf = FORMATS[fmt]
    fb = terminal_frame(5, 20, seed=3)
    decoder = roundtrip(fb, pf, encoding)
    assert np.array_equal(decoder.fb, expected_client_values(fb, pf))


@pytest.mark.parametrize("encoding", ENCODINGS, ids=lambda e: enc.ENCODING_NAMES[e])
def test_native_format_is_lossless(encoding: int) -> None:
    fb = np.random.default_rng(7).integers(0, 1 << 24, (37, 83), dtype=np.uint32)
    decoder = roundtrip(fb, enc.NATIVE_FORMAT, encoding)
    assert np.array_equal(decoder.fb, fb)


@pytest.mark.parametrize("encoding", ENCODINGS, ids=lambda e: enc.ENCODING_NAMES[e])
def test_persistent_streams_across_rectangles(encoding: int) -> None:
    """zlib, ZRLE and Tight keep one stream per connection: many updates decode in order."""
    pf = FORMATS["rgb565-le"]
    encoder = Encoder(pf)
    decoder = Decoder(pf.pack(), 180, 48)
    for seed in range(6):
        fb = terminal_frame(3, 20, seed=seed)
        roundtrip(fb, pf, encoding, encoder, decoder)
        assert np.array_equal(decoder.fb, expected_client_values(fb, pf))


def test_sub_rectangles_land_at_their_offset() -> None:
    pf = enc.NATIVE_FORMAT
    fb = terminal_frame(4, 10, seed=1)
    for encoding in ENCODINGS:
        decoder = Decoder(pf.pack(), fb.shape[1], fb.shape[0])
        decoder.fb[:] = fb
        fb2 = fb.copy()
        fb2[17:40, 5:61] = 0x123456
        rects = Encoder(pf).encode(encoding, fb2, 5, 17, 56, 23)
        decoder.server_message(update_message(rects))
        assert np.array_equal(decoder.fb, fb2), enc.ENCODING_NAMES[encoding]


def test_tight_splits_wide_and_large_rectangles() -> None:
    pf = enc.NATIVE_FORMAT
    fb = np.random.default_rng(2).integers(0, 1 << 24, (40, 2100), dtype=np.uint32)
    rects = Encoder(pf).encode(enc.TIGHT, fb, 0, 0, 2100, 40)
    assert len(rects) > 2
    for rect in rects:
        _x, _y, w, h, _e = struct.unpack(">HHHHi", rect[:12])
        assert w <= 2048 and w * h <= Encoder.TIGHT_MAX_PIXELS
    decoder = Decoder(pf.pack(), 2100, 40)
    decoder.server_message(update_message(rects))
    assert np.array_equal(decoder.fb, fb)


def test_tight_stream_reset_is_signalled() -> None:
    pf = enc.NATIVE_FORMAT
    encoder = Encoder(pf)
    decoder = Decoder(pf.pack(), 90, 32)
    fb = terminal_frame(2, 10, seed=4)
    roundtrip(fb, pf, enc.TIGHT, encoder, decoder)
    encoder.set_compress_level(1)
    rects = encoder.encode(enc.TIGHT, fb, 0, 0, 90, 32)
    assert rects[0][12] & 0x0F == 0x0F
    decoder.server_message(update_message(rects))
    assert np.array_equal(decoder.fb, fb)


def test_tight_compact_length() -> None:
    assert enc._compact_length(10000) == bytes((0x90, 0x4E))    # rfbproto §Tight example
    assert enc._compact_length(127) == b"\x7f"
    assert enc._compact_length(128) == b"\x80\x01"
    assert enc._compact_length(16384) == b"\x80\x80\x01"


def test_zrle_cpixel_is_three_bytes_for_depth_24() -> None:
    fb = np.full((4, 4), 0x102030, dtype=np.uint32)
    for name, expected in (("native-32-le", b"\x30\x20\x10"), ("bgr-32-be", b"\x30\x20\x10"),
                           ("high-32-le", b"\x30\x20\x10")):
        tile = Encoder(FORMATS[name])._zrle_tile(FORMATS[name].convert(fb))
        assert tile == b"\x01" + expected, name


def test_copy_rect_and_pseudo_rectangles() -> None:
    pf = enc.NATIVE_FORMAT
    fb = terminal_frame(4, 10, seed=9)
    decoder = Decoder(pf.pack(), 90, 64)
    decoder.fb[:] = fb
    rects = [enc.copy_rect(0, 0, 90, 48, 0, 16), enc.cursor(pf), enc.desktop_name("dom1 — bash"),
             enc.last_rect()]
    decoder.server_message(struct.pack(">BxH", 0, 0xFFFF) + b"".join(rects))
    assert np.array_equal(decoder.fb[:48], fb[16:])
    assert decoder.name == "dom1 — bash"
    assert decoder.cursor is not None and decoder.cursor[2:4] == (12, 19)
    screens = [enc.Screen(1, 0, 0, 100, 50, 0)]
    decoder.server_message(update_message([enc.extended_desktop_size(100, 50, screens, 1, 0)]))
    assert (decoder.width, decoder.height) == (100, 50)
    assert decoder.desktop_sizes[-1] == (1, 0, 100, 50, [(1, 0, 0, 100, 50, 0)])
    decoder.server_message(update_message([enc.desktop_size(80, 40)]))
    assert (decoder.width, decoder.height) == (80, 40)


def test_choose_encoding_follows_client_order() -> None:
    assert enc.choose_encoding([enc.CURSOR, enc.COPY_RECT, enc.ZRLE, enc.TIGHT]) == enc.ZRLE
    assert enc.choose_encoding([enc.TIGHT, enc.HEXTILE]) == enc.TIGHT
    assert enc.choose_encoding([2, 4, enc.DESKTOP_SIZE]) == enc.RAW
    assert enc.choose_encoding([]) == enc.RAW


def test_rgb_array_input() -> None:
    rgb = np.zeros((2, 3, 3), dtype=np.uint8)
    rgb[0, 1] = (0x12, 0x34, 0x56)
    assert enc.as_rgb32(rgb)[0, 1] == 0x123456


@pytest.mark.parametrize("raw", [
    struct.pack(">BBBBHHHBBB3x", 24, 24, 0, 1, 255, 255, 255, 16, 8, 0),     # 24 bpp
    struct.pack(">BBBBHHHBBB3x", 32, 24, 0, 1, 254, 255, 255, 16, 8, 0),     # max not 2^n-1
    struct.pack(">BBBBHHHBBB3x", 32, 24, 0, 1, 255, 255, 255, 30, 8, 0),     # shift past 32 bits
    struct.pack(">BBBBHHHBBB3x", 16, 16, 0, 0, 0, 0, 0, 0, 0, 0),            # colour map at 16 bpp
    struct.pack(">BBBBHHHBBB3x", 8, 8, 0, 1, 0, 7, 3, 0, 3, 6),              # zero max
])
def test_unusable_pixel_formats_are_protocol_errors(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        PixelFormat.unpack(raw)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 40), st.integers(0, 2**32 - 1)), min_size=1, max_size=8))
def test_tight_palette_carried_across_rectangles(steps: list[tuple[int, int]]) -> None:
    """Colour subsets that grow, shrink and change: the carried palette stays right."""
    pf = FORMATS["bgr-32-be"]
    encoder = Encoder(pf)
    decoder = Decoder(pf.pack(), 40, 20)
    universe = np.random.default_rng(0).integers(0, 1 << 24, 300, dtype=np.uint32)
    for ncolours, seed in steps:
        rng = np.random.default_rng(seed)
        colours = rng.choice(universe, ncolours, replace=False)
        fb = rng.choice(colours, (20, 40))
        roundtrip(fb, pf, enc.TIGHT, encoder, decoder)
        assert np.array_equal(decoder.fb, expected_client_values(fb, pf))


@given(st.sampled_from([8, 16, 32]), st.booleans(), st.data())
def test_pixel_format_pack_unpack_roundtrip(bpp: int, big: bool, data: st.DataObject) -> None:
    bits = [data.draw(st.integers(1, bpp // 3)) for _ in range(3)]
    shifts, used = [], 0
    for b in bits:
        shifts.append(used)
        used += b
    pf = PixelFormat(bpp, used, big, True, *((1 << b) - 1 for b in bits), *shifts)
    raw = pf.pack()
    assert len(raw) == 16 and PixelFormat.unpack(raw) == pf


@st.composite
def pixel_formats(draw: st.DrawFn) -> PixelFormat:
    """Any true-colour format rfbproto allows: 8/16/32 bpp, either byte order, any max/shift layout."""
    bpp = draw(st.sampled_from([8, 16, 32]))
    bits = [draw(st.integers(1, min(8, bpp // 3 + (bpp == 8)))) for _ in range(3)]
    while sum(bits) > bpp:
        bits[bits.index(max(bits))] -= 1
    order = draw(st.permutations([0, 1, 2]))
    gap = bpp - sum(bits)
    shifts, used = [0, 0, 0], draw(st.integers(0, gap))
    for i in order:
        shifts[i] = used
        used += bits[i]
    depth = draw(st.sampled_from([sum(bits), 24 if bpp == 32 else sum(bits)]))
    return PixelFormat(bpp, depth, draw(st.booleans()), True, *((1 << b) - 1 for b in bits), *shifts)


@settings(max_examples=150, deadline=None)
@given(pf=pixel_formats(), encoding=st.sampled_from(ENCODINGS), fb=frames)
def test_any_pixel_format_roundtrip(pf: PixelFormat, encoding: int, fb: np.ndarray) -> None:
    assert PixelFormat.unpack(pf.pack()) == pf
    decoder = roundtrip(fb, pf, encoding)
    assert np.array_equal(decoder.fb, expected_client_values(fb, pf))

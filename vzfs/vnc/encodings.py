"""Turn regions of the server framebuffer into RFB rectangles in the client's pixel format.

Theory of operation
-------------------
The server framebuffer is a numpy array of shape (height, width), dtype uint32,
each value ``0x00RRGGBB`` — the server's native pixel format (rfbproto §ServerInit:
32 bpp, depth 24, little endian, shifts 16/8/0) read as host integers. An
(H, W, 3) uint8 RGB array is accepted too and converted by ``as_rgb32``.

Every client gets one ``Encoder``: it holds the client's ``PixelFormat`` and the
zlib streams that rfbproto requires to live as long as the connection (one for
zlib, one for ZRLE, four for Tight). ``Encoder.encode`` returns whole
rectangles (12-byte header included); an encoding may split a region into several
rectangles (Tight's 2048-pixel width limit), so it returns a list.

Pixel values are first converted to the client's format as integers
(``PixelFormat.convert``); the encodings then work on those integers, so that
palettes, runs and tiles compare client pixels, never server ones.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import ClassVar, Final, Sequence

import numpy as np
import numpy.typing as npt

from .errors import ProtocolError

Pixels = npt.NDArray[np.uint32]

# rfbproto §Encodings and §Pseudo-encodings.
RAW: Final = 0
COPY_RECT: Final = 1
HEXTILE: Final = 5
ZLIB: Final = 6
TIGHT: Final = 7
ZRLE: Final = 16
JPEG_QUALITY_LOW: Final = -32           # -32 .. -23, ignored: no JPEG here
DESKTOP_SIZE: Final = -223
LAST_RECT: Final = -224
CURSOR: Final = -239
COMPRESS_LEVEL_HIGH: Final = -247       # -256 .. -247 → zlib level 0 .. 9
COMPRESS_LEVEL_LOW: Final = -256
DESKTOP_NAME: Final = -307
EXTENDED_DESKTOP_SIZE: Final = -308
EXTENDED_CLIPBOARD: Final = -1063131698  # 0xC0A1E5CE as S32

#: Genuine encodings this module produces, in the order used when the client
#: expresses no preference among them.
SUPPORTED: Final = (TIGHT, ZRLE, HEXTILE, ZLIB, RAW)

ENCODING_NAMES: Final = {RAW: "Raw", COPY_RECT: "CopyRect", HEXTILE: "Hextile",
                         ZLIB: "zlib", TIGHT: "Tight", ZRLE: "ZRLE"}


def choose_encoding(client_encodings: Sequence[int]) -> int:
    """The first encoding in the client's SetEncodings list that we produce; Raw otherwise.

    rfbproto §SetEncodings: the order is the client's preference and Raw is
    always allowed. CopyRect is not a general-purpose encoding and is never chosen.
    """
    for encoding in client_encodings:
        if encoding in SUPPORTED:
            return encoding
    return RAW


def as_rgb32(framebuffer: npt.NDArray[np.generic]) -> Pixels:
    """An (H, W) uint32 0x00RRGGBB view of ``framebuffer`` (H×W uint32 or H×W×3 uint8 RGB)."""
    if framebuffer.ndim == 2 and framebuffer.dtype == np.uint32:
        return framebuffer  # type: ignore[return-value]
    if framebuffer.ndim == 3 and framebuffer.shape[2] == 3 and framebuffer.dtype == np.uint8:
        rgb = framebuffer.astype(np.uint32)
        return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]  # type: ignore[no-any-return]
    raise ValueError(f"framebuffer must be HxW uint32 or HxWx3 uint8, not {framebuffer.shape} {framebuffer.dtype}")


@dataclass(frozen=True)
class PixelFormat:
    """rfbproto §ServerInit PIXEL_FORMAT, validated so that every field is usable."""

    bits_per_pixel: int
    depth: int
    big_endian: bool
    true_colour: bool
    red_max: int
    green_max: int
    blue_max: int
    red_shift: int
    green_shift: int
    blue_shift: int

    STRUCT: ClassVar[struct.Struct] = struct.Struct(">BBBBHHHBBB3x")

    @classmethod
    def unpack(cls, data: bytes) -> PixelFormat:
        """Parse the 16-byte PIXEL_FORMAT; ProtocolError if we cannot honour it.

        A colour-map format (true-colour-flag 0) is accepted at 8 bpp only and is
        served as the fixed BGR233 map (see ``COLOUR_MAP_BGR233``).
        """
        bpp, depth, big, true, rmax, gmax, bmax, rs, gs, bs = cls.STRUCT.unpack(data)
        if bpp not in (8, 16, 32):
            raise ProtocolError(f"SetPixelFormat: bits-per-pixel {bpp} is not 8, 16 or 32")
        if not true:
            if bpp != 8:
                raise ProtocolError(f"SetPixelFormat: a colour map needs 8 bits-per-pixel, not {bpp}")
            return COLOUR_MAP_BGR233
        pf = cls(bpp, depth, bool(big), True, rmax, gmax, bmax, rs, gs, bs)
        for name, mx, shift in (("red", rmax, rs), ("green", gmax, gs), ("blue", bmax, bs)):
            if mx == 0 or mx & (mx + 1):
                raise ProtocolError(f"SetPixelFormat: {name}-max {mx} is not 2^n-1")
            if mx.bit_length() + shift > bpp:
                raise ProtocolError(f"SetPixelFormat: {name} (max {mx}, shift {shift}) exceeds {bpp} bits")
        return pf

    def pack(self) -> bytes:
        return self.STRUCT.pack(self.bits_per_pixel, self.depth, self.big_endian, self.true_colour,
                                self.red_max, self.green_max, self.blue_max,
                                self.red_shift, self.green_shift, self.blue_shift)

    @property
    def bytes_per_pixel(self) -> int:
        return self.bits_per_pixel // 8

    @property
    def dtype(self) -> np.dtype[np.unsignedinteger[npt.NBitBase]]:
        """The numpy dtype of one PIXEL on the wire (rfbproto §ServerInit big-endian-flag)."""
        order = ">" if self.big_endian else "<"
        return np.dtype(f"{order}u{self.bytes_per_pixel}")

    @property
    def is_native(self) -> bool:
        """True when client pixel values equal server values (no conversion)."""
        return (self.bits_per_pixel == 32 and self.true_colour
                and (self.red_max, self.green_max, self.blue_max) == (255, 255, 255)
                and (self.red_shift, self.green_shift, self.blue_shift) == (16, 8, 0))

    def convert(self, rgb: Pixels) -> Pixels:
        """Client pixel values (as uint32 integers) for 0x00RRGGBB server pixels."""
        if self.is_native:
            return rgb
        out = np.zeros(rgb.shape, dtype=np.uint32)
        for mx, shift, src_shift in ((self.red_max, self.red_shift, 16),
                                     (self.green_max, self.green_shift, 8),
                                     (self.blue_max, self.blue_shift, 0)):
            component = (rgb >> np.uint32(src_shift)) & np.uint32(0xFF)
            if mx != 255:
                component = (component * np.uint32(mx) + np.uint32(127)) // np.uint32(255)
            out |= component << np.uint32(shift)
        return out

    def to_bytes(self, values: Pixels) -> bytes:
        """PIXEL values on the wire."""
        return values.astype(self.dtype, copy=False).tobytes()

    # rfbproto §Tight Encoding: TPIXEL is 3 bytes R, G, B when true colour, 32 bpp,
    # depth 24 and every component exactly 8 bits wide.
    @property
    def tpixel_is_rgb(self) -> bool:
        return (self.true_colour and self.bits_per_pixel == 32 and self.depth == 24
                and (self.red_max, self.green_max, self.blue_max) == (255, 255, 255))

    def to_tpixels(self, values: Pixels) -> bytes:
        if not self.tpixel_is_rgb:
            return self.to_bytes(values)
        out = np.empty(values.shape + (3,), dtype=np.uint8)
        out[..., 0] = values >> np.uint32(self.red_shift)
        out[..., 1] = values >> np.uint32(self.green_shift)
        out[..., 2] = values >> np.uint32(self.blue_shift)
        return out.tobytes()

    # rfbproto §ZRLE Encoding: CPIXEL is 3 bytes when true colour, 32 bpp, depth <= 24
    # and all colour bits fit in the three least (preferred) or most significant bytes.
    @property
    def cpixel_bytes(self) -> slice | None:
        """Which bytes of a wire PIXEL form the CPIXEL; None when CPIXEL == PIXEL."""
        if not (self.true_colour and self.bits_per_pixel == 32 and self.depth <= 24):
            return None
        fields = ((self.red_max, self.red_shift), (self.green_max, self.green_shift),
                  (self.blue_max, self.blue_shift))
        if all(mx << shift < 1 << 24 for mx, shift in fields):
            return slice(0, 3) if not self.big_endian else slice(1, 4)
        if all(shift >= 8 for _mx, shift in fields):
            return slice(1, 4) if not self.big_endian else slice(0, 3)
        return None

    def to_cpixels(self, values: Pixels) -> bytes:
        which = self.cpixel_bytes
        if which is None:
            return self.to_bytes(values)
        wire = values.astype(self.dtype, copy=False).reshape(-1, 1).view(np.uint8)
        return wire[:, which].tobytes()


NATIVE_FORMAT: Final = PixelFormat(32, 24, False, True, 255, 255, 255, 16, 8, 0)

#: The colour map served to 8-bpp colour-map clients: pixel = b<<6 | g<<3 | r.
#: ``PixelFormat.convert`` treats it as this true-colour layout and the server sends
#: the matching SetColourMapEntries (``colour_map_entries``).
COLOUR_MAP_BGR233: Final = PixelFormat(8, 8, False, False, 7, 7, 3, 0, 3, 6)


def colour_map_entries() -> list[tuple[int, int, int]]:
    """The 256 16-bit (red, green, blue) entries for ``COLOUR_MAP_BGR233``."""
    return [((i & 7) * 65535 // 7, ((i >> 3) & 7) * 65535 // 7, (i >> 6) * 65535 // 3)
            for i in range(256)]


def rect_header(x: int, y: int, width: int, height: int, encoding: int) -> bytes:
    """rfbproto §FramebufferUpdate: the 12-byte rectangle header."""
    return struct.pack(">HHHHi", x, y, width, height, encoding)


def copy_rect(x: int, y: int, width: int, height: int, src_x: int, src_y: int) -> bytes:
    """rfbproto §CopyRect Encoding: the client copies (src_x, src_y) to (x, y)."""
    return rect_header(x, y, width, height, COPY_RECT) + struct.pack(">HH", src_x, src_y)


def last_rect() -> bytes:
    """rfbproto §LastRect Pseudo-encoding."""
    return rect_header(0, 0, 0, 0, LAST_RECT)


def desktop_size(width: int, height: int) -> bytes:
    """rfbproto §DesktopSize Pseudo-encoding."""
    return rect_header(0, 0, width, height, DESKTOP_SIZE)


@dataclass(frozen=True)
class Screen:
    """rfbproto §ExtendedDesktopSize SCREEN."""

    id: int
    x: int
    y: int
    width: int
    height: int
    flags: int

    STRUCT: ClassVar[struct.Struct] = struct.Struct(">IHHHHI")

    def pack(self) -> bytes:
        return self.STRUCT.pack(self.id, self.x, self.y, self.width, self.height, self.flags)


# rfbproto §ExtendedDesktopSize: x-position is the reason, y-position the status.
REASON_SERVER: Final = 0
REASON_THIS_CLIENT: Final = 1
REASON_OTHER_CLIENT: Final = 2
STATUS_OK: Final = 0
STATUS_PROHIBITED: Final = 1
STATUS_OUT_OF_RESOURCES: Final = 2
STATUS_INVALID_LAYOUT: Final = 3


def extended_desktop_size(width: int, height: int, screens: Sequence[Screen],
                          reason: int = REASON_SERVER, status: int = STATUS_OK) -> bytes:
    """rfbproto §ExtendedDesktopSize Pseudo-encoding."""
    return (rect_header(reason, status, width, height, EXTENDED_DESKTOP_SIZE)
            + struct.pack(">B3x", len(screens)) + b"".join(s.pack() for s in screens))


def desktop_name(name: str) -> bytes:
    """rfbproto §DesktopName Pseudo-encoding: the name as UTF-8."""
    data = name.encode("utf-8")
    return rect_header(0, 0, 0, 0, DESKTOP_NAME) + struct.pack(">I", len(data)) + data


# A 12×19 arrow: '#' black outline, '.' white fill, ' ' transparent.
_ARROW: Final = (
    "#           ",
    "##          ",
    "#.#         ",
    "#..#        ",
    "#...#       ",
    "#....#      ",
    "#.....#     ",
    "#......#    ",
    "#.......#   ",
    "#........#  ",
    "#.........# ",
    "#......#####",
    "#...#..#    ",
    "#..# #..#   ",
    "#.#  #..#   ",
    "##    #..#  ",
    "#     #..#  ",
    "       #..# ",
    "       ###  ",
)


def cursor(pf: PixelFormat) -> bytes:
    """rfbproto §Cursor Pseudo-encoding: a visible arrow with its hotspot at its tip."""
    height, width = len(_ARROW), len(_ARROW[0])
    rgb = np.array([[0xFFFFFF if c == "." else 0 for c in row] for row in _ARROW], dtype=np.uint32)
    mask = np.array([[c != " " for c in row] for row in _ARROW], dtype=bool)
    return (rect_header(0, 0, width, height, CURSOR)
            + pf.to_bytes(pf.convert(rgb)) + np.packbits(mask, axis=1).tobytes())


def _compact_length(n: int) -> bytes:
    """rfbproto §Tight Encoding: 1–3 byte compact representation of a length."""
    if n < 0x80:
        return bytes((n,))
    if n < 0x4000:
        return bytes((n & 0x7F | 0x80, n >> 7))
    if n < 0x400000:
        return bytes((n & 0x7F | 0x80, (n >> 7) & 0x7F | 0x80, n >> 14))
    raise ValueError(f"Tight data of {n} bytes exceeds the compact length limit")


def _pack_indices(indices: npt.NDArray[np.uint8], bits: int) -> bytes:
    """Pack palette indices ``bits`` wide, MSB = leftmost, each row padded to a byte."""
    height, width = indices.shape
    per_byte = 8 // bits
    padded_width = -(-width // per_byte) * per_byte
    padded = np.zeros((height, padded_width), dtype=np.uint8)
    padded[:, :width] = indices
    groups = padded.reshape(height, padded_width // per_byte, per_byte)
    out = np.zeros(groups.shape[:2], dtype=np.uint8)
    for k in range(per_byte):
        out |= groups[:, :, k] << np.uint8(8 - bits * (k + 1))
    return out.tobytes()


def _palette(flat: Pixels) -> tuple[Pixels, npt.NDArray[np.intp]]:
    """Sorted distinct values and each pixel's index, as np.unique, without sorting
    when there are only two values (the common case of text on a background)."""
    first = flat[0]
    others = flat[flat != first]
    if others.size and not (others != others[0]).any():
        low, high = sorted((int(first), int(others[0])))
        return np.array([low, high], dtype=np.uint32), (flat == high).astype(np.intp)
    palette, inverse = np.unique(flat, return_inverse=True)
    return palette, inverse.reshape(-1)


def _run_lengths(flat: Pixels) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Start index and length of each run of equal values in a 1-D array."""
    starts = np.concatenate(([0], np.flatnonzero(flat[1:] != flat[:-1]) + 1))
    lengths = np.diff(np.append(starts, flat.size))
    return starts, lengths


def _runs(heads: npt.NDArray[np.uint8], lengths: npt.NDArray[np.intp],
          has_length: npt.NDArray[np.bool_]) -> bytes:
    """rfbproto §ZRLE Encoding runs: each run's head bytes, then (where ``has_length``)
    its length - 1 as 255-bytes and a final byte below 255. Built without a Python loop."""
    k = heads.shape[1]
    q, r = np.divmod(lengths - 1, 255)
    sizes = k + np.where(has_length, q + 1, 0)
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    out = np.full(int(sizes.sum()), 255, dtype=np.uint8)
    for j in range(k):
        out[starts + j] = heads[:, j]
    out[(starts + sizes - 1)[has_length]] = r[has_length]
    return out.tobytes()


class Encoder:
    """Per-connection encoder state: the client's pixel format and zlib streams."""

    TIGHT_MAX_WIDTH: Final = 2048       # rfbproto §Tight Encoding
    TIGHT_MAX_PIXELS: Final = 65536     # keep compact lengths and client buffers small
    TIGHT_MIN_TO_COMPRESS: Final = 12   # rfbproto §Tight Encoding
    TIGHT_MAX_PALETTE: Final = 256      # rfbproto §Tight PaletteFilter: 2..256 colours

    def __init__(self, pixel_format: PixelFormat = NATIVE_FORMAT, compress_level: int = 6) -> None:
        self._pixel_format = pixel_format
        self.compress_level = compress_level
        self._zlib = zlib.compressobj(compress_level)
        self._zrle = zlib.compressobj(compress_level)
        self._tight = [zlib.compressobj(compress_level) for _ in range(4)]
        self._tight_reset = 0
        self._tight_palette = np.zeros(0, dtype=np.uint32)

    @property
    def pixel_format(self) -> PixelFormat:
        return self._pixel_format

    @pixel_format.setter
    def pixel_format(self, pixel_format: PixelFormat) -> None:
        """rfbproto §SetPixelFormat: the streams go on; cached client pixels do not."""
        self._pixel_format = pixel_format
        self._tight_palette = np.zeros(0, dtype=np.uint32)

    def set_compress_level(self, level: int) -> None:
        """Apply a Compression Level pseudo-encoding (rfbproto §Compression Level).

        Only Tight can tell the client to reset its streams, so only Tight's
        streams are recreated; zlib and ZRLE keep the level they started with.
        """
        level = max(0, min(9, level))
        if level != self.compress_level:
            self.compress_level = level
            self.reset_tight_streams()

    def reset_tight_streams(self) -> None:
        """Start fresh Tight streams; the next Tight rectangles carry the reset bits."""
        self._tight = [zlib.compressobj(self.compress_level) for _ in range(4)]
        self._tight_reset = 0b1111

    def encode(self, encoding: int, framebuffer: npt.NDArray[np.generic], x: int, y: int,
               width: int, height: int) -> list[bytes]:
        """Rectangles (header included) carrying framebuffer[y:y+height, x:x+width].

        ``framebuffer`` is H×W uint32 0x00RRGGBB or H×W×3 uint8 RGB; only the
        region is converted.
        """
        region = self.pixel_format.convert(as_rgb32(framebuffer[y:y + height, x:x + width]))
        if width == 0 or height == 0:
            return [rect_header(x, y, width, height, RAW)]
        if encoding == RAW:
            return [rect_header(x, y, width, height, RAW) + self.pixel_format.to_bytes(region)]
        if encoding == ZLIB:
            return [rect_header(x, y, width, height, ZLIB) + self._zlib_rect(region)]
        if encoding == HEXTILE:
            return [rect_header(x, y, width, height, HEXTILE) + self._hextile(region)]
        if encoding == ZRLE:
            return [rect_header(x, y, width, height, ZRLE) + self._zrle_rect(region)]
        if encoding == TIGHT:
            return self._tight_rects(region, x, y)
        raise ValueError(f"encoding {encoding} is not one this server produces")

    # rfbproto §zlib Encoding: Raw data through the connection's one zlib stream.
    def _zlib_rect(self, region: Pixels) -> bytes:
        data = self._zlib.compress(self.pixel_format.to_bytes(region)) + self._zlib.flush(zlib.Z_SYNC_FLUSH)
        return struct.pack(">I", len(data)) + data

    # rfbproto §Hextile Encoding.
    def _hextile(self, region: Pixels) -> bytes:
        """Tiles of 16×16: solid, background + subrectangles (one foreground or coloured), or raw.

        Work is per band of 16 rows: numpy finds the horizontal runs of every tile at
        once (a run never crosses a tile edge); Python then walks the runs of each
        tile, merging a run into the rectangle above it when columns and colour match.
        """
        pf = self.pixel_format
        bpp = pf.bytes_per_pixel
        pixel = struct.Struct(("<" if not pf.big_endian else ">") + {1: "B", 2: "H", 4: "I"}[bpp]).pack
        out = bytearray()
        last_bg: int | None = None
        last_fg: int | None = None
        height, width = region.shape
        for ty in range(0, height, 16):
            band = region[ty:ty + 16]
            th = band.shape[0]
            change = np.ones(band.shape, dtype=bool)
            change[:, 1:] = band[:, 1:] != band[:, :-1]
            change[:, ::16] = True
            ys, xs = np.nonzero(change)
            ends = np.append(xs[1:], width)
            ends[:-1][ys[1:] != ys[:-1]] = width
            ends = np.minimum(ends, (xs // 16 + 1) * 16)
            order = np.argsort(xs // 16, kind="stable")
            runs_by_tile: list[list[tuple[int, int, int, int]]] = [[] for _ in range(-(-width // 16))]
            for y, x, e, c in zip(ys[order].tolist(), xs[order].tolist(), ends[order].tolist(),
                                  band[ys[order], xs[order]].tolist()):
                runs_by_tile[x >> 4].append((y, x & 15, e - (x & ~15), c))
            for ti, runs in enumerate(runs_by_tile):
                tw = min(16, width - ti * 16)
                counts: dict[int, int] = {}
                for _y, x, e, c in runs:
                    counts[c] = counts.get(c, 0) + e - x
                if len(counts) == 1:
                    (colour,) = counts
                    if colour == last_bg:
                        out.append(0)
                    else:
                        out.append(2)
                        out += pixel(colour)
                        last_bg = colour
                    continue
                bg = max(counts, key=counts.__getitem__)
                mono = len(counts) == 2
                fg = next(c for c in counts if c != bg) if mono else None
                open_rects: dict[tuple[int, int, int], list[int]] = {}
                subrects: list[list[int]] = []
                for y, x, e, c in runs:
                    if c == bg:
                        continue
                    rect = open_rects.get((x, e, c))
                    if rect is not None and rect[2] + rect[4] == y:
                        rect[4] += 1
                        continue
                    rect = [c, x, y, e - x, 1]
                    open_rects[(x, e, c)] = rect
                    subrects.append(rect)
                body = bytearray()
                mask = 8
                if bg != last_bg:
                    mask |= 2
                    body += pixel(bg)
                if mono:
                    if fg != last_fg:
                        mask |= 4
                        body += pixel(fg)  # type: ignore[arg-type]
                    size = len(body) + 2 + 2 * len(subrects)
                else:
                    mask |= 16
                    size = len(body) + 2 + (2 + bpp) * len(subrects)
                if len(subrects) > 255 or size > th * tw * bpp:
                    out.append(1)
                    out += pf.to_bytes(band[:, ti * 16:ti * 16 + tw])
                    last_bg = last_fg = None
                    continue
                body.append(len(subrects))
                for colour, sx, sy, sw, sh in subrects:
                    if not mono:
                        body += pixel(colour)
                    body.append(sx << 4 | sy)
                    body.append((sw - 1) << 4 | (sh - 1))
                out.append(mask)
                out += body
                last_bg = bg
                last_fg = fg
        return bytes(out)

    # rfbproto §ZRLE Encoding.
    def _zrle_rect(self, region: Pixels) -> bytes:
        out = bytearray()
        height, width = region.shape
        for ty in range(0, height, 64):
            for tx in range(0, width, 64):
                out += self._zrle_tile(region[ty:ty + 64, tx:tx + 64])
        data = self._zrle.compress(bytes(out)) + self._zrle.flush(zlib.Z_SYNC_FLUSH)
        return struct.pack(">I", len(data)) + data

    def _zrle_tile(self, tile: Pixels) -> bytes:
        pf = self.pixel_format
        flat = tile.ravel()
        first = flat[0]
        if not (flat != first).any():
            return b"\x01" + pf.to_cpixels(flat[:1])
        cbytes = len(pf.to_cpixels(flat[:1]))
        palette, inverse = _palette(flat)
        n = len(palette)
        starts, lengths = _run_lengths(flat)
        length_bytes = (lengths - 1) // 255 + 1
        choices: list[tuple[int, str]] = [(flat.size * cbytes, "raw"),
                                          (len(starts) * cbytes + int(length_bytes.sum()), "rle")]
        if n <= 16:
            bits = 1 if n == 2 else 2 if n <= 4 else 4
            per_byte = 8 // bits
            packed = -(-tile.shape[1] // per_byte) * tile.shape[0]
            choices.append((n * cbytes + packed, "packed"))
        if n <= 127:
            runs = len(starts) + int((length_bytes * (lengths > 1)).sum())
            choices.append((n * cbytes + runs, "palette-rle"))
        _size, kind = min(choices)
        if kind == "raw":
            return b"\x00" + pf.to_cpixels(flat)
        if kind == "packed":
            indices = inverse.reshape(tile.shape).astype(np.uint8)
            return bytes((n,)) + pf.to_cpixels(palette) + _pack_indices(indices, bits)
        if kind == "rle":
            heads = np.frombuffer(pf.to_cpixels(flat[starts]), dtype=np.uint8).reshape(len(starts), cbytes)
            return b"\x80" + _runs(heads, lengths, np.ones(len(lengths), dtype=bool))
        has_length = lengths > 1
        heads = (inverse[starts] | (has_length << 7)).astype(np.uint8).reshape(-1, 1)
        return bytes((128 + n,)) + pf.to_cpixels(palette) + _runs(heads, lengths, has_length)

    # rfbproto §Tight Encoding, basic and fill compression only.
    def _tight_rects(self, region: Pixels, x: int, y: int) -> list[bytes]:
        height, width = region.shape
        rects = []
        for cx in range(0, width, self.TIGHT_MAX_WIDTH):
            cw = min(self.TIGHT_MAX_WIDTH, width - cx)
            rows = max(1, self.TIGHT_MAX_PIXELS // cw)
            for cy in range(0, height, rows):
                chunk = region[cy:cy + rows, cx:cx + cw]
                rects.append(rect_header(x + cx, y + cy, chunk.shape[1], chunk.shape[0], TIGHT)
                             + self._tight_rect(chunk))
        return rects

    def _tight_rect(self, chunk: Pixels) -> bytes:
        pf = self.pixel_format
        reset, self._tight_reset = self._tight_reset, 0
        flat = chunk.ravel()
        first = flat[0]
        if not (flat != first).any():
            return bytes((0x80 | reset,)) + pf.to_tpixels(flat[:1])
        palette, inverse = _palette(flat)
        n = len(palette)
        if n == 2:
            stream = 1
            head = bytes((0x40 | stream << 4 | reset, 1, 1)) + pf.to_tpixels(palette)
            data = np.packbits(inverse.reshape(chunk.shape).astype(bool), axis=1).tobytes()
        elif n <= self.TIGHT_MAX_PALETTE:
            stream = 2
            palette, indices = self._stable_palette(palette, inverse)
            head = bytes((0x40 | stream << 4 | reset, 1, len(palette) - 1)) + pf.to_tpixels(palette)
            data = indices.astype(np.uint8).tobytes()
        else:
            stream = 0
            head = bytes((stream << 4 | reset,))
            data = pf.to_tpixels(flat)
        if len(data) < self.TIGHT_MIN_TO_COMPRESS:
            return head + data
        z = self._tight[stream]
        packed = z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH)
        return head + _compact_length(len(packed)) + packed


    def _stable_palette(self, palette: Pixels, inverse: npt.NDArray[np.intp]) -> tuple[Pixels, npt.NDArray[np.intp]]:
        """A palette whose indices stay the same from one rectangle to the next.

        Terminal rows repeat glyphs; when a colour keeps its index, zlib's window
        finds the previous rows' bytes again (anti-aliased text: ~2 KB → ~1.1 KB per
        scrolled line). The connection's palette grows in first-seen order while it
        fits in 256 entries and costs at most twice the rectangle's own palette;
        otherwise the rectangle's own palette is used (and starts a new one).
        """
        known = self._tight_palette
        new = palette[~np.isin(palette, known)]
        merged = np.concatenate((known, new))
        if len(merged) > self.TIGHT_MAX_PALETTE or len(merged) > 2 * len(palette) + 16:
            self._tight_palette = palette.copy()
            return palette, inverse
        self._tight_palette = merged
        order = np.argsort(merged, kind="stable")
        position = order[np.searchsorted(merged[order], palette)]
        return merged, position[inverse]

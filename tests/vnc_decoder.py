"""An independent client-side RFB decoder, written from rfbproto alone, to check the server's bytes.

It shares no code with ``vzfs.vnc``: it parses the PIXEL_FORMAT itself, keeps its
own zlib inflaters and decodes byte by byte, so that a mistake in the encoders
cannot be mirrored here. The framebuffer holds client pixel values; ``rgb()``
turns them back into 8-bit components.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

import numpy as np


class DecodeError(Exception):
    pass


class Reader:
    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise DecodeError(f"need {n} bytes at {self.pos}, have {len(self.data) - self.pos}")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def s32(self) -> int:
        return int.from_bytes(self.take(4), "big", signed=True)

    def at_end(self) -> bool:
        return self.pos == len(self.data)


@dataclass
class Format:
    bpp: int
    depth: int
    big: bool
    true: bool
    maxes: tuple[int, int, int]
    shifts: tuple[int, int, int]
    colour_map: dict[int, tuple[int, int, int]] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: bytes) -> Format:
        bpp, depth, big, true = raw[0], raw[1], raw[2], raw[3]
        rmax, gmax, bmax = struct.unpack(">HHH", raw[4:10])
        return cls(bpp, depth, bool(big), bool(true), (rmax, gmax, bmax), (raw[10], raw[11], raw[12]))

    @property
    def size(self) -> int:
        return self.bpp // 8

    def pixel(self, b: bytes) -> int:
        return int.from_bytes(b, "big" if self.big else "little")

    # rfbproto §Tight: TPIXEL
    @property
    def tpixel_rgb(self) -> bool:
        return self.true and self.bpp == 32 and self.depth == 24 and self.maxes == (255, 255, 255)

    def read_tpixel(self, r: Reader) -> int:
        if self.tpixel_rgb:
            red, green, blue = r.take(3)
            return red << self.shifts[0] | green << self.shifts[1] | blue << self.shifts[2]
        return self.pixel(r.take(self.size))

    # rfbproto §ZRLE: CPIXEL
    def cpixel_mode(self) -> str:
        if not (self.true and self.bpp == 32 and self.depth <= 24):
            return "full"
        fields = list(zip(self.maxes, self.shifts))
        if all(m << s <= 0xFFFFFF for m, s in fields):
            return "low"
        if all(s >= 8 for _m, s in fields):
            return "high"
        return "full"

    def read_cpixel(self, r: Reader) -> int:
        mode = self.cpixel_mode()
        if mode == "full":
            return self.pixel(r.take(self.size))
        three = r.take(3)
        # the three bytes are in wire order: rebuild the 4-byte wire pixel
        if mode == "low":
            wire = three + b"\0" if not self.big else b"\0" + three
        else:
            wire = b"\0" + three if not self.big else three + b"\0"
        return self.pixel(wire)

    def components(self, v: int) -> tuple[int, int, int]:
        if not self.true:
            return self.colour_map[v]
        return tuple((v >> s) & m for m, s in zip(self.maxes, self.shifts))  # type: ignore[return-value]


class Decoder:
    """Client state: pixel format, framebuffer, zlib streams, pseudo-encoding results."""

    def __init__(self, pixel_format: bytes, width: int, height: int) -> None:
        self.fmt = Format.parse(pixel_format)
        self.width = width
        self.height = height
        self.fb = np.zeros((height, width), dtype=np.int64)
        self.zlib = zlib.decompressobj()
        self.zrle = zlib.decompressobj()
        self.tight = [zlib.decompressobj() for _ in range(4)]
        self.cursor: tuple[int, int, int, int, list[int], bytes] | None = None
        self.name: str | None = None
        self.desktop_sizes: list[tuple[int, int, int, int, list[tuple[int, ...]]]] = []
        self.encodings_seen: list[int] = []

    def set_pixel_format(self, pixel_format: bytes) -> None:
        self.fmt = Format.parse(pixel_format)

    def rgb_components(self) -> np.ndarray:
        """(H, W, 3) array of the decoded pixels' colour components, in client units."""
        out = np.zeros((self.height, self.width, 3), dtype=np.int64)
        for y in range(self.height):
            for x in range(self.width):
                out[y, x] = self.fmt.components(int(self.fb[y, x]))
        return out

    def server_message(self, data: bytes, pos: int = 0) -> int:
        """Decode one server-to-client message at ``pos``; return the position after it."""
        r = Reader(data, pos)
        kind = r.u8()
        if kind == 0:
            self._update(r)
        elif kind == 1:     # SetColourMapEntries
            r.take(1)
            first, n = r.u16(), r.u16()
            for i in range(n):
                red, green, blue = r.u16(), r.u16(), r.u16()
                self.fmt.colour_map[first + i] = (red >> 8, green >> 8, blue >> 8)
        elif kind == 2:     # Bell
            pass
        elif kind == 3:     # ServerCutText
            r.take(3)
            r.take(r.u32())
        else:
            raise DecodeError(f"unknown server message {kind}")
        return r.pos

    def _update(self, r: Reader) -> None:
        r.take(1)
        count = r.u16()
        i = 0
        while i < count:
            x, y, w, h, enc = r.u16(), r.u16(), r.u16(), r.u16(), r.s32()
            self.encodings_seen.append(enc)
            if enc == -224:                   # LastRect
                return
            self._rect(r, x, y, w, h, enc)
            i += 1

    def _rect(self, r: Reader, x: int, y: int, w: int, h: int, enc: int) -> None:
        f = self.fmt
        if enc >= 0 and (x + w > self.width or y + h > self.height):
            raise DecodeError(f"rectangle {x},{y} {w}x{h} outside {self.width}x{self.height}")
        if enc == 0:
            for yy in range(h):
                for xx in range(w):
                    self.fb[y + yy, x + xx] = f.pixel(r.take(f.size))
        elif enc == 1:
            sx, sy = r.u16(), r.u16()
            self.fb[y:y + h, x:x + w] = self.fb[sy:sy + h, sx:sx + w].copy()
        elif enc == 5:
            self._hextile(r, x, y, w, h)
        elif enc == 6:
            data = self.zlib.decompress(r.take(r.u32()))
            sub = Reader(data)
            for yy in range(h):
                for xx in range(w):
                    self.fb[y + yy, x + xx] = f.pixel(sub.take(f.size))
            if not sub.at_end():
                raise DecodeError("zlib rectangle has trailing data")
        elif enc == 7:
            self._tight(r, x, y, w, h)
        elif enc == 16:
            data = self.zrle.decompress(r.take(r.u32()))
            sub = Reader(data)
            self._zrle(sub, x, y, w, h)
            if not sub.at_end():
                raise DecodeError("ZRLE rectangle has trailing data")
        elif enc == -223:
            self._resize(w, h)
            self.desktop_sizes.append((x, y, w, h, []))
        elif enc == -308:
            n = r.u8()
            r.take(3)
            screens = [struct.unpack(">IHHHHI", r.take(16)) for _ in range(n)]
            if y == 0:
                self._resize(w, h)
            self.desktop_sizes.append((x, y, w, h, screens))
        elif enc == -239:
            pixels = [f.pixel(r.take(f.size)) for _ in range(w * h)]
            mask = r.take((w + 7) // 8 * h)
            self.cursor = (x, y, w, h, pixels, mask)
        elif enc == -307:
            self.name = r.take(r.u32()).decode("utf-8")
        else:
            raise DecodeError(f"unknown encoding {enc}")

    def _resize(self, w: int, h: int) -> None:
        if (w, h) != (self.width, self.height):
            self.width, self.height = w, h
            self.fb = np.zeros((h, w), dtype=np.int64)

    # rfbproto §Hextile
    def _hextile(self, r: Reader, x: int, y: int, w: int, h: int) -> None:
        f = self.fmt
        bg: int | None = None
        fg: int | None = None
        for ty in range(y, y + h, 16):
            th = min(16, y + h - ty)
            for tx in range(x, x + w, 16):
                tw = min(16, x + w - tx)
                mask = r.u8()
                if mask & 1:
                    for yy in range(th):
                        for xx in range(tw):
                            self.fb[ty + yy, tx + xx] = f.pixel(r.take(f.size))
                    bg = fg = None
                    continue
                if mask & 2:
                    bg = f.pixel(r.take(f.size))
                if bg is None:
                    raise DecodeError("hextile tile without a valid background")
                if mask & 4:
                    if mask & 16:
                        raise DecodeError("ForegroundSpecified with SubrectsColoured")
                    fg = f.pixel(r.take(f.size))
                self.fb[ty:ty + th, tx:tx + tw] = bg
                if mask & 8:
                    n = r.u8()
                    for _ in range(n):
                        if mask & 16:
                            colour = f.pixel(r.take(f.size))
                        else:
                            if fg is None:
                                raise DecodeError("hextile subrect without a valid foreground")
                            colour = fg
                        xy, wh = r.u8(), r.u8()
                        sx, sy, sw, sh = xy >> 4, xy & 15, (wh >> 4) + 1, (wh & 15) + 1
                        if sx + sw > tw or sy + sh > th:
                            raise DecodeError("hextile subrect outside its tile")
                        self.fb[ty + sy:ty + sy + sh, tx + sx:tx + sx + sw] = colour
                if mask & 16:
                    fg = None

    # rfbproto §ZRLE
    def _zrle(self, r: Reader, x: int, y: int, w: int, h: int) -> None:
        f = self.fmt
        for ty in range(y, y + h, 64):
            th = min(64, y + h - ty)
            for tx in range(x, x + w, 64):
                tw = min(64, x + w - tx)
                sub = r.u8()
                rle, size = sub & 128, sub & 127
                palette = [f.read_cpixel(r) for _ in range(size)]
                pixels: list[int] = []
                total = tw * th
                if not rle:
                    if size == 0:
                        pixels = [f.read_cpixel(r) for _ in range(total)]
                    elif size == 1:
                        pixels = palette * total
                    elif size <= 16:
                        bits = 1 if size == 2 else 2 if size <= 4 else 4
                        for _row in range(th):
                            row_bytes = r.take((tw * bits + 7) // 8)
                            value = int.from_bytes(row_bytes, "big")
                            nbits = len(row_bytes) * 8
                            for col in range(tw):
                                index = (value >> (nbits - bits * (col + 1))) & ((1 << bits) - 1)
                                pixels.append(palette[index])
                    else:
                        raise DecodeError(f"ZRLE subencoding {sub} unused")
                else:
                    if size == 1:
                        raise DecodeError("ZRLE subencoding 129 unused")
                    while len(pixels) < total:
                        if size == 0:
                            colour = f.read_cpixel(r)
                            run = self._run(r)
                        else:
                            index = r.u8()
                            colour = palette[index & 127]
                            run = self._run(r) if index & 128 else 1
                        pixels.extend([colour] * run)
                    if len(pixels) != total:
                        raise DecodeError("ZRLE run past the end of its tile")
                self.fb[ty:ty + th, tx:tx + tw] = np.array(pixels, dtype=np.int64).reshape(th, tw)

    @staticmethod
    def _run(r: Reader) -> int:
        length = 1
        while True:
            b = r.u8()
            length += b
            if b != 255:
                return length

    # rfbproto §Tight (no JPEG, no gradient: this server sends neither)
    def _tight(self, r: Reader, x: int, y: int, w: int, h: int) -> None:
        f = self.fmt
        if w > 2048:
            raise DecodeError("Tight rectangle wider than 2048")
        ctl = r.u8()
        for i in range(4):
            if ctl & (1 << i):
                self.tight[i] = zlib.decompressobj()
        method = ctl >> 4
        if method == 8:
            self.fb[y:y + h, x:x + w] = f.read_tpixel(r)
            return
        if method & 8:
            raise DecodeError(f"Tight compression {method:#x} not expected")
        stream = method & 3
        filter_id = r.u8() if method & 4 else 0
        if filter_id == 0:
            pixel_size = 3 if f.tpixel_rgb else f.size
            data = self._tight_data(r, stream, w * h * pixel_size)
            sub = Reader(data)
            values = [f.read_tpixel(sub) for _ in range(w * h)]
        elif filter_id == 1:
            n = r.u8() + 1
            palette = [f.read_tpixel(r) for _ in range(n)]
            if n == 2:
                row = (w + 7) // 8
                data = self._tight_data(r, stream, row * h)
                values = []
                for yy in range(h):
                    for xx in range(w):
                        bit = (data[yy * row + xx // 8] >> (7 - xx % 8)) & 1
                        values.append(palette[bit])
            else:
                data = self._tight_data(r, stream, w * h)
                values = [palette[b] for b in data]
        else:
            raise DecodeError(f"Tight filter {filter_id} not expected")
        self.fb[y:y + h, x:x + w] = np.array(values, dtype=np.int64).reshape(h, w)

    def _tight_data(self, r: Reader, stream: int, size: int) -> bytes:
        if size < 12:
            return r.take(size)
        b = r.u8()
        length = b & 0x7F
        if b & 0x80:
            b = r.u8()
            length |= (b & 0x7F) << 7
            if b & 0x80:
                length |= r.u8() << 14
        data = self.tight[stream].decompress(r.take(length))
        if len(data) != size:
            raise DecodeError(f"Tight data is {len(data)} bytes, expected {size}")
        return data

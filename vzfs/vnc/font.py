"""Glyph loading: turns a character cluster into a 1-bit mask one or two terminal cells wide.

Theory of operation. A `Font` asks a chain of glyph sources in turn: optionally a PSF
console font (a crisp bitmap, read by the small reader below), then GNU Unifont's
OpenType files rasterised by Pillow without antialiasing (Unifont's outlines are its
16-pixel bitmap, so rasterising at 16 px reproduces it exactly, 8×16 per cell and
16×16 for double-width CJK; Pillow's shaping places combining marks). A glyph no
source has becomes a replacement box. Styles the font cannot supply are synthesised
on the mask: bold by smearing one pixel to the right, italic by shearing the upper
half, underline and strikethrough as rows.
Masks are boolean arrays of shape (cell_height, cell_width × span).

The default font comes from the Debian package ``fonts-unifont`` (all of Unicode's
basic plane and more, wide characters included); a PSF font is an option.
"""

from __future__ import annotations

import gzip
import struct
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from vzfs.terminal.cell import BOLD, ITALIC, STRIKETHROUGH, UNDERLINE

Mask = npt.NDArray[np.bool_]

# Flags of a cell that change the glyph's shape, as opposed to its colours.
STYLE_FLAGS = BOLD | ITALIC | UNDERLINE | STRIKETHROUGH

UNIFONT_OTF = Path("/usr/share/fonts/opentype/unifont/unifont.otf")
UNIFONT_UPPER_OTF = Path("/usr/share/fonts/opentype/unifont/unifont_upper.otf")

# PSF magic numbers, from the kbd package's doc/font-formats (psf.h).
# Rasterised glyphs kept by a Font: 4096 of 16×16 are 1 MB.
GLYPH_CACHE_LIMIT = 4096

PSF1_MAGIC = b"\x36\x04"
PSF1_MODE512 = 0x01
PSF1_MODEHASTAB = 0x02
PSF1_MODESEQ = 0x04
PSF1_SEPARATOR = 0xFFFF
PSF1_STARTSEQ = 0xFFFE
PSF2_MAGIC = b"\x72\xb5\x4a\x86"
PSF2_HAS_UNICODE_TABLE = 0x01
PSF2_SEPARATOR = 0xFF
PSF2_STARTSEQ = 0xFE


class FontError(ValueError):
    """A font file is malformed or no font could be found."""


class GlyphSource(Protocol):
    """Anything that can draw some characters into cells of one size."""

    cell_width: int
    cell_height: int

    def glyph(self, text: str) -> Mask | None:
        """Return the mask for `text` (cell_height × cell_width·span) or None if absent."""
        ...


class PsfFont:
    """A PSF1 or PSF2 console font (optionally gzipped), as the Linux console uses."""

    def __init__(self, data: bytes, name: str = "<psf>") -> None:
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        self.name = name
        if data[:2] == PSF1_MAGIC:
            self._parse_psf1(data)
        elif data[:4] == PSF2_MAGIC:
            self._parse_psf2(data)
        else:
            raise FontError(f"cannot read font {name}: not a PSF1 or PSF2 file")

    @classmethod
    def load(cls, path: Path | str) -> PsfFont:
        return cls(Path(path).read_bytes(), str(path))

    def _parse_psf1(self, data: bytes) -> None:
        if len(data) < 4:
            raise FontError(f"cannot read font {self.name}: truncated PSF1 header")
        mode, height = data[2], data[3]
        count = 512 if mode & PSF1_MODE512 else 256
        self._set_bitmaps(data, 4, count, 8, height, height)
        table: dict[str, int] = {}
        if mode & (PSF1_MODEHASTAB | PSF1_MODESEQ):
            pos = 4 + count * height
            words = struct.unpack_from(f"<{(len(data) - pos) // 2}H", data, pos)
            self._read_table(words, PSF1_SEPARATOR, PSF1_STARTSEQ, count, table, utf8=False)
        self._finish_table(table, count)

    def _parse_psf2(self, data: bytes) -> None:
        if len(data) < 32:
            raise FontError(f"cannot read font {self.name}: truncated PSF2 header")
        (_, _, header_size, flags, count, char_size, height, width) = struct.unpack_from(
            "<4sIIIIIII", data)
        self._set_bitmaps(data, header_size, count, width, height, char_size)
        table: dict[str, int] = {}
        if flags & PSF2_HAS_UNICODE_TABLE:
            tail = data[header_size + count * char_size:]
            self._read_table(tail, PSF2_SEPARATOR, PSF2_STARTSEQ, count, table, utf8=True)
        self._finish_table(table, count)

    def _set_bitmaps(self, data: bytes, offset: int, count: int, width: int, height: int,
                     char_size: int) -> None:
        row_bytes = (width + 7) // 8
        if width < 1 or height < 1 or char_size != row_bytes * height:
            raise FontError(f"cannot read font {self.name}: inconsistent glyph size")
        end = offset + count * char_size
        if len(data) < end:
            raise FontError(f"cannot read font {self.name}: truncated glyph bitmaps")
        raw = np.frombuffer(data, np.uint8, count * char_size, offset)
        bits = np.unpackbits(raw.reshape(count, height, row_bytes), axis=2)
        self.cell_width = width
        self.cell_height = height
        self._bitmaps: Mask = bits[:, :, :width].astype(bool)

    def _read_table(self, table: Sequence[int], separator: int, start_seq: int, count: int,
                    out: dict[str, int], *, utf8: bool) -> None:
        # Each glyph's entry is a list of single code points, then zero or more
        # sequences (each introduced by start_seq), closed by separator.
        glyph = 0
        entry: list[int] = []
        for value in table:
            if glyph >= count:
                break
            if value == separator:
                self._store_entry(entry, start_seq, glyph, out, utf8)
                entry = []
                glyph += 1
            else:
                entry.append(value)

    def _store_entry(self, entry: list[int], start_seq: int, glyph: int, out: dict[str, int],
                     utf8: bool) -> None:
        parts: list[list[int]] = [[]]
        for value in entry:
            if value == start_seq:
                parts.append([])
            else:
                parts[-1].append(value)
        singles, sequences = parts[0], parts[1:]
        if utf8:
            text = bytes(singles).decode("utf-8", "replace")
            keys = list(text) + [bytes(s).decode("utf-8", "replace") for s in sequences]
        else:
            keys = [chr(c) for c in singles] + ["".join(map(chr, s)) for s in sequences]
        for key in keys:
            out.setdefault(key, glyph)

    def _finish_table(self, table: dict[str, int], count: int) -> None:
        if not table:
            # Without a Unicode table the glyph positions are the code points.
            table = {chr(i): i for i in range(count)}
        self._index = table

    def glyph(self, text: str) -> Mask | None:
        index = self._index.get(text)
        return None if index is None else self._bitmaps[index]


class OutlineFont:
    """A TrueType/OpenType font rasterised by Pillow with antialiasing off."""

    def __init__(self, path: Path | str, size: int, cell_width: int | None = None,
                 cell_height: int | None = None) -> None:
        self.name = str(path)
        self._font = ImageFont.truetype(str(path), size)
        ascent, descent = self._font.getmetrics()
        self.cell_height = cell_height or ascent + descent
        self.cell_width = cell_width or round(self._font.getlength("M"))
        # A font's .notdef glyph means "not covered": compare against it. U+10FFFF
        # is a noncharacter, so no font maps it.
        self._notdef = self._draw("\U0010ffff")

    def _draw(self, text: str) -> Mask:
        span = 2 if self._font.getlength(text) > self.cell_width * 1.5 else 1
        canvas = Image.new("1", (self.cell_width * 3, self.cell_height), 0)
        draw = ImageDraw.Draw(canvas)
        draw.fontmode = "1"
        draw.text((0, 0), text, font=self._font, fill=1)
        return np.array(canvas)[:, :self.cell_width * span]

    def glyph(self, text: str) -> Mask | None:
        try:
            mask = self._draw(text)
        except (RuntimeError, ValueError, OSError):
            # Pillow refuses some strings (raqm_layout fails on a cluster with a
            # newline, a lone surrogate cannot be encoded): no glyph, not a crash.
            return None
        if mask.shape == self._notdef.shape and np.array_equal(mask, self._notdef):
            return None
        return mask


class Font:
    """A chain of glyph sources with shared cell size, producing styled cell masks."""

    def __init__(self, sources: Sequence[GlyphSource]) -> None:
        if not sources:
            raise FontError("cannot build a font: no glyph source given")
        self.sources = list(sources)
        self.cell_width = sources[0].cell_width
        self.cell_height = sources[0].cell_height
        for source in sources[1:]:
            if (source.cell_width, source.cell_height) != (self.cell_width, self.cell_height):
                raise FontError(
                    f"cannot combine fonts: {source.cell_width}x{source.cell_height} cells"
                    f" differ from {self.cell_width}x{self.cell_height}")
        # Row positions for synthesised lines: underline just below the baseline
        # (Unifont's baseline leaves two rows of descent), strike through the x-height.
        self._found: dict[str, Mask | None] = {}
        self.underline_row = self.cell_height - 2
        self.strike_row = self.cell_height * 9 // 16

    def lookup(self, text: str) -> Mask | None:
        """The first source's mask for `text`; a cluster is looked up composed (NFC)
        first, so that canonically equivalent sequences look alike (Unicode conformance
        clause C6) while the emulator keeps what the program wrote, then as written,
        then as its base char."""
        if text in self._found:
            return self._found[text]
        if len(self._found) >= GLYPH_CACHE_LIMIT:
            # A program printing all of Unicode must not grow the cache without bound.
            self._found.clear()
        found = None
        candidates = [text]
        if len(text) > 1:
            composed = unicodedata.normalize("NFC", text)
            candidates = [composed, text, text[:1]] if composed != text else [text, text[:1]]
        for candidate in candidates:
            for source in self.sources:
                found = source.glyph(candidate)
                if found is not None:
                    break
            if found is not None:
                break
        self._found[text] = found
        return found

    def replacement(self, span: int) -> Mask:
        """A visible hollow box, drawn for characters no source covers."""
        width = self.cell_width * span
        mask = np.zeros((self.cell_height, width), bool)
        top, bottom, left, right = 2, self.cell_height - 3, 1, width - 2
        mask[top, left:right + 1] = True
        mask[bottom, left:right + 1] = True
        mask[top:bottom + 1, left] = True
        mask[top:bottom + 1, right] = True
        return mask

    def mask(self, text: str, style: int = 0, span: int = 1) -> Mask:
        """The mask of `text` drawn over `span` cells with the STYLE_FLAGS in `style`."""
        width = self.cell_width * span
        found = self.lookup(text) if text.strip() else None
        if found is None:
            out = np.zeros((self.cell_height, width), bool)
            if text.strip():
                out = self.replacement(span)
        elif found.shape[1] == width:
            out = found.copy()      # styles below draw on it; the cached glyph stays
        elif found.shape[1] < width:
            # A narrow glyph in a double-width cell is centred, as xterm does.
            out = np.zeros((self.cell_height, width), bool)
            left = (width - found.shape[1]) // 2
            out[:, left:left + found.shape[1]] = found
        else:
            out = found[:, :width].copy()
        if style & BOLD:
            out[:, 1:] |= out[:, :-1].copy()
        if style & ITALIC:
            upper = self.cell_height // 2
            out[:upper, 1:] = out[:upper, :-1].copy()
            out[:upper, 0] = False
        if style & UNDERLINE:
            out[self.underline_row, :] = True
        if style & STRIKETHROUGH:
            out[self.strike_row, :] = True
        return out


def default_font(console_font: Path | str | None = None) -> Font:
    """GNU Unifont from its OpenType files, optionally after a PSF console font.

    A console font (say /usr/share/consolefonts/Uni2-VGA16.psf.gz for the VGA look)
    takes precedence for the glyphs it has. It is not the default: even psf-unifont's
    Unifont-APL8x16 replaces some glyphs (U+2588 FULL BLOCK among them) with APL shapes.
    """
    sources: list[GlyphSource] = []
    if console_font is not None:
        sources.append(PsfFont.load(console_font))
    if not UNIFONT_OTF.exists():
        raise FontError(f"cannot load the terminal font: {UNIFONT_OTF} is missing"
                        " (install the Debian package fonts-unifont)")
    for path in (UNIFONT_OTF, UNIFONT_UPPER_OTF):
        if path.exists():
            sources.append(OutlineFont(path, 16, 8, 16))
    return Font(sources)

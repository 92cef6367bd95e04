"""Tests of glyph loading: the PSF reader on bytes built here, and the installed Unifont."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from vzfs.terminal.cell import BOLD, ITALIC, STRIKETHROUGH, UNDERLINE
from vzfs.vnc import font as fontmod
from vzfs.vnc.font import Font, FontError, OutlineFont, PsfFont

needs_unifont = pytest.mark.skipif(
    not fontmod.UNIFONT_OTF.exists(),
    reason=f"{fontmod.UNIFONT_OTF} missing: install the Debian package fonts-unifont")

# Two 10×3 glyphs (two bytes per row, MSB first): a bar and a corner.
BAR = [0b11111111_11000000, 0, 0]
CORNER = [0b10000000_00000000, 0b10000000_00000000, 0b11111111_11000000]


def psf2(glyphs: list[list[int]], table: bytes | None, width: int = 10) -> bytes:
    height = len(glyphs[0])
    row_bytes = (width + 7) // 8
    bitmaps = b"".join(v.to_bytes(row_bytes, "big") for glyph in glyphs for v in glyph)
    header = struct.pack("<4sIIIIIII", fontmod.PSF2_MAGIC, 0, 32, 1 if table else 0,
                         len(glyphs), row_bytes * height, height, width)
    return header + bitmaps + (table or b"")


def bits(rows: list[int], width: int = 10) -> np.ndarray:
    return np.array([[bool(v >> (15 - x) & 1) for x in range(width)] for v in rows])


def glyph(font: PsfFont, text: str) -> np.ndarray:
    mask = font.glyph(text)
    assert mask is not None, text
    return mask


def test_psf2_glyphs_and_unicode_table() -> None:
    # Glyph 0 is "-" and "—"; glyph 1 is "L" and the sequence "L" + U+0301.
    table = "-—".encode() + b"\xff" + b"L" + b"\xfe" + "L\u0301".encode() + b"\xff"
    font = PsfFont(psf2([BAR, CORNER], table))
    assert (font.cell_width, font.cell_height) == (10, 3)
    assert np.array_equal(glyph(font, "-"), bits(BAR))
    assert np.array_equal(glyph(font, "—"), bits(BAR))
    assert np.array_equal(glyph(font, "L"), bits(CORNER))
    assert np.array_equal(glyph(font, "L\u0301"), bits(CORNER))
    assert font.glyph("x") is None


def test_psf2_without_table_maps_positions_and_reads_gzip() -> None:
    font = PsfFont(gzip.compress(psf2([BAR, CORNER], None)))
    assert np.array_equal(glyph(font, "\x01"), bits(CORNER))


def test_psf1_with_table() -> None:
    rows = [0x18, 0x24, 0x42, 0x7E]
    bitmaps = bytes(rows) + bytes(4) * 255
    # PSF1: every glyph's entry is UCS-2 little-endian values closed by 0xFFFF.
    table = struct.pack("<HHH", ord("A"), ord("Α"), 0xFFFF) + struct.pack("<H", 0xFFFF) * 255
    font = PsfFont(fontmod.PSF1_MAGIC + bytes([fontmod.PSF1_MODEHASTAB, 4]) + bitmaps + table)
    expected = np.unpackbits(np.array(rows, np.uint8)[:, None], axis=1).astype(bool)
    assert np.array_equal(glyph(font, "A"), expected)
    assert np.array_equal(glyph(font, "Α"), expected)
    assert font.glyph("B") is None


@pytest.mark.parametrize("data", [
    b"",
    b"not a font at all",
    psf2([BAR, CORNER], None)[:40],                 # truncated bitmaps
    fontmod.PSF2_MAGIC + bytes(10),                 # truncated header
    fontmod.PSF1_MAGIC + b"\x00\x10" + bytes(100),  # 256 glyphs promised, 6 present
])
def test_malformed_psf_is_refused(data: bytes) -> None:
    with pytest.raises(FontError):
        PsfFont(data)


def test_styles_are_synthesised() -> None:
    font = Font([PsfFont(psf2([BAR, CORNER], None))])
    plain = font.mask("\x01")
    bold = font.mask("\x01", BOLD)
    assert (bold >= plain).all() and bold.sum() > plain.sum()
    assert font.mask("\x01", UNDERLINE)[font.underline_row].all()
    assert font.mask("\x01", STRIKETHROUGH)[font.strike_row].all()
    assert font.mask("\x01", ITALIC).sum() == plain.sum()


def test_missing_glyph_is_a_visible_box() -> None:
    font = Font([PsfFont(psf2([BAR, CORNER], None))])
    box = font.mask("\U0010fffd")
    assert box.any() and np.array_equal(box, font.replacement(1))
    assert not font.mask(" ").any() and not font.mask("").any()


def test_fonts_with_different_cells_do_not_combine() -> None:
    with pytest.raises(FontError):
        Font([PsfFont(psf2([BAR], None)), PsfFont(psf2([[0xFF, 0, 0]], None, width=8))])


@needs_unifont
def test_unifont_cells_and_wide_glyphs() -> None:
    font = fontmod.default_font()
    assert (font.cell_width, font.cell_height) == (8, 16)
    assert font.mask("A").shape == (16, 8) and font.mask("A").any()
    wide = font.mask("中", span=2)
    assert wide.shape == (16, 16)
    assert wide[:, :8].any() and wide[:, 8:].any()
    # Box drawing joins edge to edge: a horizontal line fills its row.
    assert font.mask("─").any(axis=0).all()
    assert np.array_equal(font.mask("\U0010fffd"), font.replacement(1))
    assert np.array_equal(font.mask("\U0010fffd", span=2), font.replacement(2))


def test_a_decomposed_cluster_takes_the_composed_glyph() -> None:
    """The emulator keeps e + U+0301 as written; a console font that has only the
    precomposed é must still draw it as é, not as its base e."""
    table = b"e\xff" + "\u00e9".encode() + b"\xff"
    font = Font([PsfFont(psf2([BAR, CORNER], table))])
    assert np.array_equal(font.mask("e\u0301"), font.mask("\u00e9"))
    assert np.array_equal(font.mask("e\u0301")[:, :10], bits(CORNER))


@needs_unifont
def test_combining_mark_is_drawn_over_its_base() -> None:
    font = fontmod.default_font()
    plain, marked = font.mask("e"), font.mask("e\u0301")
    assert marked.any() and not np.array_equal(plain, marked)


@needs_unifont
def test_outline_font_is_not_antialiased() -> None:
    otf = OutlineFont(fontmod.UNIFONT_OTF, 16, 8, 16)
    glyph = otf.glyph("g")
    assert glyph is not None and glyph.dtype == bool and glyph.any()
    assert otf.glyph("\U0010fffd") is None


@needs_unifont
def test_console_font_takes_precedence(tmp_path: Path) -> None:
    # An 8×16 PSF2 whose only glyph, mapped to "A", is a full block.
    path = tmp_path / "block.psf.gz"
    path.write_bytes(gzip.compress(psf2([[0xFF] * 16], b"A\xff", width=8)))
    font = fontmod.default_font(path)
    assert font.mask("A").all()
    assert font.mask("B").any() and not font.mask("B").all()
    assert font.mask("中", span=2).shape == (16, 16)

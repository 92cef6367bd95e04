"""Golden tests of the renderer: frames are checked against a per-pixel reference built
here from the font's own masks, and every Damage is replayed on a simulated client."""

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vzfs.terminal.cell import (BLANK, BLINK, BOLD, CONCEAL, DEFAULT_BG, DIM, ITALIC, REVERSE,
                                STRIKETHROUGH, UNDERLINE, WIDE, WIDE_CONT, Cell)
from vzfs.vnc import font as fontmod
from vzfs.vnc import render as rendermod
from vzfs.vnc.render import CursorShape, Damage, Renderer, cursor_shape

pytestmark = pytest.mark.skipif(
    not fontmod.UNIFONT_OTF.exists(),
    reason=f"{fontmod.UNIFONT_OTF} missing: install the Debian package fonts-unifont")

FONT = fontmod.default_font() if fontmod.UNIFONT_OTF.exists() else None
CW, CH = 8, 16
RED, BLUE, GREEN, WHITE = 0xFF0000, 0x0000FF, 0x00FF00, 0xFFFFFF
STYLE = BOLD | ITALIC | UNDERLINE | STRIKETHROUGH


def rgb(colour: int) -> np.ndarray:
    return np.array([colour >> 16, colour >> 8 & 255, colour & 255], np.uint8)


def drawn(cell: Cell) -> tuple[int, int]:
    """The colours a cell is drawn with: DIM halves each channel of the foreground,
    REVERSE swaps foreground and background, CONCEAL paints the glyph as background."""
    fg, bg = cell.fg, cell.bg
    if cell.flags & DIM:
        fg = (fg >> 16 & 255) // 2 << 16 | (fg >> 8 & 255) // 2 << 8 | (fg & 255) // 2
    if cell.flags & REVERSE:
        fg, bg = bg, fg
    if cell.flags & CONCEAL:
        fg = bg
    return fg, bg


def reference(rows: list[list[Cell]], columns: int, lines: int) -> np.ndarray:
    """The expected frame, drawn cell by cell in plain Python from Font.mask."""
    assert FONT is not None
    frame = np.zeros((lines * CH, columns * CW, 3), np.uint8)
    frame[:] = rgb(DEFAULT_BG)
    for y in range(lines):
        row = list(rows[y]) if y < len(rows) else []
        row = (row + [BLANK] * columns)[:columns]
        for x, cell in enumerate(row):
            fg, bg = drawn(cell)
            if cell.flags & WIDE_CONT and x > 0 and row[x - 1].flags & (WIDE | WIDE_CONT) == WIDE:
                left = row[x - 1]
                mask = FONT.mask(left.char, left.flags & STYLE, 2)[:, CW:]
                fg, bg = drawn(left)
            elif cell.flags & (WIDE | WIDE_CONT) == WIDE:
                mask = FONT.mask(cell.char, cell.flags & STYLE, 2)[:, :CW]
            else:
                char = "" if cell.flags & WIDE_CONT else cell.char
                mask = FONT.mask(char, cell.flags & STYLE, 1)
            block = np.where(mask[:, :, None], rgb(fg), rgb(bg))
            frame[y * CH:(y + 1) * CH, x * CW:(x + 1) * CW] = block
    return frame


def text_row(text: str, fg: int = 0xAAAAAA, bg: int = DEFAULT_BG, flags: int = 0) -> list[Cell]:
    return [Cell(char, fg, bg, flags) for char in text]


def sample_screen(columns: int = 20, lines: int = 6) -> list[list[Cell]]:
    rows = [text_row(f"line {y} ─│┼ abcXYZ 0123456789"[:columns]) for y in range(lines)]
    rows[1][0:4] = [Cell("B", RED, BLUE, BOLD), Cell("u", GREEN, 0, UNDERLINE),
                    Cell("r", WHITE, RED, REVERSE), Cell("s", BLUE, WHITE, STRIKETHROUGH)]
    rows[2][3:5] = [Cell("中", RED, BLUE, WIDE), Cell("", RED, BLUE, WIDE_CONT)]
    rows[3][0:2] = [Cell("e\u0301", WHITE, 0, 0), Cell("\U0010fffd", WHITE, 0, 0)]
    rows[4][0:4] = [Cell("d", RED, BLUE, DIM), Cell("c", RED, BLUE, CONCEAL),
                    Cell("C", RED, BLUE, CONCEAL | REVERSE), Cell("D", WHITE, 0, DIM | REVERSE)]
    return rows


class Client:
    """A VNC client's copy of the framebuffer, kept up to date only through Damage."""

    def __init__(self, renderer: Renderer) -> None:
        self.renderer = renderer
        self.frame = renderer.framebuffer.copy()

    def apply(self, damage: Damage) -> None:
        fb = self.renderer.framebuffer
        if damage.copy is not None:
            c = damage.copy
            self.frame[c.y:c.y + c.height, c.x:c.x + c.width] = \
                self.frame[c.src_y:c.src_y + c.height, c.src_x:c.src_x + c.width].copy()
        for r in damage.rects:
            self.frame[r.y:r.y + r.height, r.x:r.x + r.width] = \
                fb[r.y:r.y + r.height, r.x:r.x + r.width]
        assert np.array_equal(self.frame, fb)


def make(columns: int = 20, lines: int = 6, **kwargs: int) -> Renderer:
    renderer = Renderer(columns, lines, FONT, **kwargs)
    renderer.set_cursor(0, 0, visible=False)
    return renderer


def test_framebuffer_layout() -> None:
    r = make(20, 6)
    fb = r.framebuffer
    assert fb.shape == (6 * CH, 20 * CW, 3) and fb.dtype == np.uint8
    assert fb.flags.c_contiguous
    assert (r.columns, r.lines, r.width, r.height) == (20, 6, 160, 96)


def test_full_render_matches_reference() -> None:
    rows = sample_screen()
    r = make()
    r.render_all(rows)
    assert np.array_equal(r.framebuffer, reference(rows, 20, 6))


def test_cell_has_only_its_two_colours() -> None:
    r = make(4, 1)
    r.render_all([[Cell("W", RED, BLUE, BOLD | UNDERLINE)]])
    cell = r.framebuffer[:CH, :CW].reshape(-1, 3)
    colours = {tuple(p) for p in cell}
    assert colours == {tuple(rgb(RED)), tuple(rgb(BLUE))}


def test_reverse_swaps_fg_and_bg() -> None:
    r = make(2, 1)
    r.render_all([[Cell("R", RED, BLUE, REVERSE), Cell("R", BLUE, RED, 0)]])
    assert np.array_equal(r.framebuffer[:, :CW], r.framebuffer[:, CW:])


def test_dim_is_half_intensity() -> None:
    r = make(2, 1)
    r.render_all([[Cell("W", 0xAAAAAA, BLUE, DIM), Cell("W", 0xFF5555, BLUE, DIM)]])
    grey, red = (r.framebuffer[:, x * CW:(x + 1) * CW].reshape(-1, 3) for x in range(2))
    assert {tuple(p) for p in grey} == {tuple(rgb(0x555555)), tuple(rgb(BLUE))}
    assert {tuple(p) for p in red} == {tuple(rgb(0x7F2A2A)), tuple(rgb(BLUE))}


def test_concealed_text_is_drawn_in_its_background() -> None:
    r = make(3, 1)
    r.render_all([[Cell("W", RED, BLUE, CONCEAL | UNDERLINE), Cell("W", RED, BLUE, CONCEAL | REVERSE),
                   Cell(" ", RED, BLUE, 0)]])
    hidden, reversed_, blank = (r.framebuffer[:, x * CW:(x + 1) * CW] for x in range(3))
    assert np.array_equal(hidden, blank)
    assert (reversed_.reshape(-1, 3) == rgb(RED)).all()


def test_reverse_screen_swaps_every_cell_and_the_padding() -> None:
    rows = sample_screen()
    r = make(20, 6, width=20 * CW + 3, height=6 * CH + 5)
    r.render_all(rows)
    shown = r.framebuffer.copy()
    client = Client(r)
    client.apply(r.set_reverse_screen(True))
    swapped = [[cell._replace(flags=cell.flags ^ REVERSE) for cell in row] for row in rows]
    assert np.array_equal(r.framebuffer[:6 * CH, :20 * CW], reference(swapped, 20, 6))
    assert (r.framebuffer[6 * CH:].reshape(-1, 3) == rgb(0xAAAAAA)).all()
    assert (r.framebuffer[:, 20 * CW:].reshape(-1, 3) == rgb(0xAAAAAA)).all()
    assert r.set_reverse_screen(True) == Damage()
    client.apply(r.scroll(0, 6, 1))
    assert (r.framebuffer[5 * CH:6 * CH, :20 * CW].reshape(-1, 3) == rgb(0xAAAAAA)).all()
    client.apply(r.render_all(rows))
    client.apply(r.set_reverse_screen(False))
    assert np.array_equal(r.framebuffer, shown)


def test_palette_recolours_the_basic_colours_already_drawn() -> None:
    rows = [[Cell("r", 0xAA0000, 0x000000, 0), Cell("R", 0xAA0000, 0x0000AA, REVERSE),
             Cell("d", 0xAAAAAA, 0x000000, DIM), Cell("t", 0xAA0001, 0x000000, 0)]]
    r = make(4, 1, width=4 * CW + 3)
    r.render_all(rows)
    shown = r.framebuffer.copy()
    client = Client(r)
    palette = [0x000000, 0xFF0000, 0x00AA00, 0xAA5500, 0x0000AA, 0xAA00AA, 0x00AAAA, 0xAAAAAA,
               0x555555, 0xFF5555, 0x55FF55, 0xFFFF55, 0x5555FF, 0xFF55FF, 0x55FFFF, 0xFFFFFF]
    palette[0], palette[7] = 0x102030, 0xCCCCCC
    client.apply(r.set_palette(palette))
    assert r.set_palette(palette) == Damage()
    recoloured = [[Cell("r", 0xFF0000, 0x102030, 0), Cell("R", 0xFF0000, 0x0000AA, REVERSE),
                   Cell("d", 0xCCCCCC, 0x102030, DIM), Cell("t", 0xAA0001, 0x102030, 0)]]
    assert np.array_equal(r.framebuffer[:, :4 * CW], reference(recoloured, 4, 1)[:, :4 * CW])
    assert (r.framebuffer[:, 4 * CW:].reshape(-1, 3) == rgb(0x102030)).all()
    palette[0], palette[1], palette[7] = 0x000000, 0xAA0000, 0xAAAAAA
    client.apply(r.set_palette(palette))
    assert np.array_equal(r.framebuffer, shown)
    with pytest.raises(ValueError):
        r.set_palette(palette[:8])


def test_underline_and_strikethrough_rows_are_set() -> None:
    r = make(3, 1)
    r.render_all([[Cell("a", RED, BLUE, 0), Cell("a", RED, BLUE, UNDERLINE),
                   Cell("a", RED, BLUE, STRIKETHROUGH)]])
    plain, under, strike = (r.framebuffer[:, x * CW:(x + 1) * CW] for x in range(3))
    assert FONT is not None
    assert (under[FONT.underline_row] == rgb(RED)).all()
    assert (strike[FONT.strike_row] == rgb(RED)).all()
    others = [y for y in range(CH) if y != FONT.underline_row]
    assert np.array_equal(plain[others], under[others])


def test_wide_character_spans_two_cells() -> None:
    r = make(4, 1)
    r.render_all([[Cell("中", RED, BLUE, WIDE), Cell("", RED, BLUE, WIDE_CONT)]])
    assert FONT is not None
    expected = np.where(FONT.mask("中", 0, 2)[:, :, None], rgb(RED), rgb(BLUE))
    assert np.array_equal(r.framebuffer[:, :2 * CW], expected)


def test_render_rows_equals_slice_of_full_render() -> None:
    rows = sample_screen()
    full = make()
    full.render_all(rows)
    partial = make()
    client = Client(partial)
    client.apply(partial.render_rows({1: rows[1], 2: rows[2], 4: rows[4]}))
    for y in (1, 2, 4):
        band = slice(y * CH, (y + 1) * CH)
        assert np.array_equal(partial.framebuffer[band], full.framebuffer[band])
    assert not partial.framebuffer[3 * CH:4 * CH].any()


def test_short_and_long_rows_are_padded_and_cut() -> None:
    r = make(5, 2)
    r.render_all([text_row("ab"), text_row("abcdefgh")])
    assert np.array_equal(r.framebuffer, reference([text_row("ab"), text_row("abcde")], 5, 2))


def test_render_rows_refuses_lines_off_screen() -> None:
    with pytest.raises(ValueError):
        make(5, 2).render_rows({2: text_row("x")})


@pytest.mark.parametrize("shape", list(CursorShape))
def test_cursor_moves_and_hides_restoring_pixels_exactly(shape: CursorShape) -> None:
    rows = sample_screen()
    r = make()
    r.render_all(rows)
    clean = r.framebuffer.copy()
    client = Client(r)
    client.apply(r.set_cursor(3, 1, shape=shape))
    changed = np.argwhere((r.framebuffer != clean).any(axis=2))
    assert len(changed) > 0
    assert changed[:, 0].min() >= CH and changed[:, 0].max() < 2 * CH
    assert changed[:, 1].min() >= 3 * CW and changed[:, 1].max() < 4 * CW
    client.apply(r.set_cursor(7, 4, shape=shape))
    assert np.array_equal(r.framebuffer[:3 * CH], clean[:3 * CH])
    client.apply(r.set_cursor(7, 4, visible=False, shape=shape))
    assert np.array_equal(r.framebuffer, clean)


def test_decscusr_styles_map_to_shapes() -> None:
    assert [cursor_shape(style) for style in range(7)] == [
        CursorShape.BLOCK, CursorShape.BLOCK, CursorShape.BLOCK, CursorShape.UNDERLINE,
        CursorShape.UNDERLINE, CursorShape.BAR, CursorShape.BAR]


def test_block_cursor_is_the_reversed_cell() -> None:
    r = make(2, 1)
    r.render_all([[Cell("k", RED, BLUE, 0)]])
    r.set_cursor(0, 0)
    other = make(2, 1)
    other.render_all([[Cell("k", BLUE, RED, 0)]])
    assert np.array_equal(r.framebuffer, other.framebuffer)


def test_cursor_on_wide_character_covers_both_cells() -> None:
    rows = sample_screen()
    r = make()
    r.render_all(rows)
    clean = r.framebuffer.copy()
    r.set_cursor(4, 2)      # the right half of 中
    changed = np.argwhere((r.framebuffer != clean).any(axis=2))
    assert changed[:, 1].min() < 4 * CW <= changed[:, 1].max()


def test_cursor_survives_rerendering_its_row() -> None:
    rows = sample_screen()
    r = make()
    r.render_all(rows)
    r.set_cursor(2, 0)
    with_cursor = r.framebuffer.copy()
    client = Client(r)
    client.apply(r.render_rows({0: rows[0]}))
    assert np.array_equal(r.framebuffer, with_cursor)


def test_blank_cursor_on_equal_colours_is_still_visible() -> None:
    r = make(2, 1)
    r.render_all([[Cell("x", BLUE, BLUE, 0)]])
    clean = r.framebuffer.copy()
    r.set_cursor(0, 0)
    assert not np.array_equal(r.framebuffer, clean)


def scrolled(rows: list[list[Cell]], top: int, bottom: int, count: int,
             new: dict[int, list[Cell]]) -> list[list[Cell]]:
    out = [list(row) for row in rows]
    region = out[top:bottom]
    height = bottom - top
    if count == 0:
        pass
    elif count > 0:
        region = region[count:] + [[]] * min(count, height)
    else:
        region = [[]] * min(-count, height) + region[:count]
    out[top:bottom] = region[:height]
    for y, row in new.items():
        out[y] = row
    return out


@settings(max_examples=60, deadline=None)
@given(top=st.integers(0, 5), height=st.integers(1, 6), count=st.integers(-7, 7),
       cursor=st.tuples(st.integers(0, 19), st.integers(0, 5)), cursor_on=st.booleans())
def test_scroll_equals_rerendering(top: int, height: int, count: int,
                                   cursor: tuple[int, int], cursor_on: bool) -> None:
    bottom = min(top + height, 6)
    rows = sample_screen()
    r = make()
    r.render_all(rows)
    r.set_cursor(*cursor, visible=cursor_on)
    client = Client(r)
    damage = r.scroll(top, bottom, count)
    client.apply(damage)
    if count:
        exposed = range(bottom - min(count, bottom - top), bottom) if count > 0 else \
            range(top, top + min(-count, bottom - top))
        new = {y: text_row(f"new {y}") for y in exposed}
        client.apply(r.render_rows(new))
    else:
        new = {}
    expected = make()
    expected.render_all(scrolled(rows, top, bottom, count, new))
    expected.set_cursor(*cursor, visible=cursor_on)
    assert np.array_equal(r.framebuffer, expected.framebuffer)
    if count and abs(count) < bottom - top:
        assert damage.copy is not None


def test_scroll_by_one_line_is_one_copy_and_one_line() -> None:
    r = make()
    r.render_all(sample_screen())
    damage = r.scroll(0, 6, 1)
    assert damage.copy == rendermod.CopyRect(0, 0, 20 * CW, 5 * CH, 0, CH)
    assert damage.rects == (rendermod.Rect(0, 5 * CH, 20 * CW, CH),)


def test_scroll_fills_exposed_lines_with_the_erase_colour() -> None:
    r = make(4, 3)
    r.render_all([text_row("abcd")] * 3)
    r.scroll(0, 3, -1, fill=BLUE)
    assert (r.framebuffer[:CH].reshape(-1, 3) == rgb(BLUE)).all()


@pytest.mark.parametrize("width,height", [(645, 403), (161, 17), (8, 16), (1001, 999)])
def test_exact_pixel_size_is_padded(width: int, height: int) -> None:
    rows = sample_screen()
    r = Renderer(font=FONT, width=width, height=height, padding=GREEN)
    r.set_cursor(0, 0, visible=False)
    client = Client(r)
    client.apply(r.render_all(rows))
    columns, lines = width // CW, height // CH
    assert r.framebuffer.shape == (height, width, 3)
    assert (r.columns, r.lines) == (columns, lines)
    grid = r.framebuffer[:lines * CH, :columns * CW]
    assert np.array_equal(grid, reference(rows, columns, lines))
    pad = np.concatenate([r.framebuffer[:, columns * CW:].reshape(-1, 3),
                          r.framebuffer[lines * CH:].reshape(-1, 3)])
    assert (pad == rgb(GREEN)).all()


def test_pixel_size_smaller_than_a_cell_is_refused() -> None:
    with pytest.raises(ValueError):
        Renderer(font=FONT, width=7, height=100)


def test_resize_keeps_what_it_knows() -> None:
    rows = sample_screen()
    r = make()
    r.render_all(rows)
    r.resize(10, 3)
    assert r.framebuffer.shape == (3 * CH, 10 * CW, 3)
    assert np.array_equal(r.framebuffer, reference(rows, 10, 3))
    r.resize_pixels(30 * CW + 3, 8 * CH + 5)
    assert (r.columns, r.lines) == (30, 8)
    assert np.array_equal(r.framebuffer[:8 * CH, :30 * CW], reference(rows[:3], 30, 8))


def test_atlas_is_cleared_when_full_and_frames_stay_right(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rendermod, "TILE_LIMIT", 16)
    r = make(8, 2)
    for shade in range(40):
        rows = [[Cell(chr(65 + (shade + x) % 26), shade * 0x010203, 0, 0) for x in range(8)]
                for _ in range(2)]
        r.render_all(rows)
        assert np.array_equal(r.framebuffer, reference(rows, 8, 2))
    assert r._tiles_used <= 4 * 16


def test_render_and_font_import_no_io_modules() -> None:
    forbidden = {"trio", "socket", "pyfuse3", "cffi"}
    root = Path(rendermod.__file__).parent
    for name in ("render.py", "font.py"):
        tree = ast.parse((root / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not {n.split(".")[0] for n in names} & forbidden, (name, names)
    # Transitively too: importing the renderer must not pull them in.
    code = ("import sys, vzfs.vnc.render; "
            f"print(sorted(m for m in {sorted(forbidden)!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=root.parent.parent)
    assert out.stdout.strip() == "[]"


odd_chars = st.sampled_from(["中", "😀", "e\u0301", "\ud800", "\x00"])
cells = st.builds(
    Cell,
    char=st.one_of(st.text(max_size=3), odd_chars),
    fg=st.integers(0, 0xFFFFFF), bg=st.integers(0, 0xFFFFFF), flags=st.integers(0, 1023))


@settings(max_examples=150, deadline=None)
@given(rows=st.lists(st.lists(cells, max_size=8), min_size=1, max_size=3),
       cursor=st.tuples(st.integers(-1, 9), st.integers(-1, 3)))
def test_any_cells_render_in_their_own_colours(rows: list[list[Cell]],
                                               cursor: tuple[int, int]) -> None:
    r = make(6, 3)
    r.render_all(rows)
    for y, row in enumerate(rows[:3]):
        for x, cell in enumerate(row[:6]):
            if cell.flags & WIDE_CONT and x > 0 and row[x - 1].flags & (WIDE | WIDE_CONT) == WIDE:
                cell = row[x - 1]
            block = r.framebuffer[y * CH:(y + 1) * CH, x * CW:(x + 1) * CW].reshape(-1, 3)
            assert {tuple(p) for p in block} <= {tuple(rgb(colour)) for colour in drawn(cell)}
    client = Client(r)
    client.apply(r.set_cursor(*cursor))
    client.apply(r.render_rows({0: rows[-1]}))
    client.apply(r.set_blink(False))
    client.apply(r.scroll(0, 3, 1))
    client.apply(r.set_blink(True))


def test_blink_hides_and_shows_text_in_place() -> None:
    rows = [text_row("on"), [Cell("b", RED, BLUE, BLINK), Cell("!", RED, BLUE, BLINK)]]
    r = make(4, 2)
    r.render_all(rows)
    shown = r.framebuffer.copy()
    client = Client(r)
    damage = r.set_blink(False)
    client.apply(damage)
    assert damage.rects == (rendermod.Rect(0, CH, 4 * CW, CH),)
    assert np.array_equal(r.framebuffer[:CH], shown[:CH])
    assert (r.framebuffer[CH:, :2 * CW].reshape(-1, 3) == rgb(BLUE)).all()
    client.apply(r.set_blink(True))
    assert np.array_equal(r.framebuffer, shown)


def test_blink_state_survives_atlas_clearing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rendermod, "TILE_LIMIT", 4)
    r = make(4, 1)
    r.render_all([[Cell("b", RED, BLUE, BLINK)]])
    r.set_blink(False)
    for shade in range(10):
        r.render_all([[Cell("b", RED, BLUE, BLINK), Cell("x", shade, 0, 0)]])
        assert (r.framebuffer[:, :CW].reshape(-1, 3) == rgb(BLUE)).all()


def test_golden_unifont_letter_on_screen() -> None:
    # GNU Unifont's "A" (unifont.hex: 0041:0000000018242442427E424242420000), red on blue.
    golden = bytes.fromhex("0000000018242442427E424242420000")
    r = make(1, 1)
    r.render_all([[Cell("A", RED, BLUE, 0)]])
    expected = np.unpackbits(np.frombuffer(golden, np.uint8)[:, None], axis=1).astype(bool)
    assert np.array_equal((r.framebuffer == rgb(RED)).all(axis=2), expected)
    assert np.array_equal((r.framebuffer == rgb(BLUE)).all(axis=2), ~expected)

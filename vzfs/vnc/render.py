"""The renderer: draws rows of terminal Cells into the RGB framebuffer that the RFB encoder reads.

Framebuffer layout. `Renderer.framebuffer` is a C-contiguous numpy array of shape
(height, width, 3) and dtype uint8 holding R, G, B bytes; pixel (x, y) is
``framebuffer[y, x]`` and an RFB rectangle (x, y, w, h) is
``framebuffer[y:y + h, x:x + w]``. Cell (column, line) covers pixels
[column·cell_width, (column+1)·cell_width) × [line·cell_height, (line+1)·cell_height).
When the framebuffer was sized in pixels (a client's SetDesktopSize) the grid is
floor(width/cell_width) × floor(height/cell_height) and the pixels to its right and
below are padding, always in the padding colour.

Theory of operation. A cell's pixels depend only on the Cell value itself (char, fg,
bg, flags), so every distinct Cell seen is drawn once into a tile atlas of coloured
tiles, shaped (n, cell_height, cell_width·3): the glyph mask comes from `font.Font`
(cached per character and style) and each pixel is exactly fg or bg — no antialiasing,
so golden tests are exact. The two colours are the cell's, with REVERSE swapping them,
DIM halving the foreground's intensity and CONCEAL drawing the foreground in the
background colour (`tile_colours`); a reverse screen (DECSCNM) swaps every cell's, the
padding's too, and the terminal's palette (the Linux console's ``ESC ] P``) recolours
the sixteen basic colours. Changing either redraws the whole frame from new tiles.
Tiles first seen in one call are coloured together in one
batch. A double-width glyph takes two consecutive tiles, left half
then right half, and a WIDE_CONT cell shows its left neighbour's right half. Drawing
rows is then one dict lookup per cell (``map`` over the Cells, in C) and one
``numpy.take`` that gathers the tiles' pixel rows straight into the framebuffer. The
atlas is cleared when it outgrows TILE_LIMIT, so a screen cycling through colours
cannot grow it without bound.

The cursor is drawn over the rendered cell and the pixels under it are kept, so moving
or hiding it restores them exactly without re-rendering. Every mutating method returns
a `Damage`: a CopyRect the client should apply first (terminal scrolls), then the
rectangles whose current pixels it must be sent.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from vzfs.terminal.cell import (BLANK, BLINK, CONCEAL, DEFAULT_BG, DEFAULT_FG, DIM, REVERSE, WIDE,
                                WIDE_CONT, Cell)
from vzfs.terminal.palette import LINUX_COLOURS
from vzfs.vnc.font import STYLE_FLAGS, Font, Mask, default_font

Pixels = npt.NDArray[np.uint8]
IntArray = npt.NDArray[np.int64]

# Coloured tiles kept before the atlas is cleared: 8192 tiles of 8×16 are 3 MB.
TILE_LIMIT = 8192

# Kinds of tile, so that a WIDE_CONT cell can find its left half's right half.
_LEFT = 1      # the left half of a double-width glyph; the next tile is its right half
_CONT = 2      # the tile of a WIDE_CONT cell itself, replaced by its neighbour's right half
_BLINK = 4     # a BLINK cell's tile, replaced by a blank one while blinking text is off


class Rect(NamedTuple):
    """A framebuffer rectangle in pixels, as RFB's FramebufferUpdate rectangles are."""

    x: int
    y: int
    width: int
    height: int


class CopyRect(NamedTuple):
    """rfbproto §CopyRect: the rectangle (x, y, width, height) copied from (src_x, src_y)."""

    x: int
    y: int
    width: int
    height: int
    src_x: int
    src_y: int


@dataclass(frozen=True)
class Damage:
    """What changed: apply `copy` (if any) first, then send the pixels of `rects`."""

    copy: CopyRect | None = None
    rects: tuple[Rect, ...] = ()


class CursorShape(enum.Enum):
    """The shapes DECSCUSR selects (xterm ctlseqs: CSI Ps SP q), blinking or not."""

    BLOCK = "block"            # the cell with fg and bg swapped
    UNDERLINE = "underline"    # the cell's bottom two pixel rows inverted
    BAR = "bar"                # the cell's left two pixel columns inverted


def cursor_shape(style: int) -> CursorShape:
    """The shape of DECSCUSR style `style` (xterm ctlseqs "CSI Ps SP q": 0, 1 and 2 a
    block, 3 and 4 an underline, 5 and 6 a bar; odd ones blink, drawn here steady)."""
    if style in (3, 4):
        return CursorShape.UNDERLINE
    if style in (5, 6):
        return CursorShape.BAR
    return CursorShape.BLOCK


class _TileIndex(dict[Cell, int]):
    """Cell → index of its coloured tile; a miss reserves the tile, drawn in a batch later."""

    def __init__(self, renderer: Renderer) -> None:
        super().__init__()
        self._renderer = renderer

    def __missing__(self, cell: Cell) -> int:
        index = self._renderer._reserve_tile(cell)
        self[cell] = index
        return index


def tile_colours(cell: Cell, reverse_screen: bool = False,
                 recolour: Mapping[int, int] | None = None) -> tuple[int, int]:
    """The (foreground, background) 0xRRGGBB a cell's tile is drawn with.

    `recolour` maps a basic colour's default value to its colour in the terminal's
    palette: cells hold resolved colours, and a palette entry recolours every cell of
    its default value, already drawn or not, as the VGA console's palette registers do
    (a 256-colour or true colour of exactly that value too: the Linux console maps
    those to its sixteen colours).

    DIM halves the foreground's intensity: the Linux console draws faint text in its
    half-bright colour (vt.c vc_halfcolor, dark grey 0x555555 unless `setterm
    --half-bright` changes it), which is half its default 0xAAAAAA; halving keeps the
    hue of coloured text. REVERSE swaps the two, and so does a reverse screen: the
    Linux console's DECSCNM swaps every cell's colours (vt.c invert_screen, and
    update_attr draws new text with vc_reverse ^ vc_decscnm), so reverse text shows
    normal on it. CONCEAL draws the glyph in the background colour (xterm's
    "invisible").
    """
    flags = cell.flags
    fg, bg = cell.fg, cell.bg
    if recolour:
        fg, bg = recolour.get(fg, fg), recolour.get(bg, bg)
    if flags & DIM:
        fg = fg >> 1 & 0x7F7F7F
    if bool(flags & REVERSE) != reverse_screen:
        fg, bg = bg, fg
    if flags & CONCEAL:
        fg = bg
    return fg, bg


def _colour(value: int) -> Pixels:
    """One 0xRRGGBB integer → its R, G, B bytes."""
    return np.array([value >> 16 & 0xFF, value >> 8 & 0xFF, value & 0xFF], np.uint8)


class Renderer:
    """Owns the framebuffer of one terminal and redraws it from rows of Cells."""

    def __init__(self, columns: int = 80, lines: int = 25, font: Font | None = None, *,
                 width: int | None = None, height: int | None = None,
                 padding: int = DEFAULT_BG) -> None:
        self.font = font or default_font()
        self.cell_width = self.font.cell_width
        self.cell_height = self.font.cell_height
        self.padding = padding
        self._index = _TileIndex(self)
        self._masks: dict[tuple[str, int, int], Mask] = {}
        self._tiles: Pixels = np.empty((0, self.cell_height, self.cell_width * 3), np.uint8)
        self._tile_kind: npt.NDArray[np.uint8] = np.zeros(0, np.uint8)
        self._tiles_used = 0
        self._pending: list[tuple[int, Cell]] = []
        self._blink_visible = True
        self._reverse_screen = False
        self._palette = LINUX_COLOURS
        self._recolour_map: dict[int, int] = {}
        self._cursor = (0, 0)
        self._cursor_shape = CursorShape.BLOCK
        self._cursor_visible = True
        self._cursor_drawn: tuple[Rect, Pixels] | None = None
        self._cells: list[Sequence[Cell]] = []
        self.columns = self.lines = self.width = self.height = 0
        self.framebuffer: Pixels = np.zeros((0, 0, 3), np.uint8)
        if width is not None or height is not None:
            self.resize_pixels(width or columns * self.cell_width,
                               height or lines * self.cell_height)
        else:
            self.resize(columns, lines)

    # Geometry

    def resize(self, columns: int, lines: int) -> Damage:
        """Resize to a grid; the framebuffer is exactly the grid's pixel size.

        `framebuffer` becomes a new array (clients need a DesktopSize rectangle); the
        known rows are redrawn, cut or padded, until the emulator sends new ones.
        """
        return self._setup(columns, lines, columns * self.cell_width, lines * self.cell_height)

    def resize_pixels(self, width: int, height: int) -> Damage:
        """Resize to an exact pixel size (SetDesktopSize: noVNC loops if the size is
        rounded); the grid is as many whole cells as fit, the rest is padding."""
        columns, lines = width // self.cell_width, height // self.cell_height
        return self._setup(columns, lines, width, height)

    def _setup(self, columns: int, lines: int, width: int, height: int) -> Damage:
        if columns < 1 or lines < 1:
            raise ValueError(f"cannot size the framebuffer to {width}x{height} pixels:"
                             f" a cell is {self.cell_width}x{self.cell_height}")
        self.columns, self.lines, self.width, self.height = columns, lines, width, height
        self.framebuffer = np.empty((height, width, 3), np.uint8)
        self._fill(0, height, 0, width, self._padding_colour())
        self._cursor_drawn = None
        # Keep what is known of the screen so a resized frame is not blank until the
        # emulator sends rows again; lines beyond it start blank.
        self._cells = (self._cells + [()] * lines)[:lines]
        self._paint_lines(range(lines))
        self._show_cursor()
        return Damage(None, (Rect(0, 0, width, height),))

    def _fill(self, top: int, bottom: int, left: int, right: int, colour: int) -> None:
        # Broadcasting one whole pixel row is fast; broadcasting a single pixel over
        # the area is not (numpy would iterate in steps of 3 bytes).
        row = np.empty((right - left, 3), np.uint8)
        row[:] = _colour(colour)
        self.framebuffer[top:bottom, left:right] = row

    def _padding_colour(self) -> int:
        """The padding's pixels: the background of a blank cell of the padding colour."""
        return self._tile_colours(Cell(" ", DEFAULT_FG, self.padding, 0))[1]

    def _tile_colours(self, cell: Cell) -> tuple[int, int]:
        return tile_colours(cell, self._reverse_screen, self._recolour_map)

    def _fill_padding(self) -> None:
        grid_width = self.columns * self.cell_width
        grid_height = self.lines * self.cell_height
        padding = self._padding_colour()
        self._fill(0, grid_height, grid_width, self.width, padding)
        self._fill(grid_height, self.height, 0, self.width, padding)

    def cell_rect(self, column: int, line: int, span: int = 1) -> Rect:
        """The pixel rectangle of `span` cells starting at (column, line)."""
        return Rect(column * self.cell_width, line * self.cell_height,
                    span * self.cell_width, self.cell_height)

    def _lines_rect(self, first: int, end: int) -> Rect:
        return Rect(0, first * self.cell_height, self.columns * self.cell_width,
                    (end - first) * self.cell_height)

    # Drawing cells

    def render_all(self, rows: Sequence[Sequence[Cell]]) -> Damage:
        """Redraw the whole screen from `rows` (missing lines are blank) and the padding."""
        self._cursor_drawn = None
        self._fill_padding()
        # Rows are copied (80 references each) so that an emulator reusing its row
        # lists cannot change what the cursor is drawn from behind our back.
        self._cells = [tuple(rows[line]) if line < len(rows) else ()
                       for line in range(self.lines)]
        self._paint_lines(range(self.lines))
        self._show_cursor()
        return Damage(None, (Rect(0, 0, self.width, self.height),))

    def render_rows(self, rows: Mapping[int, Sequence[Cell]]) -> Damage:
        """Redraw the given lines; a row shorter than the screen is padded with blanks."""
        if not rows:
            return Damage()
        lines = sorted(rows)
        if lines[0] < 0 or lines[-1] >= self.lines:
            raise ValueError(f"cannot render line {lines[0] if lines[0] < 0 else lines[-1]}:"
                             f" the screen has lines 0-{self.lines - 1}")
        cursor_line = self._cursor[1]
        covers_cursor = self._cursor_drawn is not None and cursor_line in rows
        if covers_cursor:
            self._hide_cursor()
        for line in lines:
            self._cells[line] = tuple(rows[line])
        self._paint_lines(lines)
        if covers_cursor:
            self._show_cursor()
        runs: list[Rect] = []
        start = previous = lines[0]
        for line in lines[1:] + [-1]:
            if line != previous + 1:
                runs.append(self._lines_rect(start, previous + 1))
                start = line
            previous = line
        return Damage(None, tuple(runs))

    def _paint_lines(self, lines: Sequence[int]) -> None:
        if not lines:
            return
        tiles = self._tile_indices([self._cells[line] for line in lines], self.columns)
        start = 0
        for i in range(1, len(lines) + 1):
            if i == len(lines) or lines[i] != lines[i - 1] + 1:
                self._write(tiles[start:i], lines[start], 0)
                start = i

    def _tile_indices(self, rows: Sequence[Sequence[Cell]], columns: int) -> IntArray:
        """Rows of cells → coloured tile indices, shape (len(rows), columns)."""
        cells: list[Cell] = []
        for row in rows:
            cells.extend(row[:columns])
            if len(row) < columns:
                cells.extend([BLANK] * (columns - len(row)))
        count = len(cells)
        # A call adds at most three tiles per cell (two halves and a blinked-off
        # blank); make room first so that indices handed out during it stay valid.
        need = 3 * count
        if self._tiles_used + need > max(TILE_LIMIT, 2 * need):
            self._clear_tiles()
        if self._tiles_used + need > len(self._tiles):
            self._grow_tiles(self._tiles_used + need)
        tiles = np.fromiter(map(self._index.__getitem__, cells), np.int64, count)
        tiles = tiles.reshape(len(rows), columns)
        kinds = self._tile_kind[tiles]
        if (kinds & _CONT).any():
            # A right half (WIDE_CONT, char "") shows the tile after its left half's.
            right = (kinds[:, 1:] & _CONT != 0) & (kinds[:, :-1] & _LEFT != 0)
            tiles[:, 1:][right] = tiles[:, :-1][right] + 1
        if not self._blink_visible and (kinds & _BLINK).any():
            flat = tiles.reshape(-1)
            for i in np.flatnonzero(kinds & _BLINK).tolist():
                cell = cells[i]
                flat[i] = self._index[Cell(" ", cell.fg, cell.bg, cell.flags & REVERSE)]
        if self._pending:
            self._draw_pending()
        return tiles

    def _write(self, tiles: IntArray, line: int, column: int) -> None:
        """Copy the tiles' pixel rows into the framebuffer cells they belong to."""
        count, columns = tiles.shape
        ch, cw = self.cell_height, self.cell_width
        view = self.framebuffer[line * ch:(line + count) * ch,
                                column * cw:(column + columns) * cw]
        # Assigning .shape (rather than reshape) raises instead of silently copying.
        view.shape = (count, ch, columns, cw * 3)
        table = self._tiles[:self._tiles_used].reshape(-1, cw * 3)
        rows = tiles[:, None, :] * ch + np.arange(ch)[None, :, None]
        # mode="wrap" because numpy buffers `out` in the default mode="raise"; every
        # index is in range anyway.
        np.take(table, rows, axis=0, out=view, mode="wrap")

    def _reserve_tile(self, cell: Cell) -> int:
        """Allocate the tile(s) of a new Cell; `_draw_pending` fills them in."""
        flags = cell.flags
        # A cell flagged both WIDE and WIDE_CONT is taken as a right half.
        span = 2 if flags & (WIDE | WIDE_CONT) == WIDE else 1
        index = self._tiles_used
        kind = _LEFT if span == 2 else _CONT if flags & WIDE_CONT else 0
        self._tile_kind[index] = kind | (_BLINK if flags & BLINK else 0)
        if span == 2:
            self._tile_kind[index + 1] = 0
        self._tiles_used = index + span
        self._pending.append((index, cell))
        return index

    def _draw_pending(self) -> None:
        """Colour all newly reserved tiles at once: the per-tile numpy overhead of
        doing it one by one made a screenful of new colours cost ~30 ms."""
        cw = self.cell_width
        targets: list[int] = []
        masks: list[Mask] = []
        colours: list[int] = []
        for index, cell in self._pending:
            flags = cell.flags
            span = 2 if flags & (WIDE | WIDE_CONT) == WIDE else 1
            key = ("" if flags & WIDE_CONT else cell.char, flags & STYLE_FLAGS, span)
            mask = self._masks.get(key)
            if mask is None:
                if len(self._masks) >= TILE_LIMIT:
                    self._masks.clear()
                mask = self._masks[key] = self.font.mask(*key)
            fg, bg = self._tile_colours(cell)
            for half in range(span):
                targets.append(index + half)
                masks.append(mask[:, half * cw:(half + 1) * cw])
                colours += (bg, fg)
        self._pending.clear()
        # Each tile's pixels index its own two-entry palette: 2·i for bg, 2·i+1 for fg.
        values = np.array(colours, np.uint32)
        palette = np.stack([values >> 16, values >> 8, values], axis=1).astype(np.uint8)
        picks = np.stack(masks).astype(np.intp)
        picks += 2 * np.arange(len(masks))[:, None, None]
        pixels = palette.take(picks, axis=0)
        self._tiles[targets] = pixels.reshape(len(masks), self.cell_height, cw * 3)

    def _grow_tiles(self, needed: int) -> None:
        size = max(needed, 2 * len(self._tiles))
        tiles = np.empty((size, self.cell_height, self.cell_width * 3), np.uint8)
        tiles[:self._tiles_used] = self._tiles[:self._tiles_used]
        kind = np.zeros(size, np.uint8)
        kind[:self._tiles_used] = self._tile_kind[:self._tiles_used]
        self._tiles, self._tile_kind = tiles, kind

    def _clear_tiles(self) -> None:
        """Forget every coloured tile (a screen cycling through many colours would
        otherwise grow the atlas without bound); glyph masks have their own bound."""
        self._index.clear()
        self._tiles_used = 0

    # Scrolling

    def scroll(self, top: int, bottom: int, count: int, fill: int = DEFAULT_BG) -> Damage:
        """Scroll lines [top, bottom) by `count` as the terminal did: up when positive
        (index at the bottom margin, CSI S), down when negative (reverse index, CSI T).

        Pixel rows move inside the framebuffer and the returned CopyRect tells clients
        to do the same; uncovered lines are cleared to `fill` (the erase colour) and
        listed as damage, to be drawn by `render_rows` when the emulator has them.
        """
        if not 0 <= top < bottom <= self.lines:
            raise ValueError(f"cannot scroll lines {top}-{bottom - 1}:"
                             f" the screen has lines 0-{self.lines - 1}")
        if count == 0:
            return Damage()
        rects: list[Rect] = []
        cursor_y = self._cursor[1]
        old_rect = self._hide_cursor() if top <= cursor_y < bottom else None
        height = bottom - top
        ch, fb = self.cell_height, self.framebuffer
        grid_width = self.columns * self.cell_width
        blank_row = [Cell(" ", DEFAULT_FG, fill, 0)] * self.columns
        copy: CopyRect | None = None
        if abs(count) >= height:
            exposed = (top, bottom)
            self._cells[top:bottom] = [blank_row] * height
        else:
            kept = height - abs(count)
            src, dst = (top + count, top) if count > 0 else (top, top - count)
            # numpy copies through a temporary when source and destination overlap.
            fb[dst * ch:(dst + kept) * ch, :grid_width] = fb[src * ch:(src + kept) * ch,
                                                              :grid_width]
            self._cells[dst:dst + kept] = self._cells[src:src + kept]
            exposed = (bottom - count, bottom) if count > 0 else (top, top - count)
            self._cells[exposed[0]:exposed[1]] = [blank_row] * abs(count)
            copy = CopyRect(0, dst * ch, grid_width, kept * ch, 0, src * ch)
            if old_rect is not None and src <= cursor_y < src + kept:
                # The client's copy carries our old cursor along: repaint where it lands.
                moved = cursor_y - src + dst
                rects.append(Rect(old_rect.x, moved * ch, old_rect.width, old_rect.height))
        self._fill(exposed[0] * ch, exposed[1] * ch, 0, grid_width,
                   self._tile_colours(blank_row[0])[1])
        rects.append(self._lines_rect(*exposed))
        if old_rect is not None:
            drawn = self._show_cursor()
            if drawn is not None:
                rects.append(drawn)
        return Damage(copy, tuple(rects))

    # Screen-wide colours

    def set_reverse_screen(self, reverse: bool) -> Damage:
        """Draw every cell with its colours swapped, or not (DECSCNM, ``CSI ? 5 h``:
        what `flash`, the visual bell, shows for a moment); redraws the whole frame."""
        if reverse == self._reverse_screen:
            return Damage()
        self._reverse_screen = reverse
        return self._recolour()

    def set_palette(self, palette: Sequence[int]) -> Damage:
        """Draw the sixteen basic colours (and the default ones, colours 7 and 0) as
        `palette` has them, the terminal's ``ESC ] P`` palette; redraws the whole frame
        when it changed."""
        palette = tuple(palette)
        if palette == self._palette:
            return Damage()
        if len(palette) != len(LINUX_COLOURS):
            raise ValueError(f"cannot draw with a palette of {len(palette)} colours: it needs 16")
        self._palette = palette
        self._recolour_map = {default: colour for default, colour in zip(LINUX_COLOURS, palette)
                              if colour != default}
        return self._recolour()

    def _recolour(self) -> Damage:
        """Redraw everything after a change of how cells are coloured: every tile in
        the atlas was coloured the old way."""
        self._clear_tiles()
        return self.render_all(self._cells)

    # Blinking text

    def set_blink(self, visible: bool) -> Damage:
        """Show or hide BLINK cells' text; the server calls this on a timer (xterm: 600 ms)."""
        if visible == self._blink_visible:
            return Damage()
        self._blink_visible = visible
        lines = [y for y, row in enumerate(self._cells) if any(c.flags & BLINK for c in row)]
        return self.render_rows({y: self._cells[y] for y in lines})

    # The cursor

    def set_cursor(self, x: int, y: int, *, visible: bool = True,
                   shape: CursorShape = CursorShape.BLOCK) -> Damage:
        """Move, show, hide or reshape the cursor; only the cells it left and entered change."""
        if (x, y, visible, shape) == (*self._cursor, self._cursor_visible, self._cursor_shape):
            return Damage()
        rects: list[Rect] = []
        old = self._hide_cursor()
        if old is not None:
            rects.append(old)
        self._cursor = (x, y)
        self._cursor_visible, self._cursor_shape = visible, shape
        new = self._show_cursor()
        if new is not None and new not in rects:
            rects.append(new)
        return Damage(None, tuple(rects))

    def _cursor_cells(self) -> tuple[int, int, int] | None:
        """(column, line, span) the cursor covers; a wide character is covered whole."""
        x, y = self._cursor
        if not self._cursor_visible or not 0 <= y < self.lines or x < 0:
            return None
        # A cursor past the last column (xterm's pending wrap) stays on the last cell.
        x = min(x, self.columns - 1)
        row = self._cells[y]
        flags = row[x].flags if x < len(row) else 0
        if flags & WIDE_CONT and x > 0 and row[x - 1].flags & (WIDE | WIDE_CONT) == WIDE:
            return x - 1, y, 2
        if flags & (WIDE | WIDE_CONT) == WIDE and x + 1 < self.columns:
            return x, y, 2
        return x, y, 1

    def _show_cursor(self) -> Rect | None:
        place = self._cursor_cells()
        if place is None:
            return None
        column, line, span = place
        rect = self.cell_rect(column, line, span)
        region = self.framebuffer[rect.y:rect.y + rect.height, rect.x:rect.x + rect.width]
        saved = region.copy()
        if self._cursor_shape is CursorShape.BLOCK:
            row = self._cells[line]
            cells = [row[c] if c < len(row) else BLANK for c in range(column, column + span)]
            flipped = [cell._replace(flags=cell.flags ^ REVERSE) for cell in cells]
            self._write(self._tile_indices([flipped], span), line, column)
            if np.array_equal(region, saved):
                # fg == bg makes a swap invisible; invert the pixels instead.
                np.bitwise_not(saved, out=region)
        else:
            bar = region[-2:] if self._cursor_shape is CursorShape.UNDERLINE else region[:, :2]
            np.bitwise_not(bar, out=bar)
        self._cursor_drawn = (rect, saved)
        return rect

    def _hide_cursor(self) -> Rect | None:
        if self._cursor_drawn is None:
            return None
        rect, saved = self._cursor_drawn
        self.framebuffer[rect.y:rect.y + rect.height, rect.x:rect.x + rect.width] = saved
        self._cursor_drawn = None
        return rect

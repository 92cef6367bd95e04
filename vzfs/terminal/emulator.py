"""A fast, pure xterm-style terminal emulator: pty bytes in; cells, dirty rows, scrolls and replies out.

Theory of operation
-------------------
``Terminal`` is frontend.py's ``TerminalFrontend`` (the shared lexer and dispatcher,
parser.py's ``Parser``, with the Update, the modes and the snapshot) over ``_Screen``,
this engine's screen model; the DEC private modes are modes.py's. Text runs are written into a row as one slice
of ``Cell`` objects taken from a per-pen cache, so printable text costs a few C-level
operations per run rather than Python work per character.

The screen model also takes the parser's two shortcuts. A *simple stretch* (text, CR,
LF and SGR only) is drawn as a batch (``draw_stretch``): split at CR LF and at SGR,
each piece written as a slice, each SGR met before from the same pen one dict lookup.
And when one feed holds more complete lines than the screen has rows, most of them
can only scroll through: in a stretch of text, CR, LF, BS, HT and SGR ending in CR LF,
with a full-screen scroll region, the effect of all but the last ``lines`` lines is
known without drawing them — the pen after their SGRs, the cursor at the bottom left,
and rows that the last ``lines`` lines push off the screen. Those are drawn exactly;
the rest is skipped (``skip_ahead``).

Rows are ``_Row`` lists that carry a ``dirty`` flag. Scrolling moves row objects, so
a row that was only moved keeps ``dirty`` unset, and every move of rows is recorded as
a scroll event: applying the events to the previous screen and repainting the dirty
rows gives the new screen exactly (what a VNC server needs for CopyRect).

pyte 0.8.2 is the reference: its charset table and wcwidth are used here, and the tests
compare this emulator with pyte's ``Screen`` cell by cell. The behaviours in which pyte
is verifiably wrong (FACTS.md: alternate screen, ``CSI > m``, colon SGR, control
strings, ``CSI S``/``T``, a C0 byte inside a run, lost replies) follow xterm's
ctlseqs instead, and what programs with TERM=linux (a domain's console) rely on
follows the Linux console (linux/drivers/tty/vt/vt.c): its sixteen colours, its
palette sequences ``ESC ] P`` and ``ESC ] R``.
"""

from __future__ import annotations

import re
from typing import Any, Final, Sequence

from pyte.charsets import VT100_MAP

from .cell import BLANK, BOLD, MAX_COMBINING, WIDE, WIDE_CONT, Cell, wcwidth
from .frontend import BackendScreen, TerminalFrontend, cell_before, erased_span, retitle
from .interface import SavedCursor, Scroll, add_scroll
from .modes import dec_mode, reset_modes
from .palette import DEFAULT, LINUX_COLOURS, apply_palette_sequence, resolve_bg, resolve_fg
from .parser import DEC_GRAPHICS, SGR_ONLY, Run, Shortcuts, simple_end
from .sgr import apply_sgr

# The skip-ahead only needs to know that nothing but cells, the pen and the column
# change: any character but the C0 and C1 controls other than BS, HT, LF, CR and ESC.
_NOT_SKIPPABLE: Final = re.compile("[\x00-\x07\x0b\x0c\x0e-\x1a\x1c-\x1f\x7f-\x9f]")
_SKIP_MIN: Final = 2048
_MAX_PENS: Final = 1024
_MAX_TRANSITIONS: Final = 64


class _Row(list[Cell]):
    """One screen row; every write sets ``dirty``, which is cleared when an Update is taken.

    ``wide`` is set once a double-width character was drawn into the row: only then
    must a write look for wide characters it cuts in half.
    """

    dirty = False
    wide = False


class _Glyphs(dict[str, Cell]):
    """The cells of one pen, by character: text runs become cells by dict lookups."""

    __slots__ = ("fg", "bg", "flags")

    def __init__(self, fg: int, bg: int, flags: int) -> None:
        super().__init__()
        self.fg = fg
        self.bg = bg
        self.flags = flags

    def __missing__(self, char: str) -> Cell:
        if len(self) > 4096:
            self.clear()
        cell = Cell(char, self.fg, self.bg, self.flags)
        self[char] = cell
        return cell


class _Pen:
    """A pen (colour specs and flags), its glyph cache, and the SGR transitions seen from it.

    Pens are shared, so an SGR met before costs one dict lookup: ``after[params]``.
    """

    __slots__ = ("fg", "bg", "flags", "glyphs", "get", "erase", "after")

    def __init__(self, fg: int, bg: int, flags: int, glyphs: _Glyphs) -> None:
        self.fg = fg
        self.bg = bg
        self.flags = flags
        self.glyphs = glyphs
        self.get = glyphs.__getitem__
        # Erasing uses the whole pen, as pyte does (xterm would keep only the background).
        self.erase = glyphs[" "]
        self.after: dict[str, _Pen] = {}


def _unwide(cell: Cell) -> Cell:
    """A blank with the attributes of half of a wide character whose other half is gone."""
    return Cell(" ", cell.fg, cell.bg, cell.flags & ~(WIDE | WIDE_CONT))


class _Screen(BackendScreen):
    """This engine's screen model: rows of cells, the cursor, the pen, the modes; what
    each sequence does to them (parser.py's ScreenModel), and the parser's shortcuts.

    The frontend reads and writes it as a ``BackendScreen``; x == columns means "a wrap
    is pending".
    """

    def __init__(self, columns: int, lines: int) -> None:
        self.columns = columns
        self.lines = lines
        self.title = ""
        self.glyph_caches: dict[tuple[int, int, int], _Glyphs] = {}
        self.pens: dict[tuple[int, int, int], _Pen] = {}
        self.events: list[Scroll] = []
        self.replies: list[bytes] = []
        self.bell_rung = False
        self.title_changed = False
        # The Linux console's palette; RIS keeps it, as vt.c reset_terminal does.
        self.palette = list(LINUX_COLOURS)
        self.reset()

    # ------------------------------------------------------------- state helpers

    def reset(self) -> None:
        """RIS: everything but the title back to power-on state (xterm keeps the title)."""
        self.main = [self._new_row(self.columns) for _ in range(self.lines)]
        self.alt = [self._new_row(self.columns) for _ in range(self.lines)]
        self.rows = self.main
        self.alt_active = False
        self.x = 0
        self.y = 0
        self.top = 0
        self.bottom = self.lines - 1
        self.fg = DEFAULT
        self.bg = DEFAULT
        self.flags = 0
        reset_modes(self)
        self.saved: list[SavedCursor | None] = [None, None]
        self.g = ["B", "B"]
        self.gl = 0
        self.update_charset()
        self.tabstops = list(range(8, self.columns, 8))
        self.last_char = " "
        self.apply_pen()
        self.all_dirty = True

    def resize_to(self, columns: int, lines: int) -> None:
        """Change the size; rows are cut at the top only as far as the cursor row needs."""
        old_columns = self.columns
        drop = max(0, self.y - (lines - 1))
        for rows in (self.main, self.alt):
            if columns < old_columns:
                for row in rows:
                    del row[columns:]
                    if row[-1].flags & WIDE:
                        row[-1] = _unwide(row[-1])
            elif columns > old_columns:
                for row in rows:
                    row.extend([BLANK] * (columns - old_columns))
            del rows[:drop]
            del rows[lines:]
            while len(rows) < lines:
                rows.append(self._new_row(columns))
        self.columns = columns
        self.lines = lines
        self.y -= drop
        self.x = min(self.x, columns - 1)
        self.top, self.bottom = 0, lines - 1
        kept = [stop for stop in self.tabstops if stop < min(columns, old_columns)]
        first_new = -(-old_columns // 8) * 8
        self.tabstops = kept + list(range(max(8, first_new), columns, 8))
        self.all_dirty = True

    @staticmethod
    def _new_row(columns: int) -> _Row:
        row = _Row([BLANK] * columns)
        row.dirty = True
        return row

    def _glyphs_for(self, fg: int, bg: int, flags: int) -> _Glyphs:
        """The glyph cache of a pen, its colours resolved."""
        key = (resolve_fg(fg, bool(flags & BOLD)), resolve_bg(bg), flags)
        glyphs = self.glyph_caches.get(key)
        if glyphs is None:
            if len(self.glyph_caches) > 256:
                self.glyph_caches.clear()
            glyphs = self.glyph_caches[key] = _Glyphs(*key)
        return glyphs

    def _pen_for(self, fg: int, bg: int, flags: int) -> _Pen:
        pen = self.pens.get((fg, bg, flags))
        if pen is None:
            if len(self.pens) >= _MAX_PENS:
                self.pens.clear()
            pen = self.pens[fg, bg, flags] = _Pen(fg, bg, flags, self._glyphs_for(fg, bg, flags))
        return pen

    def apply_pen(self) -> None:
        """Make the pen given by fg, bg and flags the one text is drawn with."""
        self._set_pen(self._pen_for(self.fg, self.bg, self.flags))

    def _set_pen(self, pen: _Pen) -> None:
        self.pen = pen
        self.fg, self.bg, self.flags = pen.fg, pen.bg, pen.flags
        self.glyphs = pen.glyphs
        self.erase = pen.erase

    def update_charset(self) -> None:
        # DEC Special Graphics (xterm ctlseqs "ESC ( C", C = 0) maps ASCII to line drawing.
        self.translate = VT100_MAP if self.g[self.gl] == DEC_GRAPHICS else None

    # ------------------------------------------------------------------- scrolling

    def _record_scroll(self, top: int, bottom: int, count: int) -> None:
        if not self.all_dirty and not add_scroll(self.events, top, bottom, count):
            self.all_dirty = True

    def _scroll_up(self, top: int, bottom: int, count: int) -> None:
        count = min(count, bottom - top + 1)
        rows = self.rows
        columns = self.columns
        if count == 1:
            del rows[top]
            rows.insert(bottom, self._new_row(columns))
        else:
            del rows[top:top + count]
            at = bottom + 1 - count
            rows[at:at] = [self._new_row(columns) for _ in range(count)]
        self._record_scroll(top, bottom, count)

    def _scroll_down(self, top: int, bottom: int, count: int) -> None:
        count = min(count, bottom - top + 1)
        rows = self.rows
        del rows[bottom + 1 - count:bottom + 1]
        rows[top:top] = [self._new_row(self.columns) for _ in range(count)]
        self._record_scroll(top, bottom, -count)

    def _index(self) -> None:
        """IND: down one row, scrolling the region at its bottom margin.

        Below the region the cursor moves down to the last line without scrolling
        (xterm; pyte 0.8.2 wrongly jumps back to the bottom margin).
        """
        if self.y == self.bottom:
            self._scroll_up(self.top, self.bottom, 1)
        elif self.y < self.lines - 1:
            self.y += 1

    def index(self) -> None:
        # IND, like LF, leaves a pending wrap in the last column (xterm clears its wrap flag).
        if self.x >= self.columns:
            self.x = self.columns - 1
        self._index()

    def linefeed(self) -> None:
        # index() inline: LF is among the most frequent tokens.
        if self.x >= self.columns:
            self.x = self.columns - 1
        self._index()
        if self.newline:
            self.x = 0

    def reverse_index(self) -> None:
        if self.x >= self.columns:
            self.x = self.columns - 1
        if self.y == self.top:
            self._scroll_down(self.top, self.bottom, 1)
        elif self.y > 0:
            self.y -= 1

    # --------------------------------------------------------------------- drawing

    def draw(self, text: str) -> None:
        if self.translate is not None:
            text = text.translate(self.translate)
        if text.isascii():
            self._draw_narrow(text)
        else:
            self._draw_unicode(text)
        self.last_char = text[-1]

    def _draw_narrow(self, text: str) -> None:
        """Draw characters one cell wide each, a row-sized slice at a time."""
        columns = self.columns
        glyphs = self.glyphs
        x = self.x
        start = 0
        length = len(text)
        while start < length:
            if x >= columns:
                if not self.autowrap:
                    # Without DECAWM every further character overwrites the last column.
                    row = self.rows[self.y]
                    self._fix_wide_edges(row, columns - 1, columns)
                    row[columns - 1] = glyphs[text[-1]]
                    row.dirty = True
                    break
                self.x = 0
                self._index()
                x = 0
            row = self.rows[self.y]
            count = min(length - start, columns - x)
            end = x + count
            if self.insert:
                row[x:x] = [BLANK] * count
                del row[columns:]
                if row[-1].flags & WIDE:
                    row[-1] = _unwide(row[-1])
            if row.wide:
                self._fix_wide_edges(row, x, end)
            if count == length:
                row[x:end] = map(glyphs.__getitem__, text)
            else:
                row[x:end] = map(glyphs.__getitem__, text[start:start + count])
            row.dirty = True
            x = end
            start += count
        self.x = x

    def _draw_unicode(self, text: str) -> None:
        """Draw text with wide, zero-width or combining characters (wcwidth decides)."""
        narrow_from = 0
        for index, char in enumerate(text):
            width = wcwidth(char)
            if width == 1:
                continue
            if narrow_from < index:
                self._draw_narrow(text[narrow_from:index])
            narrow_from = index + 1
            if width == 2:
                self._draw_wide(char)
            elif width == 0:
                self._combine(char)
        if narrow_from < len(text):
            self._draw_narrow(text[narrow_from:] if narrow_from else text)

    def _draw_wide(self, char: str) -> None:
        columns = self.columns
        if self.x + 2 > columns:
            # xterm wraps a double-width character that does not fit on the line.
            if self.autowrap:
                self.x = 0
                self._index()
            else:
                self.x = columns - 2
        x = self.x
        row = self.rows[self.y]
        if self.insert:
            self._fix_wide_edges(row, x, x)
            row[x:x] = [BLANK, BLANK]
            del row[columns:]
            if row[-1].flags & WIDE:
                row[-1] = _unwide(row[-1])
        self._fix_wide_edges(row, x, x + 2)
        glyphs = self.glyphs
        row.wide = True
        row[x] = Cell(char, glyphs.fg, glyphs.bg, glyphs.flags | WIDE)
        row[x + 1] = Cell("", glyphs.fg, glyphs.bg, glyphs.flags | WIDE_CONT)
        row.dirty = True
        self.x = x + 2

    def _combine(self, char: str) -> None:
        """Attach a zero-width character to the cell before the cursor, as written: the
        cell keeps the sequence the program sent (pyte composes it to NFC, so that
        ``screen`` would not hold the bytes written; the renderer's font composes)."""
        before = cell_before(self.x, self.y, self.columns)
        if before is None:
            return
        x, y = before
        row = self.rows[y]
        if row[x].flags & WIDE_CONT and x > 0:
            x -= 1
        cell = row[x]
        if len(cell.char) >= MAX_COMBINING or not cell.char:
            return
        row[x] = cell._replace(char=cell.char + char)
        row.dirty = True

    def _fix_wide_edges(self, row: _Row, start: int, end: int) -> None:
        """Blank the surviving half of wide characters cut by overwriting start..end-1."""
        if start > 0 and row[start].flags & WIDE_CONT:
            row[start - 1] = _unwide(row[start - 1])
        if end < self.columns and row[end].flags & WIDE_CONT:
            row[end] = _unwide(row[end])

    # ------------------------------------------------------------------ shortcuts

    def stretch_end(self, text: str, position: int, end: int) -> int:
        """Where the simple stretch at `position` ends; none is drawn as a batch through a
        charset or in insert mode."""
        if self.translate is not None or self.insert:
            return position
        return simple_end(text, position, end)

    def draw_stretch(self, stretch: str, run: Run) -> None:
        """Draw a simple stretch: split at CR LF and at SGR, write each piece as a slice;
        a line with a lone CR or LF goes through the tokenizer (`run`)."""
        columns = self.columns
        rows = self.rows
        transition = self._transition
        x, y = self.x, self.y
        pen = self.pen
        get = pen.get
        drawn = ""
        lines = stretch.split("\r\n")
        last = len(lines) - 1
        for at, line in enumerate(lines):
            if "\r" in line or "\n" in line:
                self.x, self.y = x, y
                self._set_pen(pen)
                if drawn:
                    self.last_char = drawn[-1]
                    drawn = ""
                run(line, 0, len(line), False)
                x, y = self.x, self.y
                pen = self.pen
                get = pen.get
            elif line:
                row = rows[y]
                # Rows holding wide characters take the careful path for every piece.
                careful = row.wide
                for index, piece in enumerate(line.split("\x1b[")):
                    if index:
                        params, _, piece = piece.partition("m")
                        pen = pen.after.get(params) or transition(pen, params)
                        get = pen.get
                    if not piece:
                        continue
                    count = len(piece)
                    if careful or x + count > columns:
                        row.dirty = True
                        self.x, self.y = x, y
                        self._set_pen(pen)
                        self._draw_narrow(piece)
                        x, y = self.x, self.y
                        row = rows[y]
                        careful = row.wide
                    else:
                        row[x:x + count] = map(get, piece)
                        x += count
                    drawn = piece
                row.dirty = True
            if at < last:
                x = 0
                if y == self.bottom:
                    self._scroll_up(self.top, self.bottom, 1)
                elif y < self.lines - 1:
                    y += 1
        self.x, self.y = x, y
        self._set_pen(pen)
        if drawn:
            self.last_char = drawn[-1]

    # --------------------------------------------------------------- controls

    def carriage_return(self) -> None:
        self.x = 0

    def backspace(self) -> None:
        # BS from a pending wrap lands on the second-last column (xterm, pyte).
        if self.x >= self.columns:
            self.x = self.columns - 2
        elif self.x > 0:
            self.x -= 1

    def bell(self) -> None:
        self.bell_rung = True

    def shift_out(self) -> None:
        self.gl = 1
        self.update_charset()

    def shift_in(self) -> None:
        self.gl = 0
        self.update_charset()

    def define_charset(self, code: str, mode: str) -> None:
        self.g[0 if mode == "(" else 1] = code
        self.update_charset()

    def set_app_keypad(self, on: bool) -> None:
        self.app_keypad = on

    def set_tab_stop(self) -> None:
        if self.x < self.columns and self.x not in self.tabstops:
            self.tabstops.append(self.x)
            self.tabstops.sort()

    def tab(self, count: int) -> None:
        x = min(self.x, self.columns - 1)
        for _ in range(count):
            x = next((stop for stop in self.tabstops if stop > x), self.columns - 1)
        self.x = x

    def back_tab(self, count: int) -> None:
        x = min(self.x, self.columns - 1)
        for _ in range(count):
            x = next((stop for stop in reversed(self.tabstops) if stop < x), 0)
        self.x = x

    def set_title(self, title: str) -> None:
        retitle(self, title)

    def set_palette(self, sequence: str) -> None:
        """ESC ] R, ESC ] P nrrggbb: the Linux console's palette. Every row is dirty after
        a change, as after DECSCNM: the renderer draws them all anew."""
        if apply_palette_sequence(self.palette, sequence):
            self.all_dirty = True

    def alignment_display(self) -> None:
        """DECALN (ESC # 8): fill the screen with E, reset the margins, home the cursor."""
        rows = self.rows
        filled = Cell("E", BLANK.fg, BLANK.bg, 0)
        for y in range(self.lines):
            row = _Row([filled] * self.columns)
            row.dirty = True
            rows[y] = row
        self.all_dirty = True
        self.top, self.bottom = 0, self.lines - 1
        self.x = self.y = 0

    # ----------------------------------------------------------------------- SGR

    def select_graphic_rendition(self, params: str) -> None:
        """SGR (ECMA-48 §8.3.117): set the pen, through a cache of (params, pen) → pen."""
        pen = self.pen
        self._set_pen(pen.after.get(params) or self._transition(pen, params))

    def _transition(self, pen: _Pen, params: str) -> _Pen:
        following = self._pen_for(*apply_sgr(params, pen.fg, pen.bg, pen.flags))
        if len(pen.after) < _MAX_TRANSITIONS:
            pen.after[params] = following
        return following

    # ------------------------------------------------------------ cursor, edits

    def cursor_up(self, count: int) -> None:
        top = self.top if self.y >= self.top else 0
        self.x = min(self.x, self.columns - 1)
        self.y = max(top, self.y - count)

    def cursor_down(self, count: int) -> None:
        bottom = self.bottom if self.y <= self.bottom else self.lines - 1
        self.x = min(self.x, self.columns - 1)
        self.y = min(bottom, self.y + count)

    def cursor_forward(self, count: int) -> None:
        self.x = min(self.columns - 1, min(self.x, self.columns - 1) + count)

    def cursor_back(self, count: int) -> None:
        self.x = max(0, min(self.x, self.columns - 1) - count)

    def cursor_down1(self, count: int) -> None:
        self.cursor_down(count)
        self.x = 0

    def cursor_up1(self, count: int) -> None:
        self.cursor_up(count)
        self.x = 0

    def cursor_to_column(self, column: int) -> None:
        self.x = min(self.columns, column) - 1

    def cursor_position(self, line: int, column: int) -> None:
        line -= 1
        if self.origin:
            self.y = min(self.top + line, self.bottom)
        else:
            self.y = min(line, self.lines - 1)
        self.x = min(column - 1, self.columns - 1)

    def cursor_to_line(self, line: int) -> None:
        line -= 1
        if self.origin:
            self.y = min(self.top + line, self.bottom)
        else:
            self.y = min(line, self.lines - 1)
        self.x = min(self.x, self.columns - 1)

    def _erase_cells(self, row: _Row, start: int, end: int) -> None:
        if start >= end:
            return
        self._fix_wide_edges(row, start, end)
        row[start:end] = [self.erase] * (end - start)
        row.dirty = True

    def _clear_wrap(self) -> int:
        """Cancel a pending wrap, as xterm's ResetWrap does for edits within the line
        (InsertChar, DeleteChar, ClearInLine in xterm's util.c); return the column."""
        if self.x >= self.columns:
            self.x = self.columns - 1
        return self.x

    def erase_in_line(self, how: int) -> None:
        row = self.rows[self.y]
        span = erased_span(how, self._clear_wrap(), self.columns)
        if span is not None:
            self._erase_cells(row, *span)

    def erase_in_display(self, how: int) -> None:
        if how == 0:
            below = range(self.y + 1, self.lines)
        elif how == 1:
            below = range(self.y)
        elif how == 2:
            below = range(self.lines)
        else:
            return  # ED 3 erases saved lines (xterm); there is no scrollback here.
        full = [self.erase] * self.columns
        for y in below:
            row = _Row(full)
            row.dirty = True
            self.rows[y] = row
        if how != 2:
            self.erase_in_line(how)
        if how == 2:
            self.all_dirty = True

    def insert_lines(self, count: int) -> None:
        if self.top <= self.y <= self.bottom:
            self._scroll_down(self.y, self.bottom, count)
            self.x = 0

    def delete_lines(self, count: int) -> None:
        if self.top <= self.y <= self.bottom:
            self._scroll_up(self.y, self.bottom, count)
            self.x = 0

    def scroll_up(self, count: int) -> None:
        self._scroll_up(self.top, self.bottom, count)

    def scroll_down(self, count: int) -> None:
        self._scroll_down(self.top, self.bottom, count)

    def insert_characters(self, count: int) -> None:
        x = self._clear_wrap()
        count = min(count, self.columns - x)
        row = self.rows[self.y]
        self._fix_wide_edges(row, x, x)
        row[x:x] = [BLANK] * count
        del row[self.columns:]
        if row[-1].flags & WIDE:
            row[-1] = _unwide(row[-1])
        row.dirty = True

    def delete_characters(self, count: int) -> None:
        x = self._clear_wrap()
        count = min(count, self.columns - x)
        row = self.rows[self.y]
        self._fix_wide_edges(row, x, x + count)
        del row[x:x + count]
        row.extend([BLANK] * count)
        row.dirty = True

    def erase_characters(self, count: int) -> None:
        x = self._clear_wrap()
        self._erase_cells(self.rows[self.y], x, min(self.columns, x + count))

    def repeat(self, count: int) -> None:
        """REP (ECMA-48 §8.3.103): repeat the last graphic character."""
        self.draw(self.last_char * min(count, self.columns * self.lines))

    def reply(self, data: bytes) -> None:
        self.replies.append(data)

    def report_cursor_position(self) -> None:
        # A pending wrap reports the last column; origin mode reports relative rows.
        line = self.y - (self.top if self.origin else 0) + 1
        column = min(self.x, self.columns - 1) + 1
        self.replies.append(b"\x1b[%d;%dR" % (line, column))

    def clear_tab_stop(self, how: int) -> None:
        if how == 0:
            if self.x in self.tabstops:
                self.tabstops.remove(self.x)
        elif how == 3:
            self.tabstops = []

    def set_margins(self, top: int, bottom: int) -> None:
        """DECSTBM; a valid region (top < bottom) also homes the cursor (VT510 manual)."""
        top -= 1
        bottom = min(bottom or self.lines, self.lines) - 1
        if top < bottom:
            self.top, self.bottom = top, bottom
            self.x = 0
            self.y = top if self.origin else 0

    def ansi_mode(self, mode: int, on: bool) -> None:
        if mode == 4:
            self.insert = on
        elif mode == 20:
            self.newline = on

    # ------------------------------------------------------------- modes, cursor

    def dec_mode(self, mode: int, on: bool) -> None:
        """DECSET / DECRST (xterm ctlseqs "CSI ? Pm h"): modes.py's, on this model."""
        dec_mode(self, mode, on)

    def set_cursor_style(self, style: int) -> None:
        """DECSCUSR (xterm ctlseqs "CSI Ps SP q"): 0 and 1 a blinking block, 2 a steady
        block, 3 and 4 an underline, 5 and 6 a bar (odd blinking)."""
        self.cursor_style = style

    def show_buffer(self, alternate: bool) -> None:
        self.rows = self.alt if alternate else self.main

    def clear_alternate(self) -> None:
        full = [self.erase] * self.columns
        rows = self.alt
        for y in range(len(rows)):
            row = _Row(full)
            row.dirty = True
            rows[y] = row
        if rows is self.rows:
            self.all_dirty = True

    def save_cursor(self) -> None:
        """DECSC: one slot per screen buffer, as in xterm."""
        self.saved[self.alt_active] = (
            self.x, self.y, self.fg, self.bg, self.flags,
            self.g[0], self.g[1], self.gl, self.origin, self.autowrap,
        )

    def restore_cursor(self) -> None:
        """DECRC; with nothing saved: home, default pen, origin mode off (xterm)."""
        saved = self.saved[self.alt_active]
        if saved is None:
            self.x = self.y = 0
            self.fg = self.bg = DEFAULT
            self.flags = 0
            self.origin = False
        else:
            x, y, self.fg, self.bg, self.flags, g0, g1, self.gl, self.origin, self.autowrap = saved
            self.g = [g0, g1]
            self.x = min(x, self.columns - 1)
            self.y = min(y, self.lines - 1)
        self.update_charset()
        self.apply_pen()

    def soft_reset(self) -> None:
        """DECSTR (CSI ! p): modes, margins, pen and charsets to defaults; screen kept."""
        self.insert = False
        self.origin = False
        self.app_cursor = False
        self.app_keypad = False
        self.cursor_visible = True
        self.top, self.bottom = 0, self.lines - 1
        self.fg = self.bg = DEFAULT
        self.flags = 0
        self.g = ["B", "B"]
        self.gl = 0
        self.saved[self.alt_active] = None
        self.update_charset()
        self.apply_pen()

    # -------------------------------------------------- what the frontend reads

    @property
    def position(self) -> tuple[int, int]:
        return self.x, self.y

    def cells(self, row: int) -> Sequence[Cell]:
        return tuple(self.rows[row])

    def text(self) -> str:
        return "".join("".join([cell[0] for cell in row]).rstrip(" ") + "\n" for row in self.rows)

    def take_dirty(self) -> frozenset[int]:
        rows = self.rows
        dirty = frozenset([index for index, row in enumerate(rows) if row.dirty])
        for row in rows:
            row.dirty = False
        return dirty

    def model_snapshot(self) -> dict[str, Any]:
        return {
            "main": [[list(cell) for cell in row] for row in self.main],
            "alt": [[list(cell) for cell in row] for row in self.alt],
            "cursor": [self.x, self.y],
            "pen": [self.fg, self.bg, self.flags],
            "margins": [self.top, self.bottom],
            "tabstops": list(self.tabstops),
        }

    def restore_model(self, snapshot: dict[str, Any]) -> None:
        def rows(data: list[list[list[Any]]]) -> list[_Row]:
            made = []
            for cells in data:
                row = _Row(Cell(char, fg, bg, flags) for char, fg, bg, flags in cells)
                row.dirty = True
                row.wide = any(cell.flags & (WIDE | WIDE_CONT) for cell in row)
                made.append(row)
            return made

        self.main = rows(snapshot["main"])
        self.alt = rows(snapshot["alt"])
        self.alt_active = snapshot["alt_active"]
        self.rows = self.alt if self.alt_active else self.main
        self.x, self.y = snapshot["cursor"]
        self.fg, self.bg, self.flags = snapshot["pen"]
        self.top, self.bottom = snapshot["margins"]
        self.tabstops = list(snapshot["tabstops"])
        self.update_charset()
        self.apply_pen()

    def parser_shortcuts(self) -> Shortcuts:
        return self

    # ------------------------------------------------------------------ skipping

    def skip_ahead(self, text: str, run: Run) -> int:
        """Skip the lines that can only scroll off the screen; return where exact
        processing must resume.

        In a stretch of text, CR, LF, BS, HT and SGR (no other control), text and
        cursor motion only change cells; what survives the stretch is the pen, and, if
        it ends with CR LF, the cursor at the left. When the last `lines` line feeds of
        the stretch are drawn exactly from the bottom row, they scroll every earlier row
        off a full-screen region, so the part before them is reduced to its SGRs.
        """
        if len(text) <= _SKIP_MIN:
            return 0
        lines = self.lines
        head = text.find("\n") + 1
        if head == 0 or text.count("\n", head) <= 2 * lines:
            return 0
        stop = run(text, 0, head, True)
        if stop != head or self.top != 0 or self.bottom != lines - 1:
            return stop
        end = simple_end(text, head, len(text), _NOT_SKIPPABLE)
        last_newline = text.rfind("\n", head, end)
        newlines = text.count("\n", head, last_newline + 1)
        # The skipped part holds newlines - lines line feeds: enough to reach the bottom.
        if newlines <= lines or self.y + newlines - lines < self.bottom:
            return head
        resume = last_newline
        for _ in range(lines):
            resume = text.rfind("\n", head, resume)
        if text[resume - 1] != "\r":
            return head
        resume += 1
        drawn = text[resume:end]
        if "\x1b" in drawn:
            drawn = SGR_ONLY.sub("", drawn)
        if not drawn.strip("\r\n\b\t"):
            # REP repeats the last character drawn, which would then be in the skipped part.
            return head
        # Only the SGRs after the last full reset decide the pen.
        reset = max(text.rfind("\x1b[0m", head, resume), text.rfind("\x1b[m", head, resume))
        for sgr in SGR_ONLY.finditer(text, max(head, reset), resume):
            self.select_graphic_rendition(sgr.group(1))
        self.rows[:] = [self._new_row(self.columns) for _ in range(lines)]
        self.all_dirty = True
        self.events.clear()
        self.x = 0
        self.y = self.bottom
        return resume


class Terminal(TerminalFrontend):
    """An 80x25 (by default) terminal screen fed with the bytes a pty master reads."""

    screen_class = _Screen

"""The pyte-based terminal backend: pyte's Screen model behind the interface of the fast ``Terminal``.

Theory of operation
-------------------
``PyteTerminal.feed`` hands the bytes to the lexer and dispatcher the fast engine
uses too (parser.py) — pyte's own ``Stream`` parser is where most of its verified gaps
live (FACTS.md: colon SGR and DCS leak as text, ``CSI > m`` becomes SGR, a C0 byte
inside a text run drops the rest of the run) — which turns each token into a call on
``_Screen``, a ``pyte.Screen`` subclass and this backend's screen model (pyte's
mnemonics are the parser's). The screen is held in pyte's model: ``buffer``
(rows of ``Char`` by column), ``cursor`` (``x == columns`` is a pending wrap),
``margins``, ``mode``, ``tabstops``, ``title``, ``dirty``. The subclass closes the rest
of pyte's gaps and follows xterm where pyte departs from it, as the fast engine does,
so that both backends give the same cells:

- the alternate screen (47, 1047, 1049) is a second ``buffer`` swapped in, and DECSC
  keeps one saved cursor per buffer (xterm);
- a ``Char`` holds resolved 0xRRGGBB colours while the pen keeps the SGR colour specs
  (palette.py), so bold brightens colours 0..7 the same way in both backends;
- scrolls (IND at the bottom margin, RI, IL, DL, ``CSI S``, ``CSI T``) move rows of
  ``buffer`` instead of marking every row dirty: each is recorded as a scroll event and
  ``dirty`` is shifted with the rows, so an ``Update`` is exact (what CopyRect needs);
- DA, DSR and CPR replies are collected for the pty (``reply``), where pyte would
  need a ``write_process_input`` hook;
- a double-width character wraps at the margin and a half cut off is blanked;
- a combining character joins its base as written, where pyte composes it (NFC).

``PyteTerminal`` is frontend.py's ``TerminalFrontend`` over ``_Screen``, as the fast
engine's ``Terminal`` is over its own: the Update, the modes (modes.py, with pyte's
``mode`` flags as properties) and the snapshot are written once for both, so each
backend restores the other's snapshots. pyte's speed is kept: ``draw`` costs a ``Char._replace`` per character.
"""

from __future__ import annotations

from collections import defaultdict
from functools import lru_cache
from typing import Any, Final, NamedTuple, Sequence

import pyte
from pyte import modes as mo
from pyte.charsets import VT100_MAP
from pyte.screens import Margins, StaticDefaultDict

from .cell import (
    BLINK, BOLD, CONCEAL, DEFAULT_BG, DEFAULT_FG, DIM, ITALIC, MAX_COMBINING, REVERSE, STRIKETHROUGH,
    UNDERLINE, WIDE, WIDE_CONT, Cell, wcwidth,
)
from .frontend import BackendScreen, TerminalFrontend, cell_before, erased_span, retitle
from .interface import SavedCursor, Scroll, add_scroll
from .modes import dec_mode, reset_modes
from .palette import DEFAULT, LINUX_COLOURS, apply_palette_sequence, resolve_bg, resolve_fg
from .parser import DEC_GRAPHICS
from .sgr import apply_sgr


class Char(NamedTuple):
    """pyte's ``Char`` with 0xRRGGBB colours, as in Cell, and the two SGR attributes it
    lacks: faint (SGR 2) and concealed (SGR 8). pyte's Screen only reads a cell's
    attributes and ``_replace``s them, so this tuple serves wherever it takes a Char."""

    data: str
    fg: int
    bg: int
    bold: bool = False
    italics: bool = False
    underscore: bool = False
    strikethrough: bool = False
    reverse: bool = False
    blink: bool = False
    faint: bool = False
    conceal: bool = False


_BLANK_CHAR: Final = Char(" ", DEFAULT_FG, DEFAULT_BG)
_E_CHAR: Final = Char("E", DEFAULT_FG, DEFAULT_BG)

_Line = StaticDefaultDict[int, Char]


def _new_buffer() -> defaultdict[int, _Line]:
    return defaultdict(lambda: StaticDefaultDict(_BLANK_CHAR))


def _filled_line(columns: int, char: Char) -> _Line:
    line: _Line = StaticDefaultDict(_BLANK_CHAR)
    line.update(dict.fromkeys(range(columns), char))
    return line


@lru_cache(maxsize=65536)
def _cell(char: Char) -> Cell:
    """The Cell of a pyte Char; a stub ("") is the right half of the wide character before it."""
    data = char.data
    flags = (
        (BOLD if char.bold else 0) | (ITALIC if char.italics else 0)
        | (UNDERLINE if char.underscore else 0) | (REVERSE if char.reverse else 0)
        | (STRIKETHROUGH if char.strikethrough else 0) | (BLINK if char.blink else 0)
        | (DIM if char.faint else 0) | (CONCEAL if char.conceal else 0)
    )
    if not data:
        flags |= WIDE_CONT
    elif wcwidth(data[0]) == 2:
        flags |= WIDE
    return Cell(data, char.fg, char.bg, flags)


def _char(cell: Cell) -> Char:
    flags = cell.flags
    return Char(
        cell.char, cell.fg, cell.bg,
        bool(flags & BOLD), bool(flags & ITALIC), bool(flags & UNDERLINE),
        bool(flags & STRIKETHROUGH), bool(flags & REVERSE), bool(flags & BLINK),
        bool(flags & DIM), bool(flags & CONCEAL),
    )


@lru_cache(maxsize=1024)
def _pen_char(fg: int, bg: int, flags: int) -> Char:
    """The cursor attributes of a pen given by colour specs: what text and erasing write."""
    return _char(Cell(" ", resolve_fg(fg, bool(flags & BOLD)), resolve_bg(bg), flags))


def _mode_flag(mode: int) -> Any:
    """A mode pyte keeps in its Screen's ``mode`` set, as a bool attribute (a property)."""

    def get(screen: _Screen) -> bool:
        return mode in screen.mode

    def set_(screen: _Screen, on: bool) -> None:
        screen.set_flag(mode, on)

    return property(get, set_)


class _Screen(pyte.Screen, BackendScreen):
    """pyte's Screen with its gaps closed and xterm's behaviour where pyte departs from it."""

    def __init__(self, columns: int, lines: int) -> None:
        self.events: list[Scroll] = []
        self.all_dirty = True
        self.replies: list[bytes] = []
        self.bell_rung = False
        self.title = ""
        self.title_changed = False
        # The Linux console's palette; RIS keeps it, as vt.c reset_terminal does.
        self.palette = list(LINUX_COLOURS)
        super().__init__(columns, lines)
        self.margins = Margins(0, lines - 1)  # pyte's __init__ leaves None after reset()

    @property
    def default_char(self) -> Char:
        # pyte's marks reverse video in every cell; the fast engine leaves DECSCNM to
        # the renderer, and so does this one.
        return _BLANK_CHAR

    # ------------------------------------------------------------------ state

    def reset(self) -> None:
        """RIS: everything but the title back to power-on state (xterm keeps the title)."""
        title = self.title
        super().reset()
        self.title = title
        self.buffer = _new_buffer()
        self.alt_buffer = _new_buffer()
        self.main_buffer = self.buffer
        self.alt_active = False
        self.margins = Margins(0, self.lines - 1)
        self.pen = (DEFAULT, DEFAULT, 0)
        self.cursor.attrs = _BLANK_CHAR
        reset_modes(self)
        self.saved: list[SavedCursor | None] = [None, None]
        self.g = ["B", "B"]
        self.gl = 0
        self.last_char = " "
        self.all_dirty = True

    def set_pen(self, fg: int, bg: int, flags: int) -> None:
        self.pen = (fg, bg, flags)
        self.cursor.attrs = _pen_char(fg, bg, flags)

    def select_graphic_rendition(self, params: str) -> None:  # type: ignore[override]
        """SGR from its raw parameter string: colon sub-parameters parsed, not shown."""
        self.set_pen(*apply_sgr(params, *self.pen))

    def reply(self, data: bytes) -> None:
        self.replies.append(data)

    def bell(self, *args: Any) -> None:
        self.bell_rung = True

    def set_title(self, title: str) -> None:
        retitle(self, title)

    def set_palette(self, sequence: str) -> None:
        """ESC ] R, ESC ] P nrrggbb: the Linux console's palette; every row is dirty
        after a change, as in the fast engine."""
        if apply_palette_sequence(self.palette, sequence):
            self.all_dirty = True

    def shift_out(self) -> None:
        self.gl = 1

    def shift_in(self) -> None:
        self.gl = 0

    def define_charset(self, code: str, mode: str) -> None:
        self.g[0 if mode == "(" else 1] = code

    def set_app_keypad(self, on: bool) -> None:
        self.app_keypad = on

    # The modes pyte keeps in its ``mode`` set, under the names of modes.py's ModeState.
    autowrap = _mode_flag(mo.DECAWM)
    origin = _mode_flag(mo.DECOM)
    insert = _mode_flag(mo.IRM)
    newline = _mode_flag(mo.LNM)

    @property
    def cursor_visible(self) -> bool:
        return not self.cursor.hidden

    @cursor_visible.setter
    def cursor_visible(self, on: bool) -> None:
        self.set_flag(mo.DECTCEM, on)
        self.cursor.hidden = not on

    def set_flag(self, mode: int, on: bool) -> None:
        if on:
            self.mode.add(mode)
        else:
            self.mode.discard(mode)

    def clear_wrap(self) -> int:
        """Cancel a pending wrap, as xterm's ResetWrap does; return the column."""
        if self.cursor.x >= self.columns:
            self.cursor.x = self.columns - 1
        return self.cursor.x

    def translate(self, text: str) -> str:
        # DEC Special Graphics (xterm ctlseqs "ESC ( C", C = 0) maps ASCII to line drawing.
        if self.g[self.gl] == DEC_GRAPHICS:
            return text.translate(VT100_MAP)
        return text

    # -------------------------------------------------------------- scrolling

    def _record_scroll(self, top: int, bottom: int, count: int) -> None:
        """Shift ``dirty`` with the moved rows, mark the vacated ones, keep the event."""
        shifted = set()
        for y in self.dirty:
            if top <= y <= bottom:
                y -= count
                if not top <= y <= bottom:
                    continue
            shifted.add(y)
        if count > 0:
            shifted.update(range(bottom + 1 - count, bottom + 1))
        else:
            shifted.update(range(top, top - count))
        self.dirty = shifted
        if not self.all_dirty and not add_scroll(self.events, top, bottom, count):
            self.all_dirty = True

    def _scroll_up(self, top: int, bottom: int, count: int) -> None:
        count = min(count, bottom - top + 1)
        buffer = self.buffer
        for y in range(top, bottom + 1):
            source = y + count
            if source <= bottom and source in buffer:
                buffer[y] = buffer.pop(source)
            else:
                buffer.pop(y, None)
        self._record_scroll(top, bottom, count)

    def _scroll_down(self, top: int, bottom: int, count: int) -> None:
        count = min(count, bottom - top + 1)
        buffer = self.buffer
        for y in range(bottom, top - 1, -1):
            source = y - count
            if source >= top and source in buffer:
                buffer[y] = buffer.pop(source)
            else:
                buffer.pop(y, None)
        self._record_scroll(top, bottom, -count)

    def index(self) -> None:
        """IND; it leaves a pending wrap in the last column, and below the region the
        cursor moves down to the last line without scrolling (xterm; pyte jumps back
        to the bottom margin)."""
        self.clear_wrap()
        top, bottom = self.margins
        if self.cursor.y == bottom:
            self._scroll_up(top, bottom, 1)
        elif self.cursor.y < self.lines - 1:
            self.cursor.y += 1

    def reverse_index(self) -> None:
        self.clear_wrap()
        top, bottom = self.margins
        if self.cursor.y == top:
            self._scroll_down(top, bottom, 1)
        elif self.cursor.y > 0:
            self.cursor.y -= 1

    def linefeed(self) -> None:
        # LF, as IND, leaves a pending wrap in the last column (xterm clears its wrap flag).
        self.index()
        if mo.LNM in self.mode:
            self.cursor.x = 0

    def insert_lines(self, count: int | None = None) -> None:
        top, bottom = self.margins
        if top <= self.cursor.y <= bottom:
            self._scroll_down(self.cursor.y, bottom, count or 1)
            self.cursor.x = 0

    def delete_lines(self, count: int | None = None) -> None:
        top, bottom = self.margins
        if top <= self.cursor.y <= bottom:
            self._scroll_up(self.cursor.y, bottom, count or 1)
            self.cursor.x = 0

    def scroll_up(self, count: int) -> None:
        """SU (``CSI S``), which pyte 0.8.2 ignores."""
        self._scroll_up(self.margins.top, self.margins.bottom, count)

    def scroll_down(self, count: int) -> None:
        """SD (``CSI T``)."""
        self._scroll_down(self.margins.top, self.margins.bottom, count)

    # ---------------------------------------------------------------- drawing

    def draw(self, data: str) -> None:
        """Draw text; wcwidth decides wide, combining and unprintable characters."""
        data = self.translate(data)
        for char in data:
            width = wcwidth(char)
            if width == 1:
                self._draw_narrow(char)
            elif width == 2:
                self._draw_wide(char)
            elif width == 0:
                self._combine(char)
        self.last_char = data[-1]

    def _insert_blanks(self, line: _Line, x: int, count: int) -> None:
        columns = self.columns
        for column in range(columns - 1, x - 1, -1):
            if column - count >= x:
                line[column] = line[column - count]
            else:
                line.pop(column, None)
        if wcwidth(line[columns - 1].data[:1] or " ") == 2:
            line[columns - 1] = line[columns - 1]._replace(data=" ")

    def _draw_narrow(self, char: str) -> None:
        cursor = self.cursor
        columns = self.columns
        if cursor.x >= columns:
            if not self.autowrap:
                # Without DECAWM every further character overwrites the last column.
                line = self.buffer[cursor.y]
                self.fix_wide_edges(line, columns - 1, columns)
                line[columns - 1] = cursor.attrs._replace(data=char)
                self.dirty.add(cursor.y)
                return
            cursor.x = 0
            self.index()
        x = cursor.x
        line = self.buffer[cursor.y]
        if mo.IRM in self.mode:
            self._insert_blanks(line, x, 1)
        self.fix_wide_edges(line, x, x + 1)
        line[x] = cursor.attrs._replace(data=char)
        self.dirty.add(cursor.y)
        cursor.x = x + 1

    def _draw_wide(self, char: str) -> None:
        cursor = self.cursor
        columns = self.columns
        if cursor.x + 2 > columns:
            # xterm wraps a double-width character that does not fit on the line; without
            # DECAWM it overwrites the last two columns.
            cursor.x = 0 if self.autowrap else columns - 2
            if self.autowrap:
                self.index()
        x = cursor.x
        line = self.buffer[cursor.y]
        if mo.IRM in self.mode:
            self.fix_wide_edges(line, x, x)
            self._insert_blanks(line, x, 2)
        self.fix_wide_edges(line, x, x + 2)
        line[x] = cursor.attrs._replace(data=char)
        line[x + 1] = cursor.attrs._replace(data="")
        self.dirty.add(cursor.y)
        cursor.x = x + 2

    def _combine(self, char: str) -> None:
        """Attach a zero-width character to the cell before the cursor, as written (no NFC)."""
        before = cell_before(self.cursor.x, self.cursor.y, self.columns)
        if before is None:
            return
        x, y = before
        line = self.buffer[y]
        if not line[x].data and x > 0:
            x -= 1
        last = line[x]
        if len(last.data) >= MAX_COMBINING or not last.data:
            return
        line[x] = last._replace(data=last.data + char)
        self.dirty.add(y)

    def fix_wide_edges(self, line: _Line, start: int, end: int) -> None:
        """Blank the surviving half of wide characters cut by overwriting start..end-1."""
        if start > 0 and not line[start].data:
            line[start - 1] = line[start - 1]._replace(data=" ")
        if end < self.columns and not line[end].data:
            line[end] = line[end]._replace(data=" ")

    def repeat(self, count: int) -> None:
        """REP (ECMA-48 §8.3.103): repeat the last graphic character."""
        self.draw(self.last_char * min(count, self.columns * self.lines))

    def alignment_display(self) -> None:
        """DECALN: the screen full of default-coloured E, margins reset, cursor home."""
        for y in range(self.lines):
            self.buffer[y] = _filled_line(self.columns, _E_CHAR)
        self.all_dirty = True
        self.margins = Margins(0, self.lines - 1)
        self.cursor.x = self.cursor.y = 0

    # ---------------------------------------------------------------- erasing

    def erase_in_line(self, how: int = 0, private: bool = False) -> None:
        x = self.clear_wrap()
        line = self.buffer[self.cursor.y]
        span = erased_span(how, x, self.columns)
        if span is None:
            return
        self.fix_wide_edges(line, *span)
        super().erase_in_line(how, private)

    def erase_in_display(self, how: int = 0, *args: Any, **kwargs: Any) -> None:
        # pyte erases only the cells it has stored; every cell of the rows is erased.
        if how == 0:
            rows = range(self.cursor.y + 1, self.lines)
        elif how == 1:
            rows = range(self.cursor.y)
        elif how == 2:
            rows = range(self.lines)
        else:
            return  # ED 3 erases saved lines (xterm); there is no scrollback here.
        for y in rows:
            self.buffer[y] = _filled_line(self.columns, self.cursor.attrs)
        self.dirty.update(rows)
        if how == 2:
            self.all_dirty = True
        else:
            self.erase_in_line(how)

    def erase_characters(self, count: int | None = None) -> None:
        x = self.clear_wrap()
        count = min(count or 1, self.columns - x)
        self.fix_wide_edges(self.buffer[self.cursor.y], x, x + count)
        super().erase_characters(count)

    def insert_characters(self, count: int | None = None) -> None:
        x = self.clear_wrap()
        line = self.buffer[self.cursor.y]
        self.fix_wide_edges(line, x, x)
        self._insert_blanks(line, x, min(count or 1, self.columns - x))
        self.dirty.add(self.cursor.y)

    def delete_characters(self, count: int | None = None) -> None:
        x = self.clear_wrap()
        count = min(count or 1, self.columns - x)
        self.fix_wide_edges(self.buffer[self.cursor.y], x, x + count)
        super().delete_characters(count)

    def clear_alternate(self) -> None:
        buffer = self.alt_buffer
        for y in range(self.lines):
            buffer[y] = _filled_line(self.columns, self.cursor.attrs)
        if buffer is self.buffer:
            self.all_dirty = True

    # ---------------------------------------------------------- cursor moves

    def cursor_up(self, count: int | None = None) -> None:
        # xterm: the top margin stops CUU only for a cursor inside or below the region.
        top = self.margins.top if self.cursor.y >= self.margins.top else 0
        self.clear_wrap()
        self.cursor.y = max(top, self.cursor.y - (count or 1))

    def cursor_down(self, count: int | None = None) -> None:
        bottom = self.margins.bottom if self.cursor.y <= self.margins.bottom else self.lines - 1
        self.clear_wrap()
        self.cursor.y = min(bottom, self.cursor.y + (count or 1))

    def cursor_forward(self, count: int | None = None) -> None:
        self.cursor.x = min(self.columns - 1, self.clear_wrap() + (count or 1))

    def cursor_back(self, count: int | None = None) -> None:
        self.cursor.x = max(0, self.clear_wrap() - (count or 1))

    def cursor_down1(self, count: int | None = None) -> None:
        """CNL."""
        self.cursor_down(count)
        self.cursor.x = 0

    def cursor_up1(self, count: int | None = None) -> None:
        """CPL."""
        self.cursor_up(count)
        self.cursor.x = 0

    def cursor_to_column(self, column: int | None = None) -> None:
        self.cursor.x = min(self.columns, column or 1) - 1

    def cursor_position(self, line: int | None = None, column: int | None = None) -> None:
        line = (line or 1) - 1
        if self.origin:
            self.cursor.y = min(self.margins.top + line, self.margins.bottom)
        else:
            self.cursor.y = min(line, self.lines - 1)
        self.cursor.x = min((column or 1) - 1, self.columns - 1)

    def cursor_to_line(self, line: int | None = None) -> None:
        line = (line or 1) - 1
        if self.origin:
            self.cursor.y = min(self.margins.top + line, self.margins.bottom)
        else:
            self.cursor.y = min(line, self.lines - 1)
        self.clear_wrap()

    def backspace(self) -> None:
        # BS from a pending wrap lands on the second-last column (xterm, pyte).
        if self.cursor.x >= self.columns:
            self.cursor.x = self.columns - 2
        elif self.cursor.x > 0:
            self.cursor.x -= 1

    def tab(self, count: int = 1) -> None:  # type: ignore[override]
        x = min(self.cursor.x, self.columns - 1)
        stops = sorted(self.tabstops)
        for _ in range(count):
            x = next((stop for stop in stops if stop > x), self.columns - 1)
        self.cursor.x = x

    def back_tab(self, count: int) -> None:
        x = min(self.cursor.x, self.columns - 1)
        stops = sorted(self.tabstops, reverse=True)
        for _ in range(count):
            x = next((stop for stop in stops if stop < x), 0)
        self.cursor.x = x

    def set_tab_stop(self) -> None:
        if self.cursor.x < self.columns:
            self.tabstops.add(self.cursor.x)

    def set_margins(self, top: int | None = None, bottom: int | None = None) -> None:
        """DECSTBM; a valid region (top < bottom) also homes the cursor (VT510 manual)."""
        first = (top or 1) - 1
        last = min(bottom or self.lines, self.lines) - 1
        if first < last:
            self.margins = Margins(first, last)
            self.cursor.x = 0
            self.cursor.y = first if self.origin else 0

    # ------------------------------------------------------ modes and cursors

    def dec_mode(self, mode: int, on: bool) -> None:
        """DECSET / DECRST (xterm ctlseqs "CSI ? Pm h"): modes.py's, on this model; pyte's
        DECCOLM resize and DECSCNM cell rewriting are not used."""
        dec_mode(self, mode, on)

    def set_cursor_style(self, style: int) -> None:
        """DECSCUSR (xterm ctlseqs "CSI Ps SP q"), 0..6."""
        self.cursor_style = style

    def ansi_mode(self, mode: int, on: bool) -> None:
        if mode == 4:
            self.set_flag(mo.IRM, on)
        elif mode == 20:
            self.set_flag(mo.LNM, on)

    def show_buffer(self, alternate: bool) -> None:
        self.buffer = self.alt_buffer if alternate else self.main_buffer

    def save_cursor(self) -> None:
        """DECSC: one slot per screen buffer, as in xterm."""
        fg, bg, flags = self.pen
        self.saved[self.alt_active] = (
            self.cursor.x, self.cursor.y, fg, bg, flags,
            self.g[0], self.g[1], self.gl, self.origin, self.autowrap,
        )

    def restore_cursor(self) -> None:
        """DECRC; with nothing saved: home, default pen, origin mode off (xterm)."""
        saved = self.saved[self.alt_active]
        if saved is None:
            self.cursor.x = self.cursor.y = 0
            self.set_pen(DEFAULT, DEFAULT, 0)
            self.set_flag(mo.DECOM, False)
            return
        x, y, fg, bg, flags, g0, g1, self.gl, origin, autowrap = saved
        self.g = [g0, g1]
        self.set_flag(mo.DECOM, origin)
        self.set_flag(mo.DECAWM, autowrap)
        self.cursor.x = min(x, self.columns - 1)
        self.cursor.y = min(y, self.lines - 1)
        self.set_pen(fg, bg, flags)

    def soft_reset(self) -> None:
        """DECSTR (CSI ! p): modes, margins, pen and charsets to defaults; screen kept."""
        self.set_flag(mo.IRM, False)
        self.set_flag(mo.DECOM, False)
        self.set_flag(mo.DECTCEM, True)
        self.app_cursor = False
        self.app_keypad = False
        self.cursor.hidden = False
        self.margins = Margins(0, self.lines - 1)
        self.set_pen(DEFAULT, DEFAULT, 0)
        self.g = ["B", "B"]
        self.gl = 0
        self.saved[self.alt_active] = None

    def report_cursor_position(self) -> None:
        # A pending wrap reports the last column; origin mode reports relative rows.
        line = self.cursor.y - (self.margins.top if self.origin else 0) + 1
        column = min(self.cursor.x, self.columns - 1) + 1
        self.replies.append(b"\x1b[%d;%dR" % (line, column))

    def resize_to(self, columns: int, lines: int) -> None:
        """Change the size; rows are cut at the top only as far as the cursor row needs."""
        old_columns = self.columns
        drop = max(0, self.cursor.y - (lines - 1))
        for buffer in (self.main_buffer, self.alt_buffer):
            rows = [buffer.pop(y) if y in buffer else None for y in range(self.lines)]
            buffer.clear()
            for y, line in enumerate(rows[drop:drop + lines]):
                if line is None:
                    continue
                for x in range(columns, old_columns):
                    line.pop(x, None)
                for x in range(old_columns, columns):
                    line[x] = _BLANK_CHAR
                if columns < old_columns and wcwidth(line[columns - 1].data[:1] or " ") == 2:
                    line[columns - 1] = line[columns - 1]._replace(data=" ")
                buffer[y] = line
        self.columns = columns
        self.lines = lines
        self.cursor.y -= drop
        self.cursor.x = min(self.cursor.x, columns - 1)
        self.margins = Margins(0, lines - 1)
        kept = {stop for stop in self.tabstops if stop < min(columns, old_columns)}
        first_new = -(-old_columns // 8) * 8
        self.tabstops = kept | set(range(max(8, first_new), columns, 8))
        self.all_dirty = True

    # -------------------------------------------------- what the frontend reads

    @property
    def position(self) -> tuple[int, int]:
        return self.cursor.x, self.cursor.y

    def cells(self, row: int) -> Sequence[Cell]:
        line = self.buffer[range(self.lines)[row]]
        return tuple([_cell(line[x]) for x in range(self.columns)])

    def text(self) -> str:
        buffer = self.buffer
        columns = range(self.columns)
        return "".join(
            "".join([buffer[y][x].data for x in columns]).rstrip(" ") + "\n" for y in range(self.lines)
        )

    def take_dirty(self) -> frozenset[int]:
        lines = self.lines
        dirty = frozenset(y for y in self.dirty if 0 <= y < lines)
        self.dirty = set()
        return dirty

    def model_snapshot(self) -> dict[str, Any]:
        def rows(buffer: defaultdict[int, _Line]) -> list[list[list[Any]]]:
            blank = StaticDefaultDict(_BLANK_CHAR)
            return [
                [list(_cell(line[x])) for x in range(self.columns)]
                for line in (buffer[y] if y in buffer else blank for y in range(self.lines))
            ]

        return {
            "main": rows(self.main_buffer),
            "alt": rows(self.alt_buffer),
            "cursor": [self.cursor.x, self.cursor.y],
            "pen": list(self.pen),
            "margins": list(self.margins),
            "tabstops": sorted(self.tabstops),
        }

    def restore_model(self, snapshot: dict[str, Any]) -> None:
        def fill(buffer: defaultdict[int, _Line], data: list[list[list[Any]]]) -> None:
            for y, cells in enumerate(data):
                line: _Line = StaticDefaultDict(_BLANK_CHAR)
                for x, (char, fg, bg, flags) in enumerate(cells):
                    value = _char(Cell(char, fg, bg, flags))
                    if value != _BLANK_CHAR:
                        line[x] = value
                if line:
                    buffer[y] = line

        fill(self.main_buffer, snapshot["main"])
        fill(self.alt_buffer, snapshot["alt"])
        self.alt_active = snapshot["alt_active"]
        self.buffer = self.alt_buffer if self.alt_active else self.main_buffer
        self.cursor.x, self.cursor.y = snapshot["cursor"]
        self.set_pen(*snapshot["pen"])
        self.margins = Margins(*snapshot["margins"])
        self.tabstops = set(snapshot["tabstops"])

    def parser_shortcuts(self) -> None:
        return None


class PyteTerminal(TerminalFrontend):
    """A terminal screen kept by pyte, fed with the bytes a pty master reads."""

    screen_class = _Screen

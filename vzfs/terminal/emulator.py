"""A fast, pure xterm-style terminal emulator: pty bytes in; cells, dirty rows, scrolls and replies out.

Theory of operation
-------------------
``Terminal.feed`` decodes UTF-8 incrementally and cuts the text into tokens with one
regular expression (text runs, CR LF, SGR, other CSI, C0 controls, control strings,
other escapes). Text runs are written into a row as one slice of ``Cell`` objects taken
from a per-pen cache, so printable text costs a few C-level operations per run rather
than Python work per character.

When one feed holds more complete lines than the screen has rows, most of them can
only scroll through: in a stretch of text, CR, LF, BS, HT and SGR ending in CR LF, with
a full-screen scroll region, the effect of all but the last ``lines`` lines is known
without drawing them — the pen after their SGRs, the cursor at the bottom left, and
rows that the last ``lines`` lines push off the screen. Those are drawn exactly; the
rest is skipped (``_skip_ahead``).

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

import codecs
import re
from typing import Any, Callable, Final, Sequence

from pyte.charsets import VT100_MAP

from .cell import (
    BLANK, BLINK, BOLD, CONCEAL, DIM, ITALIC, MAX_COMBINING, REVERSE, STRIKETHROUGH, UNDERLINE, WIDE,
    WIDE_CONT, Cell, wcwidth,
)
from .interface import SNAPSHOT_VERSION, Cursor, Modes, SavedCursor, Scroll, Update, add_scroll
from .palette import DEFAULT, LINUX_COLOURS, TRUECOLOR, apply_palette_sequence, resolve_bg, resolve_fg

# Token kinds, tried in order of frequency. Control strings (DCS, OSC, SOS, PM, APC) end
# at ST, at BEL (xterm accepts BEL for OSC), are cancelled by CAN/SUB, and are aborted by
# an ESC that does not start ST (ECMA-48 §5.6, xterm ctlseqs "Operating System Commands").
# CSI parameters may hold C0 controls, which a VT terminal executes in place (VT100 User
# Guide, "Control Characters"); ESC, CAN and SUB abort the sequence instead.
# ESC ] R and ESC ] P nrrggbb are not OSC strings but the Linux console's palette
# sequences (TERM=linux sends ESC ] R on reset), which need no terminator: P takes exactly
# seven hex digits, C0 controls among them are executed, ESC, CAN and SUB abort it, and
# any other character aborts it and is consumed (vt.c do_con_trol, ESnonstd, ESpalette).
_TOKEN: Final = re.compile(
    r"(?P<text>[^\x00-\x1f\x7f-\x9f]+)"
    r"|(?P<crlf>\r\n)"
    r"|(?P<sgr>\x1b\[([0-9;:]*)m)"
    r"|(?P<cup>\x1b\[([0-9]*);?([0-9]*)H)"
    r"|(?P<csi>(?:\x1b\[|\x9b)([\x30-\x3f\x00-\x17\x19\x1c-\x1f\x7f]*)([\x20-\x2f]*)([\x40-\x7e]))"
    r"|(?P<ctl>[\x00-\x1a\x1c-\x1f\x7f])"
    r"|(?P<pal>\x1b\](?:R|P(?:[\x00-\x17\x19\x1c-\x1f\x7f]*[0-9A-Fa-f]){7}"
    r"|P(?:[\x00-\x17\x19\x1c-\x1f\x7f]*[0-9A-Fa-f]){0,6}[\x00-\x17\x19\x1c-\x1f\x7f]*"
    r"(?:[^0-9A-Fa-f\x00-\x17\x19\x1b-\x1f\x7f]|(?=\x1b))))"
    r"|(?P<str>(\x1b(?:\](?![PR])|[PX^_])|[\x90\x98\x9d\x9e\x9f])([^\x07\x18\x1a\x1b\x9c]*)"
    r"(\x07|\x1b\\|\x9c|[\x18\x1a]|(?=\x1b[^\\])))"
    r"|(?P<esc>\x1b([\x20-\x2f]*)([\x30-\x4f\x51-\x57\x59\x5a\x5c\x60-\x7e]))"
    r"|(?P<lone>[\x1b\x80-\x9f])"
)
_T_TEXT: Final = _TOKEN.groupindex["text"]
_T_CRLF: Final = _TOKEN.groupindex["crlf"]
_T_SGR: Final = _TOKEN.groupindex["sgr"]
_T_CUP: Final = _TOKEN.groupindex["cup"]
_T_CSI: Final = _TOKEN.groupindex["csi"]
_T_CTL: Final = _TOKEN.groupindex["ctl"]
_T_PAL: Final = _TOKEN.groupindex["pal"]
_T_STR: Final = _TOKEN.groupindex["str"]
_T_ESC: Final = _TOKEN.groupindex["esc"]

_CSI_PREFIX: Final = re.compile(r"(?:\x1b\[|\x9b)[\x30-\x3f\x00-\x17\x19\x1c-\x1f\x7f]*[\x20-\x2f]*")
_ESC_PREFIX: Final = re.compile(r"\x1b[\x20-\x2f]*")
_STRING_INTRO: Final = frozenset("\x90\x98\x9d\x9e\x9f")
_C1_STRING_KIND: Final = {"\x90": "P", "\x98": "X", "\x9d": "]", "\x9e": "^", "\x9f": "_"}

# A *simple stretch* holds only characters whose width is surely 1 (ASCII and the
# Latin/IPA blocks below the combining diacritics at U+0300, checked against wcwidth
# in the tests), CR, LF and SGR in the semicolon form. Such stretches are drawn in
# batches with str.split, because a regular expression match object per token costs
# more than the token.
_NOT_SIMPLE: Final = re.compile("[^\x20-\x7e\xa0-\u02ff\r\n\x1b]")
# The skip-ahead only needs to know that nothing but cells, the pen and the column
# change: any character but the C0 and C1 controls other than BS, HT, LF, CR and ESC.
_NOT_SKIPPABLE: Final = re.compile("[\x00-\x07\x0b\x0c\x0e-\x1a\x1c-\x1f\x7f-\x9f]")
_NOT_SGR: Final = re.compile(r"\x1b(?!\[[0-9;]*m)")
_SGR_ONLY: Final = re.compile(r"\x1b\[([0-9;]*)m")
_SKIP_MIN: Final = 2048
_BATCH_MIN: Final = 32
_MAX_PENS: Final = 1024
_MAX_TRANSITIONS: Final = 64

# Longest control string / unfinished sequence kept between feeds; a sixel image or a
# runaway DCS must not grow memory without bound.
_MAX_PENDING: Final = 4096
_MAX_TITLE: Final = 1024
_MAX_PARAM: Final = 65535

# SGR attribute codes (ECMA-48 §8.3.117, xterm ctlseqs "Character Attributes"); 22 is
# "normal intensity", neither bold nor faint.
_FLAG_ON: Final = {1: BOLD, 2: DIM, 3: ITALIC, 4: UNDERLINE, 5: BLINK, 7: REVERSE, 8: CONCEAL,
                   9: STRIKETHROUGH}
_FLAG_OFF: Final = {22: BOLD | DIM, 23: ITALIC, 24: UNDERLINE, 25: BLINK, 27: REVERSE, 28: CONCEAL,
                    29: STRIKETHROUGH}

# Replies, as xterm and the Linux console send them (xterm ctlseqs "Device Attributes",
# "Device Status Report"; linux/drivers/tty/vt/vt.c VT102ID).
DA1_REPLY: Final = b"\x1b[?6c"
DA2_REPLY: Final = b"\x1b[>0;10;0c"
DSR_OK_REPLY: Final = b"\x1b[0n"

_DEC_GRAPHICS: Final = "0"


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


def _new_decoder() -> codecs.IncrementalDecoder:
    # "replace" turns every invalid byte into U+FFFD, and the incremental decoder keeps
    # a multibyte sequence split between two feeds.
    return codecs.getincrementaldecoder("utf-8")("replace")


class Terminal:
    """An 80x25 (by default) terminal screen fed with the bytes a pty master reads."""

    def __init__(self, columns: int = 80, lines: int = 25) -> None:
        if columns < 2 or lines < 2:
            raise ValueError(f"cannot make a {columns}x{lines} terminal: it needs at least 2x2 cells")
        self._columns = columns
        self._lines = lines
        self._decoder = _new_decoder()
        self._pending = ""
        self._title = ""
        self._glyph_caches: dict[tuple[int, int, int], _Glyphs] = {}
        self._pens: dict[tuple[int, int, int], _Pen] = {}
        self._events: list[Scroll] = []
        self._replies: list[bytes] = []
        self._bell = False
        self._title_changed = False
        # The Linux console's palette; RIS keeps it, as vt.c reset_terminal does.
        self._palette = list(LINUX_COLOURS)
        self._reset()

    # ----------------------------------------------------------------- public API

    @property
    def columns(self) -> int:
        return self._columns

    @property
    def lines(self) -> int:
        return self._lines

    @property
    def title(self) -> str:
        return self._title

    @property
    def palette(self) -> tuple[int, ...]:
        """The sixteen colours (0xRRGGBB) the renderer draws the basic colours and the
        default ones with: the Linux console's, or what ``ESC ] P`` made them."""
        return tuple(self._palette)

    @property
    def cursor(self) -> Cursor:
        # x == columns means "a wrap is pending"; the cursor is shown in the last column.
        return Cursor(min(self._x, self._columns - 1), self._y, self._cursor_visible)

    @property
    def modes(self) -> Modes:
        return Modes(
            app_cursor=self._app_cursor,
            app_keypad=self._app_keypad,
            bracketed_paste=self._bracketed_paste,
            alt_screen=self._alt_active,
            cursor_visible=self._cursor_visible,
            autowrap=self._autowrap,
            insert=self._insert,
            origin=self._origin,
            newline=self._newline,
            reverse_video=self._reverse_video,
            mouse=self._mouse,
            mouse_sgr=self._mouse_sgr,
            cursor_style=self._cursor_style,
        )

    def cells(self, row: int) -> Sequence[Cell]:
        """The cells of one row, left to right."""
        return tuple(self._rows[row])

    def text(self) -> str:
        """The screen as text: one line per row, trailing spaces trimmed, each ending in "\\n"."""
        return "".join(
            "".join([cell[0] for cell in row]).rstrip(" ") + "\n" for row in self._rows
        )

    def feed(self, data: bytes) -> Update:
        """Process bytes read from the pty master and tell what changed."""
        text = self._pending + self._decoder.decode(data)
        self._pending = ""
        position = 0
        if len(text) > _SKIP_MIN:
            position = self._skip_ahead(text)
        stop = self._run(text, position, len(text))
        if stop < len(text):
            self._keep_pending(text[stop:])
        return self._take_update()

    def resize(self, columns: int, lines: int) -> Update:
        """Change the size; rows are cut at the top only as far as the cursor row needs."""
        if columns < 2 or lines < 2:
            raise ValueError(f"cannot resize the terminal to {columns}x{lines}: it needs at least 2x2 cells")
        old_columns = self._columns
        drop = max(0, self._y - (lines - 1))
        for rows in (self._main, self._alt):
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
        self._columns = columns
        self._lines = lines
        self._y -= drop
        self._x = min(self._x, columns - 1)
        self._top, self._bottom = 0, lines - 1
        kept = [stop for stop in self._tabstops if stop < min(columns, old_columns)]
        first_new = -(-old_columns // 8) * 8
        self._tabstops = kept + list(range(max(8, first_new), columns, 8))
        self._all_dirty = True
        return self._take_update()

    def snapshot(self) -> dict[str, Any]:
        """The whole state as plain JSON-serialisable data; ``restore`` rebuilds it exactly."""
        buffered, flag = self._decoder.getstate()
        return {
            "version": SNAPSHOT_VERSION,
            "columns": self._columns,
            "lines": self._lines,
            "main": [[list(cell) for cell in row] for row in self._main],
            "alt": [[list(cell) for cell in row] for row in self._alt],
            "alt_active": self._alt_active,
            "cursor": [self._x, self._y],
            "pen": [self._fg, self._bg, self._flags],
            "margins": [self._top, self._bottom],
            "modes": {
                "app_cursor": self._app_cursor,
                "app_keypad": self._app_keypad,
                "bracketed_paste": self._bracketed_paste,
                "cursor_visible": self._cursor_visible,
                "autowrap": self._autowrap,
                "insert": self._insert,
                "origin": self._origin,
                "newline": self._newline,
                "reverse_video": self._reverse_video,
                "mouse": self._mouse,
                "mouse_sgr": self._mouse_sgr,
                "cursor_style": self._cursor_style,
            },
            "saved": [None if saved is None else list(saved) for saved in self._saved],
            "charsets": [self._g[0], self._g[1], self._gl],
            "tabstops": list(self._tabstops),
            "title": self._title,
            "palette": list(self._palette),
            "last_char": self._last_char,
            "pending": self._pending,
            "utf8": [list(buffered), flag],
        }

    @classmethod
    def restore(cls, snapshot: dict[str, Any]) -> Terminal:
        """A terminal in exactly the state ``snapshot`` recorded."""
        if snapshot.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"cannot restore terminal snapshot version {snapshot.get('version')!r}")
        terminal = cls(snapshot["columns"], snapshot["lines"])

        def rows(data: list[list[list[Any]]]) -> list[_Row]:
            made = []
            for cells in data:
                row = _Row(Cell(char, fg, bg, flags) for char, fg, bg, flags in cells)
                row.dirty = True
                row.wide = any(cell.flags & (WIDE | WIDE_CONT) for cell in row)
                made.append(row)
            return made

        terminal._main = rows(snapshot["main"])
        terminal._alt = rows(snapshot["alt"])
        terminal._alt_active = snapshot["alt_active"]
        terminal._rows = terminal._alt if terminal._alt_active else terminal._main
        terminal._x, terminal._y = snapshot["cursor"]
        terminal._fg, terminal._bg, terminal._flags = snapshot["pen"]
        terminal._top, terminal._bottom = snapshot["margins"]
        modes = snapshot["modes"]
        terminal._app_cursor = modes["app_cursor"]
        terminal._app_keypad = modes["app_keypad"]
        terminal._bracketed_paste = modes["bracketed_paste"]
        terminal._cursor_visible = modes["cursor_visible"]
        terminal._autowrap = modes["autowrap"]
        terminal._insert = modes["insert"]
        terminal._origin = modes["origin"]
        terminal._newline = modes["newline"]
        terminal._reverse_video = modes["reverse_video"]
        terminal._mouse = modes["mouse"]
        terminal._mouse_sgr = modes["mouse_sgr"]
        terminal._cursor_style = modes.get("cursor_style", 0)  # absent before DECSCUSR
        terminal._saved = [
            None if saved is None else (
                saved[0], saved[1], saved[2], saved[3], saved[4],
                saved[5], saved[6], saved[7], saved[8], saved[9],
            )
            for saved in snapshot["saved"]
        ]
        g0, g1, gl = snapshot["charsets"]
        terminal._g = [g0, g1]
        terminal._gl = gl
        terminal._update_charset()
        terminal._tabstops = list(snapshot["tabstops"])
        terminal._title = snapshot["title"]
        terminal._palette = list(snapshot.get("palette", LINUX_COLOURS))  # absent before ESC ] P
        terminal._last_char = snapshot["last_char"]
        terminal._pending = snapshot["pending"]
        buffered, flag = snapshot["utf8"]
        terminal._decoder.setstate((bytes(buffered), flag))
        terminal._apply_pen()
        terminal._all_dirty = True
        return terminal

    # ------------------------------------------------------------- state helpers

    def _reset(self) -> None:
        """RIS: everything but the title back to power-on state (xterm keeps the title)."""
        self._main = [self._new_row(self._columns) for _ in range(self._lines)]
        self._alt = [self._new_row(self._columns) for _ in range(self._lines)]
        self._rows = self._main
        self._alt_active = False
        self._x = 0
        self._y = 0
        self._top = 0
        self._bottom = self._lines - 1
        self._fg = DEFAULT
        self._bg = DEFAULT
        self._flags = 0
        self._app_cursor = False
        self._app_keypad = False
        self._bracketed_paste = False
        self._cursor_visible = True
        self._autowrap = True
        self._insert = False
        self._origin = False
        self._newline = False
        self._reverse_video = False
        self._mouse = 0
        self._mouse_sgr = False
        self._cursor_style = 0
        self._saved: list[SavedCursor | None] = [None, None]
        self._g = ["B", "B"]
        self._gl = 0
        self._update_charset()
        self._tabstops = list(range(8, self._columns, 8))
        self._last_char = " "
        self._apply_pen()
        self._all_dirty = True

    @staticmethod
    def _new_row(columns: int) -> _Row:
        row = _Row([BLANK] * columns)
        row.dirty = True
        return row

    def _glyphs_for(self, fg: int, bg: int, flags: int) -> _Glyphs:
        """The glyph cache of a pen, its colours resolved."""
        key = (resolve_fg(fg, bool(flags & BOLD)), resolve_bg(bg), flags)
        glyphs = self._glyph_caches.get(key)
        if glyphs is None:
            if len(self._glyph_caches) > 256:
                self._glyph_caches.clear()
            glyphs = self._glyph_caches[key] = _Glyphs(*key)
        return glyphs

    def _pen_for(self, fg: int, bg: int, flags: int) -> _Pen:
        pen = self._pens.get((fg, bg, flags))
        if pen is None:
            if len(self._pens) >= _MAX_PENS:
                self._pens.clear()
            pen = self._pens[fg, bg, flags] = _Pen(fg, bg, flags, self._glyphs_for(fg, bg, flags))
        return pen

    def _apply_pen(self) -> None:
        """Make the pen given by _fg, _bg and _flags the one text is drawn with."""
        self._set_pen(self._pen_for(self._fg, self._bg, self._flags))

    def _set_pen(self, pen: _Pen) -> None:
        self._pen = pen
        self._fg, self._bg, self._flags = pen.fg, pen.bg, pen.flags
        self._glyphs = pen.glyphs
        self._erase = pen.erase

    def _update_charset(self) -> None:
        # DEC Special Graphics (xterm ctlseqs "ESC ( C", C = 0) maps ASCII to line drawing.
        self._translate = VT100_MAP if self._g[self._gl] == _DEC_GRAPHICS else None

    def _take_update(self) -> Update:
        rows = self._rows
        if self._all_dirty:
            dirty = frozenset(range(self._lines))
        else:
            dirty = frozenset([index for index, row in enumerate(rows) if row.dirty])
        scrolls = () if len(dirty) == self._lines else tuple(self._events)
        for row in rows:
            row.dirty = False
        update = Update(
            dirty=dirty,
            scrolls=scrolls,
            replies=b"".join(self._replies),
            bell=self._bell,
            title=self._title if self._title_changed else None,
        )
        self._events = []
        self._replies = []
        self._bell = False
        self._title_changed = False
        self._all_dirty = False
        return update

    def _keep_pending(self, rest: str) -> None:
        self._pending = pending_part(rest)

    # ------------------------------------------------------------------- scrolling

    def _record_scroll(self, top: int, bottom: int, count: int) -> None:
        if not self._all_dirty and not add_scroll(self._events, top, bottom, count):
            self._all_dirty = True

    def _scroll_up(self, top: int, bottom: int, count: int) -> None:
        count = min(count, bottom - top + 1)
        rows = self._rows
        columns = self._columns
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
        rows = self._rows
        del rows[bottom + 1 - count:bottom + 1]
        rows[top:top] = [self._new_row(self._columns) for _ in range(count)]
        self._record_scroll(top, bottom, -count)

    def _index(self) -> None:
        """IND: down one row, scrolling the region at its bottom margin.

        Below the region the cursor moves down to the last line without scrolling
        (xterm; pyte 0.8.2 wrongly jumps back to the bottom margin).
        """
        if self._y == self._bottom:
            self._scroll_up(self._top, self._bottom, 1)
        elif self._y < self._lines - 1:
            self._y += 1

    def _linefeed(self) -> None:
        # LF leaves a pending wrap in the last column (xterm clears its wrap flag).
        if self._x >= self._columns:
            self._x = self._columns - 1
        self._index()
        if self._newline:
            self._x = 0

    def _reverse_index(self) -> None:
        if self._y == self._top:
            self._scroll_down(self._top, self._bottom, 1)
        elif self._y > 0:
            self._y -= 1

    # --------------------------------------------------------------------- drawing

    def _draw(self, text: str) -> None:
        if self._translate is not None:
            text = text.translate(self._translate)
        if text.isascii():
            self._draw_narrow(text)
        else:
            self._draw_unicode(text)
        self._last_char = text[-1]

    def _draw_narrow(self, text: str) -> None:
        """Draw characters one cell wide each, a row-sized slice at a time."""
        columns = self._columns
        glyphs = self._glyphs
        x = self._x
        start = 0
        length = len(text)
        while start < length:
            if x >= columns:
                if not self._autowrap:
                    # Without DECAWM every further character overwrites the last column.
                    row = self._rows[self._y]
                    self._fix_wide_edges(row, columns - 1, columns)
                    row[columns - 1] = glyphs[text[-1]]
                    row.dirty = True
                    break
                self._x = 0
                self._index()
                x = 0
            row = self._rows[self._y]
            count = min(length - start, columns - x)
            end = x + count
            if self._insert:
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
        self._x = x

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
        columns = self._columns
        if self._x + 2 > columns:
            # xterm wraps a double-width character that does not fit on the line.
            if self._autowrap:
                self._x = 0
                self._index()
            else:
                self._x = columns - 2
        x = self._x
        row = self._rows[self._y]
        if self._insert:
            self._fix_wide_edges(row, x, x)
            row[x:x] = [BLANK, BLANK]
            del row[columns:]
            if row[-1].flags & WIDE:
                row[-1] = _unwide(row[-1])
        self._fix_wide_edges(row, x, x + 2)
        glyphs = self._glyphs
        row.wide = True
        row[x] = Cell(char, glyphs.fg, glyphs.bg, glyphs.flags | WIDE)
        row[x + 1] = Cell("", glyphs.fg, glyphs.bg, glyphs.flags | WIDE_CONT)
        row.dirty = True
        self._x = x + 2

    def _combine(self, char: str) -> None:
        """Attach a zero-width character to the cell before the cursor, as written: the
        cell keeps the sequence the program sent (pyte composes it to NFC, so that
        ``screen`` would not hold the bytes written; the renderer's font composes)."""
        x, y = self._x, self._y
        if x == 0:
            if y == 0:
                return
            y -= 1
            x = self._columns
        row = self._rows[y]
        x -= 1
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
        if end < self._columns and row[end].flags & WIDE_CONT:
            row[end] = _unwide(row[end])

    # --------------------------------------------------------------------- parsing

    def _run(self, text: str, position: int, end: int, batch: bool = True) -> int:
        """Process text[position:end]; return where an unfinished sequence starts (or end)."""
        match = _TOKEN.match
        draw = self._draw
        # Tokens before this position are known not to open a stretch worth a batch.
        no_batch_before = position if batch else end
        while position < end:
            token = match(text, position, end)
            assert token is not None
            kind = token.lastindex
            # Text, CR LF and SGR (the first three kinds) may open a simple stretch.
            if (position >= no_batch_before and kind is not None and kind <= _T_SGR
                    and self._translate is None and not self._insert):
                stop = _simple_end(text, position, end)
                if stop - position >= _BATCH_MIN:
                    self._batch(text[position:stop])
                    position = stop
                    continue
                no_batch_before = stop
            if kind == _T_TEXT:
                draw(token.group())
            elif kind == _T_CRLF:
                self._x = 0
                if self._y == self._bottom:
                    self._scroll_up(self._top, self._bottom, 1)
                elif self._y < self._lines - 1:
                    self._y += 1
            elif kind == _T_SGR:
                self._sgr(token.group(_T_SGR + 1))
            elif kind == _T_CUP:
                # CUP alone is most of what full-screen programs send (top, vim, less).
                line = token.group(_T_CUP + 1)
                column = token.group(_T_CUP + 2)
                self._cursor_position([_number(line), _number(column)])
            elif kind == _T_CSI:
                self._csi(token.group(_T_CSI + 1), token.group(_T_CSI + 2), token.group(_T_CSI + 3))
            elif kind == _T_CTL:
                self._control(token.group())
            elif kind == _T_STR:
                self._control_string(
                    token.group(_T_STR + 1), token.group(_T_STR + 2), token.group(_T_STR + 3)
                )
            elif kind == _T_PAL:
                self._palette_sequence(token.group())
            elif kind == _T_ESC:
                self._escape(token.group(_T_ESC + 1), token.group(_T_ESC + 2))
            else:
                following = self._lone(text, position, end)
                if following < 0:
                    return position
                position = following
                continue
            position = token.end()
        return end

    def _batch(self, stretch: str) -> None:
        """Draw a simple stretch: split at CR LF and at SGR, write each piece as a slice."""
        columns = self._columns
        rows = self._rows
        transition = self._transition
        x, y = self._x, self._y
        pen = self._pen
        get = pen.get
        drawn = ""
        lines = stretch.split("\r\n")
        last = len(lines) - 1
        for number, line in enumerate(lines):
            if "\r" in line or "\n" in line:
                self._x, self._y = x, y
                self._set_pen(pen)
                if drawn:
                    self._last_char = drawn[-1]
                    drawn = ""
                self._run(line, 0, len(line), batch=False)
                x, y = self._x, self._y
                pen = self._pen
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
                        self._x, self._y = x, y
                        self._set_pen(pen)
                        self._draw_narrow(piece)
                        x, y = self._x, self._y
                        row = rows[y]
                        careful = row.wide
                    else:
                        row[x:x + count] = map(get, piece)
                        x += count
                    drawn = piece
                row.dirty = True
            if number < last:
                x = 0
                if y == self._bottom:
                    self._scroll_up(self._top, self._bottom, 1)
                elif y < self._lines - 1:
                    y += 1
        self._x, self._y = x, y
        self._set_pen(pen)
        if drawn:
            self._last_char = drawn[-1]

    @staticmethod
    def _lone(text: str, position: int, end: int) -> int:
        """An ESC or C1 byte that starts no complete sequence: the next position, or -1
        when the sequence may still be completed by the next feed."""
        char = text[position]
        if char in _STRING_INTRO:
            return -1
        if char == "\x1b" or char == "\x9b":
            if char == "\x1b" and position + 1 < end and text[position + 1] in "P]X^_":
                return -1
            prefix = _CSI_PREFIX.match(text, position, end)
            if prefix is not None:
                if prefix.end() == end:
                    return -1
                # A malformed CSI is dropped; CAN or SUB that cancelled it goes too.
                following = prefix.end()
                return following + 1 if text[following] in "\x18\x1a" else following
            if char == "\x1b":
                escape = _ESC_PREFIX.match(text, position, end)
                assert escape is not None
                if escape.end() == end:
                    return -1
                return escape.end()
        # Other C1 controls (NEL, IND, … in 8-bit form) are not used by UTF-8 programs.
        return position + 1

    def _control(self, char: str) -> None:
        if char == "\r":
            self._x = 0
        elif char == "\n" or char == "\x0b" or char == "\x0c":
            self._linefeed()
        elif char == "\x08":
            # BS from a pending wrap lands on the second-last column (xterm, pyte).
            if self._x >= self._columns:
                self._x = self._columns - 2
            elif self._x > 0:
                self._x -= 1
        elif char == "\t":
            self._tab(1)
        elif char == "\x07":
            self._bell = True
        elif char == "\x0e":
            self._gl = 1
            self._update_charset()
        elif char == "\x0f":
            self._gl = 0
            self._update_charset()

    def _tab(self, count: int) -> None:
        x = min(self._x, self._columns - 1)
        for _ in range(count):
            x = next((stop for stop in self._tabstops if stop > x), self._columns - 1)
        self._x = x

    def _back_tab(self, count: int) -> None:
        x = min(self._x, self._columns - 1)
        for _ in range(count):
            x = next((stop for stop in reversed(self._tabstops) if stop < x), 0)
        self._x = x

    def _control_string(self, intro: str, body: str, terminator: str) -> None:
        """DCS, OSC, SOS, PM, APC: swallowed; OSC 0 and 2 set the title (xterm ctlseqs)."""
        kind = _C1_STRING_KIND.get(intro, intro[-1])
        if kind != "]" or terminator in ("\x18", "\x1a", ""):
            return
        command, _, value = body.partition(";")
        if command in ("0", "2"):
            title = "".join(char for char in value if char.isprintable())[:_MAX_TITLE]
            if title != self._title:
                self._title = title
                self._title_changed = True

    def _palette_sequence(self, sequence: str) -> None:
        """ESC ] R, ESC ] P nrrggbb: the Linux console's palette. Every row is dirty after
        a change, as after DECSCNM: the renderer draws them all anew."""
        for char in sequence[3:]:
            if char < " " or char == "\x7f":
                self._control(char)
        if apply_palette_sequence(self._palette, sequence):
            self._all_dirty = True

    def _escape(self, intermediates: str, final: str) -> None:
        if intermediates:
            if intermediates in ("(", ")") and final in "0AB":
                self._g[0 if intermediates == "(" else 1] = _DEC_GRAPHICS if final == "0" else "B"
                self._update_charset()
            elif intermediates == "#" and final == "8":
                self._alignment_display()
            return
        if final == "7":
            self._save_cursor()
        elif final == "8":
            self._restore_cursor()
        elif final == "D":
            self._linefeed_no_lnm()
        elif final == "E":
            self._x = 0
            self._linefeed_no_lnm()
        elif final == "M":
            if self._x >= self._columns:
                self._x = self._columns - 1
            self._reverse_index()
        elif final == "H":
            if self._x < self._columns and self._x not in self._tabstops:
                self._tabstops.append(self._x)
                self._tabstops.sort()
        elif final == "c":
            self._reset()
        elif final == "=":
            self._app_keypad = True
        elif final == ">":
            self._app_keypad = False

    def _linefeed_no_lnm(self) -> None:
        if self._x >= self._columns:
            self._x = self._columns - 1
        self._index()

    def _alignment_display(self) -> None:
        """DECALN (ESC # 8): fill the screen with E, reset the margins, home the cursor."""
        rows = self._rows
        filled = Cell("E", BLANK.fg, BLANK.bg, 0)
        for y in range(self._lines):
            row = _Row([filled] * self._columns)
            row.dirty = True
            rows[y] = row
        self._all_dirty = True
        self._top, self._bottom = 0, self._lines - 1
        self._x = self._y = 0

    # ----------------------------------------------------------------------- SGR

    def _sgr(self, params: str) -> None:
        """SGR (ECMA-48 §8.3.117): set the pen, through a cache of (params, pen) → pen."""
        pen = self._pen
        self._set_pen(pen.after.get(params) or self._transition(pen, params))

    def _transition(self, pen: _Pen, params: str) -> _Pen:
        following = self._pen_for(*self._sgr_compute(params, pen.fg, pen.bg, pen.flags))
        if len(pen.after) < _MAX_TRANSITIONS:
            pen.after[params] = following
        return following

    @classmethod
    def _sgr_compute(cls, params: str, fg: int, bg: int, flags: int) -> tuple[int, int, int]:
        """The pen after SGR `params`, with xterm's 256 and direct colours in both the
        semicolon form and the ITU T.416 colon form (``38:2::R:G:B``, ``4:3``)."""
        if not params or params == "0":
            return DEFAULT, DEFAULT, 0
        parts = params.split(";")
        count = len(parts)
        index = 0
        while index < count:
            part = parts[index]
            index += 1
            if ":" in part:
                fg, bg, flags = cls._sgr_colon(part.split(":"), fg, bg, flags)
                continue
            code = _number(part)
            if code == 0:
                fg = bg = DEFAULT
                flags = 0
            elif 30 <= code <= 37:
                fg = code - 30
            elif 40 <= code <= 47:
                bg = code - 40
            elif code in _FLAG_ON:
                flags |= _FLAG_ON[code]
            elif code in _FLAG_OFF:
                flags &= ~_FLAG_OFF[code]
            elif code == 39:
                fg = DEFAULT
            elif code == 49:
                bg = DEFAULT
            elif 90 <= code <= 97:
                fg = code - 82
            elif 100 <= code <= 107:
                bg = code - 92
            elif code == 38 or code == 48:
                colour, index = cls._extended_colour(parts, index)
                if colour is not None:
                    if code == 38:
                        fg = colour
                    else:
                        bg = colour
        return fg, bg, flags

    @staticmethod
    def _extended_colour(parts: list[str], index: int) -> tuple[int | None, int]:
        """``5;N`` or ``2;R;G;B`` after 38/48: the colour spec and the next index."""
        if index >= len(parts):
            return None, index
        kind = parts[index]
        if kind == "5" and index + 1 < len(parts):
            value = _number(parts[index + 1])
            return (value if value < 256 else None), index + 2
        if kind == "2" and index + 3 < len(parts):
            rgb = [_number(part) for part in parts[index + 1:index + 4]]
            if max(rgb) > 255:
                return None, index + 4
            return TRUECOLOR | (rgb[0] << 16) | (rgb[1] << 8) | rgb[2], index + 4
        return None, index + 1

    @staticmethod
    def _sgr_colon(sub: list[str], fg: int, bg: int, flags: int) -> tuple[int, int, int]:
        head = sub[0]
        if head == "4":
            # 4:0 is "no underline"; 4:1..4:5 are underline styles (kitty, VTE, xterm).
            if len(sub) > 1 and sub[1] in ("", "0"):
                return fg, bg, flags & ~UNDERLINE
            return fg, bg, flags | UNDERLINE
        if head not in ("38", "48") or len(sub) < 3:
            return fg, bg, flags
        colour: int | None = None
        try:
            if sub[1] == "5":
                value = _number(sub[2])
                colour = value if value < 256 else None
            elif sub[1] == "2":
                # 38:2:CS:R:G:B carries a colour-space id before R (T.416); 38:2:R:G:B not.
                values = sub[2:]
                if len(values) >= 4:
                    values = values[1:4]
                if len(values) == 3:
                    rgb = [_number(value) for value in values]
                    if max(rgb) <= 255:
                        colour = TRUECOLOR | (rgb[0] << 16) | (rgb[1] << 8) | rgb[2]
        except ValueError:
            colour = None
        if colour is None:
            return fg, bg, flags
        return (colour, bg, flags) if head == "38" else (fg, colour, flags)

    # ----------------------------------------------------------------------- CSI

    def _csi(self, params: str, intermediates: str, final: str) -> None:
        if params and not params.isprintable():
            for char in params:
                if char < " " or char == "\x7f":
                    self._control(char)
            params = "".join(char for char in params if " " <= char < "\x7f")
        private = ""
        if params and params[0] in "<=>?":
            private, params = params[0], params[1:]
        if intermediates:
            if intermediates == "!" and final == "p" and not private:
                self._soft_reset()
            elif intermediates == " " and final == "q" and not private:
                self._set_cursor_style(params)
            return
        if final == "m" and not private:
            if not params or set(params) <= set("0123456789;:"):
                self._sgr(params)
            return
        parts = params.split(";") if params else []
        if ":" in params:
            parts = [part.split(":", 1)[0] for part in parts]
        try:
            args = [_number(part) for part in parts]
        except ValueError:
            return
        if not private:
            handler = _CSI_HANDLERS.get(final)
            if handler is not None:
                handler(self, args)
        elif private == "?":
            if final == "h" or final == "l":
                for mode in args:
                    self._dec_mode(mode, final == "h")
            elif final == "J":
                self._erase_in_display(args)
            elif final == "K":
                self._erase_in_line(args)
        elif private == ">":
            # CSI > c is secondary DA; CSI > Ps ; Ps m is xterm's modifyOtherKeys and
            # everything else with ">" is an xterm resource setting: never SGR.
            if final == "c" and _arg(args, 0, 0) == 0:
                self._replies.append(DA2_REPLY)

    def _cursor_up(self, args: list[int]) -> None:
        count = _arg(args, 0, 1)
        top = self._top if self._y >= self._top else 0
        self._x = min(self._x, self._columns - 1)
        self._y = max(top, self._y - count)

    def _cursor_down(self, args: list[int]) -> None:
        count = _arg(args, 0, 1)
        bottom = self._bottom if self._y <= self._bottom else self._lines - 1
        self._x = min(self._x, self._columns - 1)
        self._y = min(bottom, self._y + count)

    def _cursor_forward(self, args: list[int]) -> None:
        self._x = min(self._columns - 1, min(self._x, self._columns - 1) + _arg(args, 0, 1))

    def _cursor_back(self, args: list[int]) -> None:
        self._x = max(0, min(self._x, self._columns - 1) - _arg(args, 0, 1))

    def _cursor_next_line(self, args: list[int]) -> None:
        self._cursor_down(args)
        self._x = 0

    def _cursor_previous_line(self, args: list[int]) -> None:
        self._cursor_up(args)
        self._x = 0

    def _cursor_to_column(self, args: list[int]) -> None:
        self._x = min(self._columns, _arg(args, 0, 1)) - 1

    def _cursor_position(self, args: list[int]) -> None:
        count = len(args)
        line = args[0] - 1 if count and args[0] else 0
        column = args[1] - 1 if count > 1 and args[1] else 0
        if self._origin:
            self._y = min(self._top + line, self._bottom)
        else:
            self._y = min(line, self._lines - 1)
        self._x = min(column, self._columns - 1)

    def _cursor_to_line(self, args: list[int]) -> None:
        line = _arg(args, 0, 1) - 1
        if self._origin:
            self._y = min(self._top + line, self._bottom)
        else:
            self._y = min(line, self._lines - 1)
        self._x = min(self._x, self._columns - 1)

    def _erase_cells(self, row: _Row, start: int, end: int) -> None:
        if start >= end:
            return
        self._fix_wide_edges(row, start, end)
        row[start:end] = [self._erase] * (end - start)
        row.dirty = True

    def _clear_wrap(self) -> int:
        """Cancel a pending wrap, as xterm's ResetWrap does for edits within the line
        (InsertChar, DeleteChar, ClearInLine in xterm's util.c); return the column."""
        if self._x >= self._columns:
            self._x = self._columns - 1
        return self._x

    def _erase_in_line(self, args: list[int]) -> None:
        how = _arg(args, 0, 0)
        row = self._rows[self._y]
        x = self._clear_wrap()
        if how == 0:
            self._erase_cells(row, x, self._columns)
        elif how == 1:
            self._erase_cells(row, 0, x + 1)
        elif how == 2:
            self._erase_cells(row, 0, self._columns)

    def _erase_in_display(self, args: list[int]) -> None:
        how = _arg(args, 0, 0)
        if how == 0:
            below = range(self._y + 1, self._lines)
        elif how == 1:
            below = range(self._y)
        elif how == 2:
            below = range(self._lines)
        else:
            return  # ED 3 erases saved lines (xterm); there is no scrollback here.
        full = [self._erase] * self._columns
        for y in below:
            row = _Row(full)
            row.dirty = True
            self._rows[y] = row
        if how != 2:
            self._erase_in_line(args)
        if how == 2:
            self._all_dirty = True

    def _insert_lines(self, args: list[int]) -> None:
        if self._top <= self._y <= self._bottom:
            self._scroll_down(self._y, self._bottom, _arg(args, 0, 1))
            self._x = 0

    def _delete_lines(self, args: list[int]) -> None:
        if self._top <= self._y <= self._bottom:
            self._scroll_up(self._y, self._bottom, _arg(args, 0, 1))
            self._x = 0

    def _scroll_up_csi(self, args: list[int]) -> None:
        self._scroll_up(self._top, self._bottom, _arg(args, 0, 1))

    def _scroll_down_csi(self, args: list[int]) -> None:
        # CSI Ps ; Ps ; Ps ; Ps ; Ps T with five parameters is mouse highlight tracking.
        if len(args) <= 1:
            self._scroll_down(self._top, self._bottom, _arg(args, 0, 1))

    def _insert_characters(self, args: list[int]) -> None:
        x = self._clear_wrap()
        count = min(_arg(args, 0, 1), self._columns - x)
        row = self._rows[self._y]
        self._fix_wide_edges(row, x, x)
        row[x:x] = [BLANK] * count
        del row[self._columns:]
        if row[-1].flags & WIDE:
            row[-1] = _unwide(row[-1])
        row.dirty = True

    def _delete_characters(self, args: list[int]) -> None:
        x = self._clear_wrap()
        count = min(_arg(args, 0, 1), self._columns - x)
        row = self._rows[self._y]
        self._fix_wide_edges(row, x, x + count)
        del row[x:x + count]
        row.extend([BLANK] * count)
        row.dirty = True

    def _erase_characters(self, args: list[int]) -> None:
        x = self._clear_wrap()
        self._erase_cells(self._rows[self._y], x, min(self._columns, x + _arg(args, 0, 1)))

    def _repeat(self, args: list[int]) -> None:
        """REP (ECMA-48 §8.3.103): repeat the last graphic character."""
        self._draw(self._last_char * min(_arg(args, 0, 1), self._columns * self._lines))

    def _device_attributes(self, args: list[int]) -> None:
        if _arg(args, 0, 0) == 0:
            self._replies.append(DA1_REPLY)

    def _device_status(self, args: list[int]) -> None:
        what = _arg(args, 0, 0)
        if what == 5:
            self._replies.append(DSR_OK_REPLY)
        elif what == 6:
            line = self._y - (self._top if self._origin else 0) + 1
            column = min(self._x, self._columns - 1) + 1
            self._replies.append(b"\x1b[%d;%dR" % (line, column))

    def _tab_clear(self, args: list[int]) -> None:
        how = _arg(args, 0, 0)
        if how == 0:
            if self._x in self._tabstops:
                self._tabstops.remove(self._x)
        elif how == 3:
            self._tabstops = []

    def _set_margins(self, args: list[int]) -> None:
        """DECSTBM; a valid region (top < bottom) also homes the cursor (VT510 manual)."""
        top = _arg(args, 0, 1) - 1
        bottom = min(_arg(args, 1, self._lines), self._lines) - 1
        if top < bottom:
            self._top, self._bottom = top, bottom
            self._x = 0
            self._y = top if self._origin else 0

    def _set_ansi_mode(self, args: list[int]) -> None:
        self._ansi_modes(args, True)

    def _reset_ansi_mode(self, args: list[int]) -> None:
        self._ansi_modes(args, False)

    def _ansi_modes(self, args: list[int], on: bool) -> None:
        for mode in args:
            if mode == 4:
                self._insert = on
            elif mode == 20:
                self._newline = on

    def _save_cursor_csi(self, args: list[int]) -> None:
        if not args:
            self._save_cursor()

    def _restore_cursor_csi(self, args: list[int]) -> None:
        if not args:
            self._restore_cursor()

    def _back_tab_csi(self, args: list[int]) -> None:
        self._back_tab(_arg(args, 0, 1))

    def _tab_csi(self, args: list[int]) -> None:
        self._tab(_arg(args, 0, 1))

    # ------------------------------------------------------------- modes, cursor

    def _dec_mode(self, mode: int, on: bool) -> None:
        """DECSET / DECRST (xterm ctlseqs "CSI ? Pm h")."""
        if mode == 1:
            self._app_cursor = on
        elif mode == 5:
            if self._reverse_video != on:
                self._all_dirty = True
            self._reverse_video = on
        elif mode == 6:
            self._origin = on
            self._x = 0
            self._y = self._top if on else 0
        elif mode == 7:
            self._autowrap = on
        elif mode == 25:
            self._cursor_visible = on
        elif mode == 2004:
            self._bracketed_paste = on
        elif mode in (9, 1000, 1002, 1003):
            if on:
                self._mouse = mode
            elif self._mouse == mode:
                self._mouse = 0
        elif mode == 1006:
            self._mouse_sgr = on
        elif mode == 47:
            self._switch_screen(on)
        elif mode == 1047:
            if not on and self._alt_active:
                self._clear_rows(self._alt)
            self._switch_screen(on)
        elif mode == 1048:
            if on:
                self._save_cursor()
            else:
                self._restore_cursor()
        elif mode == 1049:
            # Save the cursor, switch, clear the alternate screen; back: restore it,
            # even when already on the main screen (xterm's CursorRestore, as tmux).
            if on:
                if not self._alt_active:
                    self._save_cursor()
                    self._switch_screen(True)
                    self._clear_rows(self._alt)
            else:
                self._switch_screen(False)
                self._restore_cursor()

    def _set_cursor_style(self, params: str) -> None:
        """DECSCUSR (xterm ctlseqs "CSI Ps SP q"): 0 and 1 a blinking block, 2 a steady
        block, 3 and 4 an underline, 5 and 6 a bar (odd blinking); xterm ignores others."""
        try:
            style = _number(params) if params else 0
        except ValueError:
            return
        if style <= 6:
            self._cursor_style = style

    def _switch_screen(self, alternate: bool) -> None:
        if alternate == self._alt_active:
            return
        self._alt_active = alternate
        self._rows = self._alt if alternate else self._main
        self._all_dirty = True

    def _clear_rows(self, rows: list[_Row]) -> None:
        full = [self._erase] * self._columns
        for y in range(len(rows)):
            row = _Row(full)
            row.dirty = True
            rows[y] = row
        if rows is self._rows:
            self._all_dirty = True

    def _save_cursor(self) -> None:
        """DECSC: one slot per screen buffer, as in xterm."""
        self._saved[self._alt_active] = (
            self._x, self._y, self._fg, self._bg, self._flags,
            self._g[0], self._g[1], self._gl, self._origin, self._autowrap,
        )

    def _restore_cursor(self) -> None:
        """DECRC; with nothing saved: home, default pen, origin mode off (xterm)."""
        saved = self._saved[self._alt_active]
        if saved is None:
            self._x = self._y = 0
            self._fg = self._bg = DEFAULT
            self._flags = 0
            self._origin = False
        else:
            x, y, self._fg, self._bg, self._flags, g0, g1, self._gl, self._origin, self._autowrap = saved
            self._g = [g0, g1]
            self._x = min(x, self._columns - 1)
            self._y = min(y, self._lines - 1)
        self._update_charset()
        self._apply_pen()

    def _soft_reset(self) -> None:
        """DECSTR (CSI ! p): modes, margins, pen and charsets to defaults; screen kept."""
        self._insert = False
        self._origin = False
        self._app_cursor = False
        self._app_keypad = False
        self._cursor_visible = True
        self._top, self._bottom = 0, self._lines - 1
        self._fg = self._bg = DEFAULT
        self._flags = 0
        self._g = ["B", "B"]
        self._gl = 0
        self._saved[self._alt_active] = None
        self._update_charset()
        self._apply_pen()

    # ------------------------------------------------------------------ skipping

    def _skip_ahead(self, text: str) -> int:
        """Skip the lines that can only scroll off the screen; return where exact
        processing must resume.

        In a stretch of text, CR, LF, BS, HT and SGR (no other control), text and
        cursor motion only change cells; what survives the stretch is the pen, and, if
        it ends with CR LF, the cursor at the left. When the last `lines` line feeds of
        the stretch are drawn exactly from the bottom row, they scroll every earlier row
        off a full-screen region, so the part before them is reduced to its SGRs.
        """
        lines = self._lines
        head = text.find("\n") + 1
        if head == 0 or text.count("\n", head) <= 2 * lines:
            return 0
        stop = self._run(text, 0, head)
        if stop != head or self._top != 0 or self._bottom != lines - 1:
            return stop
        end = _simple_end(text, head, len(text), _NOT_SKIPPABLE)
        last_newline = text.rfind("\n", head, end)
        newlines = text.count("\n", head, last_newline + 1)
        # The skipped part holds newlines - lines line feeds: enough to reach the bottom.
        if newlines <= lines or self._y + newlines - lines < self._bottom:
            return head
        resume = last_newline
        for _ in range(lines):
            resume = text.rfind("\n", head, resume)
        if text[resume - 1] != "\r":
            return head
        resume += 1
        drawn = text[resume:end]
        if "\x1b" in drawn:
            drawn = _SGR_ONLY.sub("", drawn)
        if not drawn.strip("\r\n\b\t"):
            # REP repeats the last character drawn, which would then be in the skipped part.
            return head
        # Only the SGRs after the last full reset decide the pen.
        reset = max(text.rfind("\x1b[0m", head, resume), text.rfind("\x1b[m", head, resume))
        for sgr in _SGR_ONLY.finditer(text, max(head, reset), resume):
            self._sgr(sgr.group(1))
        self._rows[:] = [self._new_row(self._columns) for _ in range(lines)]
        self._all_dirty = True
        self._events.clear()
        self._x = 0
        self._y = self._bottom
        return resume


def pending_part(rest: str) -> str:
    """What to keep of an unfinished sequence for the next feed, within a bound."""
    if len(rest) <= _MAX_PENDING:
        return rest
    if rest[0] in _STRING_INTRO or (rest[0] == "\x1b" and rest[1] in "P]X^_"):
        # A control string longer than any we act on: keep its start (an OSC title
        # is cut there) and a final ESC that may begin its ST.
        return rest[:_MAX_PENDING] + ("\x1b" if rest[-1] == "\x1b" else "")
    return ""


def _simple_end(text: str, position: int, end: int, others: re.Pattern[str] = _NOT_SIMPLE) -> int:
    """Where the stretch that starts at `position` ends: at the first escape that is
    not SGR or the first character `others` finds.

    The scan goes through windows that double in size, and looks for the next escape
    that is not SGR before looking for other characters, so that finding a short
    stretch (cursor-addressed output) costs little and a long one stays linear.
    """
    start = position
    window = 256
    while True:
        stop = min(end, start + window)
        escape = _NOT_SGR.search(text, start, stop)
        bound = stop if escape is None else escape.start()
        other = others.search(text, start, bound)
        if other is not None:
            return other.start()
        if escape is not None:
            # The window's end may cut an SGR, which the look-ahead could not see.
            sgr = _SGR_ONLY.match(text, bound, end)
            if sgr is None:
                return bound
            start = sgr.end()
            continue
        if stop == end:
            return end
        start = stop
        window *= 2


def _number(digits: str) -> int:
    """A decimal parameter saturated at _MAX_PARAM (ValueError if not decimal): int()
    refuses more than sys.get_int_max_str_digits() digits, 4300 by default."""
    digits = digits.lstrip("0")
    if len(digits) > 5 and digits.isdigit():
        return _MAX_PARAM
    return min(int(digits), _MAX_PARAM) if digits else 0


def _arg(args: list[int], index: int, default: int) -> int:
    """Parameter `index`, with 0 and absence meaning `default` (ECMA-48 §5.4.2)."""
    if index < len(args) and args[index]:
        return args[index]
    return default


_CSI_HANDLERS: Final[dict[str, Callable[[Terminal, list[int]], None]]] = {
    "@": Terminal._insert_characters,
    "A": Terminal._cursor_up,
    "B": Terminal._cursor_down,
    "C": Terminal._cursor_forward,
    "D": Terminal._cursor_back,
    "E": Terminal._cursor_next_line,
    "F": Terminal._cursor_previous_line,
    "G": Terminal._cursor_to_column,
    "H": Terminal._cursor_position,
    "I": Terminal._tab_csi,
    "J": Terminal._erase_in_display,
    "K": Terminal._erase_in_line,
    "L": Terminal._insert_lines,
    "M": Terminal._delete_lines,
    "P": Terminal._delete_characters,
    "S": Terminal._scroll_up_csi,
    "T": Terminal._scroll_down_csi,
    "X": Terminal._erase_characters,
    "Z": Terminal._back_tab_csi,
    "`": Terminal._cursor_to_column,
    "a": Terminal._cursor_forward,
    "b": Terminal._repeat,
    "c": Terminal._device_attributes,
    "d": Terminal._cursor_to_line,
    "e": Terminal._cursor_down,
    "f": Terminal._cursor_position,
    "g": Terminal._tab_clear,
    "h": Terminal._set_ansi_mode,
    "l": Terminal._reset_ansi_mode,
    "n": Terminal._device_status,
    "r": Terminal._set_margins,
    "s": Terminal._save_cursor_csi,
    "u": Terminal._restore_cursor_csi,
}

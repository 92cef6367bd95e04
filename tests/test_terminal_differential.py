"""Differential tests: the emulator against stock pyte 0.8.2 where pyte is right.

Byte streams are generated from the subset pyte handles nearly right (printable text,
CR, LF, BS, TAB, CUP and the other cursor moves, EL, ED, ECH, ICH, DCH, IL, DL, IND, RI,
SGR in the semicolon form, DECSTBM, IRM, LNM, DECAWM) and compared cell by cell.
``ReferenceScreen`` corrects the few places where pyte departs from xterm inside that
subset; each correction names the xterm behaviour it restores.
"""

from __future__ import annotations

from typing import Any

import pyte
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vzfs.terminal.cell import BLINK, BOLD, DEFAULT_BG, DEFAULT_FG, ITALIC, REVERSE, STRIKETHROUGH, UNDERLINE, Cell
from vzfs.terminal.emulator import Terminal
from vzfs.terminal.palette import PALETTE


class ReferenceScreen(pyte.Screen):
    """pyte's Screen with its departures from xterm inside the tested subset corrected."""

    def _clear_wrap(self) -> None:
        # xterm: cursor movements clear a pending wrap (cursor.c, ResetWrap), leaving
        # the cursor in the last column; pyte keeps x == columns.
        if self.cursor.x == self.columns:
            self.cursor.x = self.columns - 1

    def _margins(self) -> tuple[int, int]:
        return self.margins or pyte.screens.Margins(0, self.lines - 1)

    def index(self) -> None:
        # xterm: below the scroll region IND moves down to the last line; pyte jumps
        # back to the bottom margin.
        self._clear_wrap()
        if self.cursor.y > self._margins()[1]:
            self.cursor.y = min(self.cursor.y + 1, self.lines - 1)
            return
        super().index()

    def reverse_index(self) -> None:
        self._clear_wrap()
        super().reverse_index()

    def cursor_up(self, count: Any = None) -> None:
        # xterm: the top margin stops CUU only for a cursor inside or below the region.
        self._clear_wrap()
        top = self._margins()[0] if self.cursor.y >= self._margins()[0] else 0
        self.cursor.y = max(self.cursor.y - (count or 1), top)

    def cursor_down(self, count: Any = None) -> None:
        self._clear_wrap()
        bottom = self._margins()[1] if self.cursor.y <= self._margins()[1] else self.lines - 1
        self.cursor.y = min(self.cursor.y + (count or 1), bottom)

    def cursor_to_line(self, line: Any = None) -> None:
        self._clear_wrap()
        super().cursor_to_line(line)

    def insert_characters(self, count: Any = None) -> None:
        self._clear_wrap()
        super().insert_characters(count)

    def delete_characters(self, count: Any = None) -> None:
        self._clear_wrap()
        super().delete_characters(count)

    def erase_characters(self, count: Any = None) -> None:
        self._clear_wrap()
        super().erase_characters(count)

    def delete_lines(self, count: Any = None) -> None:
        # pyte leaves a row in place when the row that should replace it was never
        # stored; every row of the region below the cursor moves up.
        count = count or 1
        top, bottom = self._margins()
        if top <= self.cursor.y <= bottom:
            rows = [self.buffer.pop(y, None) for y in range(self.cursor.y, bottom + 1)]
            rows = rows[count:] + [None] * min(count, len(rows))
            for y, row in zip(range(self.cursor.y, bottom + 1), rows):
                if row is not None:
                    self.buffer[y] = row
            self.carriage_return()

    def set_margins(self, top: Any = None, bottom: Any = None) -> None:
        # xterm: DECSTBM without parameters also homes the cursor (VT510 manual).
        if (top is None or top == 0) and bottom is None:
            self.margins = None
            self.cursor_position()
            return
        super().set_margins(top, bottom)

    def erase_in_line(self, how: int = 0, private: bool = False) -> None:
        # xterm: with a wrap pending the cursor is in the last column, which EL 0 erases;
        # erasing cancels the wrap (ClearInLine2 calls ResetWrap).
        self._clear_wrap()
        super().erase_in_line(how, private)

    def erase_in_display(self, how: int = 0, *args: Any, **kwargs: Any) -> None:
        # pyte erases only the cells it has stored; every cell of the rows is erased.
        if how == 0:
            rows = range(self.cursor.y + 1, self.lines)
        elif how == 1:
            rows = range(self.cursor.y)
        else:
            rows = range(self.lines)
        for y in rows:
            line = self.buffer[y]
            for x in range(self.columns):
                line[x] = self.cursor.attrs
        if how in (0, 1):
            self.erase_in_line(how)


_NAMES = {"black": 0, "red": 1, "green": 2, "brown": 3, "blue": 4, "magenta": 5, "cyan": 6, "white": 7}


def _colour(value: str, bold: bool, foreground: bool) -> int:
    if value == "default":
        # The Linux console's default foreground is colour 7, which bold brightens
        # (vt.c build_attr); pyte keeps "default".
        if foreground:
            return PALETTE[15] if bold else DEFAULT_FG
        return DEFAULT_BG
    if value == "bfightmagenta":  # pyte 0.8.2's spelling for SGR 105
        return PALETTE[13]
    if value.startswith("bright"):
        return PALETTE[_NAMES[value[6:]] + 8]
    if value in _NAMES:
        return PALETTE[_NAMES[value] + (8 if bold and foreground else 0)]
    return int(value, 16)


def pyte_cell(char: Any) -> Cell:
    flags = (
        (BOLD if char.bold else 0) | (ITALIC if char.italics else 0)
        | (UNDERLINE if char.underscore else 0) | (REVERSE if char.reverse else 0)
        | (STRIKETHROUGH if char.strikethrough else 0) | (BLINK if char.blink else 0)
    )
    return Cell(char.data, _colour(char.fg, char.bold, True), _colour(char.bg, char.bold, False), flags)


def assert_same(terminal: Terminal, screen: pyte.Screen) -> None:
    for y in range(screen.lines):
        expected = [pyte_cell(screen.buffer[y][x]) for x in range(screen.columns)]
        assert list(terminal.cells(y)) == expected, f"row {y} differs"
    assert terminal.snapshot()["cursor"] == [screen.cursor.x, screen.cursor.y]
    assert terminal.cursor[:2] == (min(screen.cursor.x, screen.columns - 1), screen.cursor.y)


def reference(columns: int, lines: int, data: bytes) -> pyte.Screen:
    screen = ReferenceScreen(columns, lines)
    pyte.ByteStream(screen).feed(data)
    return screen


SIZES = st.sampled_from([(80, 25), (10, 4), (20, 6), (7, 3)])
TEXT = st.text(alphabet=st.sampled_from(
    [chr(c) for c in range(0x20, 0x7F)] + list("éßñÅøµ¼")), min_size=1, max_size=90)
# Each group is drawn as often as the others: sampled_from alone favours its first items.
SGR_PARAM = st.one_of(
    st.sampled_from([0, 1, 3, 4, 5, 7, 9]).map(str),
    st.sampled_from([1, 22, 23, 24, 25, 27, 29]).map(str),
    st.sampled_from([*range(30, 38), 39]).map(str),
    st.sampled_from([*range(40, 48), 49]).map(str),
    st.sampled_from([*range(90, 98), *range(100, 108)]).map(str),
    # pyte gives 38;5;N as the hex of xterm's 256-colour table, whose first 16 entries
    # are xterm's colours, not the Linux console's (and bold cannot brighten them
    # there): keep N >= 16; the golden tests have the basic colours.
    st.integers(16, 255).map(lambda n: f"38;5;{n}"),
    st.integers(16, 255).map(lambda n: f"48;5;{n}"),
    st.tuples(st.sampled_from(["38", "48"]), st.integers(0, 255), st.integers(0, 255),
              st.integers(0, 255)).map(lambda c: f"{c[0]};2;{c[1]};{c[2]};{c[3]}"),
)


def ops(columns: int, lines: int) -> st.SearchStrategy[bytes]:
    op = st.one_of(
        TEXT.map(lambda s: s.encode()),
        TEXT.map(lambda s: s.encode()),
        st.sampled_from([b"\r", b"\n", b"\r\n", b"\r\n", b"\x08", b"\t"]),
        st.tuples(st.integers(0, lines + 2), st.integers(0, columns + 5)).map(
            lambda p: b"\x1b[%d;%dH" % p),
        st.just(b"\x1b[H"),
        st.sampled_from([b"\x1b[K", b"\x1b[0K", b"\x1b[1K", b"\x1b[2K",
                         b"\x1b[J", b"\x1b[0J", b"\x1b[1J", b"\x1b[2J"]),
        st.lists(SGR_PARAM, max_size=4).map(lambda p: b"\x1b[" + ";".join(p).encode() + b"m"),
        st.tuples(st.integers(1, lines), st.integers(1, lines)).filter(lambda m: m[0] < m[1]).map(
            lambda m: b"\x1b[%d;%dr" % m),
        st.just(b"\x1b[r"),
        st.tuples(st.sampled_from("ABCDGd@PXLM"), st.integers(0, max(columns, lines) + 2)).map(
            lambda c: b"\x1b[%d%s" % (c[1], c[0].encode())),
        st.sampled_from([b"\x1bD", b"\x1bM", b"\x1b[4h", b"\x1b[4l", b"\x1b[20h", b"\x1b[20l",
                         b"\x1b[?7l", b"\x1b[?7h"]),
    )
    return st.lists(op, max_size=60).map(b"".join)


@st.composite
def case(draw: Any) -> tuple[int, int, bytes, list[int]]:
    columns, lines = draw(SIZES)
    data = draw(ops(columns, lines))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
    return columns, lines, data, cuts


def feed_split(terminal: Terminal, data: bytes, cuts: list[int]) -> None:
    start = 0
    for cut in cuts + [len(data)]:
        terminal.feed(data[start:cut])
        start = cut


@pytest.mark.slow
@settings(max_examples=400, deadline=None)
@given(case())
def test_matches_pyte(example: tuple[int, int, bytes, list[int]]) -> None:
    columns, lines, data, cuts = example
    terminal = Terminal(columns, lines)
    feed_split(terminal, data, cuts)
    assert_same(terminal, reference(columns, lines, data))


@st.composite
def long_case(draw: Any) -> tuple[int, int, bytes, bytes, list[int]]:
    """Many simple lines in one feed, after arbitrary state: exercises the skip-ahead."""
    columns, lines = draw(SIZES)
    prefix = draw(ops(columns, lines))
    line = st.lists(st.one_of(
        TEXT.map(lambda s: s.encode()),
        st.lists(SGR_PARAM, max_size=3).map(lambda p: b"\x1b[" + ";".join(p).encode() + b"m"),
    ), max_size=5).map(lambda parts: b"".join(parts) + b"\r\n")
    body = b"".join(draw(st.lists(line, min_size=1, max_size=12)))
    repeat = 3000 // max(1, len(body)) + 2 * lines + 1
    tail = draw(ops(columns, lines))
    cuts = sorted(draw(st.lists(st.integers(0, len(prefix)), max_size=2)))
    return columns, lines, prefix, body * repeat + tail, cuts


@pytest.mark.slow
@settings(max_examples=150, deadline=None)
@given(long_case())
def test_long_feeds_match_pyte(example: tuple[int, int, bytes, bytes, list[int]]) -> None:
    columns, lines, prefix, bulk, cuts = example
    terminal = Terminal(columns, lines)
    feed_split(terminal, prefix, cuts)
    terminal.feed(bulk)
    assert_same(terminal, reference(columns, lines, prefix + bulk))


def test_seq_output_matches_pyte() -> None:
    data = b"".join(b"%d\r\n" % n for n in range(1, 3000))
    terminal = Terminal(80, 25)
    for start in range(0, len(data), 4096):
        terminal.feed(data[start:start + 4096])
    assert_same(terminal, reference(80, 25, data))

"""Golden tests for each pyte gap the emulator layer closes, and for its public interface,
run on both backends (the fast engine and the pyte-based one)."""

from __future__ import annotations

import pytest

from vzfs.terminal.cell import (
    BLANK, BOLD, CONCEAL, DEFAULT_BG, DEFAULT_FG, DIM, UNDERLINE, WIDE, WIDE_CONT, Cell,
)
from vzfs.terminal import BACKENDS, AnyTerminal, emulator, make_terminal, pyte_backend
from vzfs.terminal.parser import DA1_REPLY, DA2_REPLY
from vzfs.terminal.palette import PALETTE


@pytest.fixture(params=sorted(BACKENDS))
def Terminal(request: pytest.FixtureRequest) -> type[AnyTerminal]:
    """Each test runs once per backend; the name keeps the tests reading as before."""
    return BACKENDS[request.param]


def lines_of(terminal: AnyTerminal) -> list[str]:
    return terminal.text().split("\n")[:-1]


def test_text_is_one_trimmed_line_per_row(Terminal: type[AnyTerminal]) -> None:
    terminal = Terminal(10, 3)
    terminal.feed(b"ab  \r\n  c")
    assert terminal.text() == "ab\n  c\n\n"


def test_alternate_screen_1049_restores_main_screen_and_cursor(Terminal: type[AnyTerminal]) -> None:
    terminal = Terminal(20, 5)
    terminal.feed(b"main screen\r\nsecond\x1b[2;4H")
    before = terminal.text()
    update = terminal.feed(b"\x1b[?1049h")
    assert terminal.modes.alt_screen
    assert terminal.text() == "\n" * 5
    assert update.dirty == frozenset(range(5))
    terminal.feed(b"\x1b[1;1Hfull screen app\x1b[5;5H")
    assert lines_of(terminal)[0] == "full screen app"
    update = terminal.feed(b"\x1b[?1049l")
    assert not terminal.modes.alt_screen
    assert terminal.text() == before
    assert terminal.cursor[:2] == (3, 1)
    assert update.dirty == frozenset(range(5))


def test_leaving_1049_on_the_main_screen_still_restores_the_cursor(Terminal: type[AnyTerminal]) -> None:
    """printf 'A\\e[?1049hB\\e[?1049lC\\e[?1049lD\\n' shows AD in xterm and tmux."""
    terminal = Terminal(10, 3)
    terminal.feed(b"A\x1b[?1049hB\x1b[?1049lC\x1b[?1049lD\r\n")
    assert lines_of(terminal) == ["AD", "", ""]
    assert not terminal.modes.alt_screen


def test_alternate_screen_1047_clears_on_leaving_and_47_keeps(Terminal: type[AnyTerminal]) -> None:
    terminal = Terminal(10, 3)
    terminal.feed(b"main")
    terminal.feed(b"\x1b[?1047halt")
    assert lines_of(terminal)[0] == "    alt"
    terminal.feed(b"\x1b[?1047l")
    assert lines_of(terminal)[0] == "main"
    terminal.feed(b"\x1b[?47h")
    assert lines_of(terminal)[0] == ""  # 1047 cleared the alternate screen on leaving
    terminal.feed(b"\x1b[Hkept\x1b[?47l\x1b[?47h")
    assert lines_of(terminal)[0] == "kept"


def test_modify_other_keys_is_not_sgr(Terminal: type[AnyTerminal]) -> None:
    terminal = Terminal(10, 2)
    update = terminal.feed(b"\x1b[>4;1mX\x1b[>4m")
    assert terminal.cells(0)[0] == Cell("X", DEFAULT_FG, DEFAULT_BG, 0)
    assert terminal.text() == "X\n\n"
    assert update.replies == b""


@pytest.mark.parametrize(("sequence", "fg", "bg", "flags"), [
    (b"\x1b[38:2::255:0:0m", 0xFF0000, DEFAULT_BG, 0),
    (b"\x1b[38:2:0:255:0m", 0x00FF00, DEFAULT_BG, 0),
    (b"\x1b[48:2:1:0:0:255m", DEFAULT_FG, 0x0000FF, 0),
    (b"\x1b[38:5:196m", PALETTE[196], DEFAULT_BG, 0),
    (b"\x1b[1;48:5:21m", PALETTE[15], PALETTE[21], BOLD),
    (b"\x1b[4:3m", DEFAULT_FG, DEFAULT_BG, UNDERLINE),
    (b"\x1b[4m\x1b[4:0m", DEFAULT_FG, DEFAULT_BG, 0),
    (b"\x1b[58:2::1:2:3;4m", DEFAULT_FG, DEFAULT_BG, UNDERLINE),
])
def test_colon_sgr(Terminal: type[AnyTerminal], sequence: bytes, fg: int, bg: int, flags: int) -> None:
    terminal = Terminal(10, 2)
    terminal.feed(sequence + b"X")
    assert terminal.cells(0)[0] == Cell("X", fg, bg, flags)
    assert terminal.text() == "X\n\n"


def test_semicolon_colours_and_bold_brightening(Terminal: type[AnyTerminal]) -> None:
    terminal = Terminal(10, 2)
    terminal.feed(b"\x1b[31ma\x1b[1mb\x1b[38;5;1mc\x1b[38;2;1;2;3md\x1b[0;94;101me")
    cells = terminal.cells(0)
    assert [cell.fg for cell in cells[:5]] == [0xAA0000, 0xFF5555, 0xFF5555, 0x010203, 0x5555FF]
    assert cells[4].bg == 0xFF5555 and cells[4].flags == 0


# linux/drivers/tty/vt/vt.c default_red, default_grn, default_blu, in SGR order.
LINUX_COLOURS = [0x000000, 0xAA0000, 0x00AA00, 0xAA5500, 0x0000AA, 0xAA00AA, 0x00AAAA, 0xAAAAAA,
                 0x555555, 0xFF5555, 0x55FF55, 0xFFFF55, 0x5555FF, 0xFF55FF, 0x55FFFF, 0xFFFFFF]


def test_the_sixteen_colours_are_the_linux_consoles(Terminal: type[AnyTerminal]) -> None:
    terminal = Terminal(20, 2)
    terminal.feed(b"".join(b"\x1b[%dmx" % code for code in [*range(30, 38), *range(90, 98)]))
    assert [cell.fg for cell in terminal.cells(0)[:16]] == LINUX_COLOURS


def test_colour_7_is_the_default_foreground(Terminal: type[AnyTerminal]) -> None:
    """TERM=linux: default text is colour 7 on colour 0 (vt.c vc_def_color), so SGR 37
    changes nothing and bold brightens both to colour 15."""
    terminal = Terminal(10, 2)
    terminal.feed(b"a\x1b[37mb\x1b[0;1mc\x1b[37md\x1b[0;30;47me")
    a, b, c, d, e = terminal.cells(0)[:5]
    assert a.fg == b.fg == DEFAULT_FG == LINUX_COLOURS[7]
    assert c.fg == d.fg == LINUX_COLOURS[15]
    assert (e.fg, e.bg) == (DEFAULT_BG, DEFAULT_FG)


def test_faint_and_concealed_are_attributes(Terminal: type[AnyTerminal]) -> None:
    """SGR 2 and 8 mark cells DIM and CONCEAL (the renderer draws them); 22 ends bold and
    faint alike (ECMA-48 "normal intensity"), 28 ends conceal. Concealed text stays in
    the screen's text, as xterm's selection and tmux's capture-pane keep it."""
    terminal = Terminal(10, 2)
    terminal.feed(b"\x1b[2ma\x1b[1mb\x1b[22mc\x1b[8md\x1b[28me\x1b[2;8mf\x1b[0mg")
    assert [cell.flags for cell in terminal.cells(0)[:7]] == [
        DIM, DIM | BOLD, 0, CONCEAL, 0, DIM | CONCEAL, 0]
    assert terminal.cells(0)[0].fg == DEFAULT_FG
    assert lines_of(terminal)[0] == "abcdefg"


@pytest.mark.parametrize("string", [
    b"\x1bPq#0;2;0;0;0#0~~@@vv\x1b\\",   # DCS (sixel)
    b"\x1bP$qm\x1b\\",                   # DECRQSS
    b"\x1b_Gf=24;AAAA\x1b\\",            # APC (kitty graphics)
    b"\x1b^private\x1b\\",               # PM
    b"\x1bXstring\x1b\\",                # SOS
    b"\x1b]8;;http://x/\x1b\\",          # OSC 8 hyperlink
    b"\x1b]52;c;aGVsbG8=\x07",           # OSC 52
    b"\xc2\x90q#0\xc2\x9c",              # DCS and ST as UTF-8 C1 controls
])
def test_control_strings_are_swallowed(Terminal: type[AnyTerminal], string: bytes) -> None:
    data = b"a" + string + b"b"
    whole = Terminal(20, 2)
    whole.feed(data)
    assert whole.text() == "ab\n\n"
    for cut in range(len(data) + 1):
        split = Terminal(20, 2)
        split.feed(data[:cut])
        split.feed(data[cut:])
        assert split.text() == "ab\n\n", cut


def test_control_string_aborted_by_escape_and_can(Terminal: type[AnyTerminal]) -> None:
    terminal = Terminal(20, 2)
    terminal.feed(b"a\x1bPjunk\x1b[1mb\x1bPmore\x18c")
    assert terminal.text() == "abc\n\n"
    assert terminal.cells(0)[1].flags == BOLD


def test_linux_palette_reset_ends_without_a_terminator(Terminal: type[AnyTerminal]) -> None:
    """TERM=linux: reset, tput reset and setterm --reset send ESC c ESC ] R, and
    printf 'A\\e]RB\\nC\\n'; echo E shows AB / C / E on a Linux console (ONLCR adds CR)."""
    terminal = Terminal(20, 4)
    terminal.feed(b"A\x1b]RB\r\nC\r\n")
    terminal.feed(b"E\r\n")
    assert lines_of(terminal) == ["AB", "C", "E", ""]
    terminal.feed(b"\x1bc\x1b]R")
    terminal.feed(b"$ ls\r\nfile\r\n")
    assert lines_of(terminal) == ["$ ls", "file", "", ""]


@pytest.mark.parametrize(("data", "text", "entry"), [
    (b"\x1b]P1ff0000x", "x", 0xFF0000),
    (b"\x1b]P1FF00008x", "8x", 0xFF0000),       # exactly seven digits: the eighth is text
    (b"\x1b]Pf123456x", "x", None),             # sets colour 15, not 1
    (b"\x1b]P1ff00zx", "x", None),              # a non-digit aborts and is consumed
    (b"\x1b]P1ff000zx", "x", None),             # even after six digits
    (b"\x1b]P1ff\x18x", "x", None),             # CAN aborts
    (b"\x1b]P1ff\x1b[1mx", "x", None),          # ESC aborts and starts a sequence
    (b"\x1b]P1f\rf\x0700\b00x", "x", 0xFF0000),  # C0 controls inside are executed
    (b"\x1b]Rx", "x", None),
])
def test_linux_palette_sequences(Terminal: type[AnyTerminal], data: bytes, text: str,
                                 entry: int | None) -> None:
    """ESC ] P n rr gg bb sets colour n of the palette (vt.c ESpalette)."""
    whole = Terminal(20, 2)
    update = whole.feed(b"ab" + data)
    assert lines_of(whole)[0] == ("ab" + text if b"\r" not in data else text + "b")
    assert whole.palette[1] == (LINUX_COLOURS[1] if entry is None else entry)
    assert update.bell == (b"\x07" in data)
    if data.startswith(b"\x1b]Pf"):
        assert whole.palette[15] == 0x123456
    for cut in range(len(data) + 1):
        split = Terminal(20, 2)
        split.feed(b"ab" + data[:cut])
        split.feed(data[cut:])
        assert split.text() == whole.text() and split.palette == whole.palette, cut


def test_the_palette_outlives_ris_until_reset(Terminal: type[AnyTerminal]) -> None:
    """vt.c reset_terminal keeps the palette; ESC ] R restores the Linux colours. A
    change makes every row dirty (the renderer redraws them all)."""
    terminal = Terminal(10, 3)
    assert terminal.palette == tuple(LINUX_COLOURS)
    update = terminal.feed(b"\x1b]P0102030")
    assert update.dirty == frozenset(range(3))
    assert terminal.feed(b"\x1b]P0102030").dirty == frozenset()
    terminal.feed(b"\x1bc")
    assert terminal.palette[0] == 0x102030
    snapshot = terminal.snapshot()
    assert BACKENDS["fast"].restore(snapshot).palette == BACKENDS["pyte"].restore(snapshot).palette
    assert BACKENDS["pyte"].restore(snapshot).palette[0] == 0x102030
    update = terminal.feed(b"\x1b]R")
    assert terminal.palette == tuple(LINUX_COLOURS) and update.dirty == frozenset(range(3))
    # Cells keep resolved default-palette colours: the renderer applies the palette.
    terminal.feed(b"\x1b]P1123456\x1b[31mx")
    assert terminal.cells(0)[0].fg == LINUX_COLOURS[1]


def test_unterminated_dcs_is_bounded(Terminal: type[AnyTerminal]) -> None:
    terminal = Terminal(20, 2)
    terminal.feed(b"a\x1bP")
    for _ in range(100):
        terminal.feed(b"q" * 10000)
    assert len(terminal.snapshot()["pending"]) <= 4097
    terminal.feed(b"\x1b\\b")
    assert terminal.text() == "ab\n\n"


def test_csi_s_and_t_scroll_the_region(Terminal: type[AnyTerminal]) -> None:
    terminal = Terminal(5, 4)
    terminal.feed(b"0\r\n1\r\n2\r\n3")
    update = terminal.feed(b"\x1b[2S")
    assert lines_of(terminal) == ["2", "3", "", ""]
    assert update.scrolls == ((0, 3, 2),)
    assert update.dirty == frozenset({2, 3})
    update = terminal.feed(b"\x1b[T")
    assert lines_of(terminal) == ["", "2", "3", ""]
    assert update.scrolls == ((0, 3, -1),)
    assert update.dirty == frozenset({0})
    terminal.feed(b"\x1b[2;3r\x1b[S")
    assert lines_of(terminal) == ["", "3", "", ""]


@pytest.mark.parametrize("control", [b"\x07", b"\x00", b"\x7f", b"\x1c", b"\x05", b"\x0e\x0f"])
def test_c0_inside_a_run_keeps_the_rest(Terminal: type[AnyTerminal], control: bytes) -> None:
    terminal = Terminal(10, 2)
    update = terminal.feed(b"ab" + control + b"cd")
    assert terminal.text() == "abcd\n\n"
    assert update.bell == (control == b"\x07")


def test_c0_inside_csi_is_executed(Terminal: type[AnyTerminal]) -> None:
    terminal = Terminal(10, 3)
    terminal.feed(b"ab\x1b[\r1C" + b"x")
    assert lines_of(terminal)[0] == "ax"


def test_device_attributes_and_status_replies(Terminal: type[AnyTerminal]) -> None:
    terminal = Terminal(80, 25)
    assert terminal.feed(b"\x1b[c").replies == DA1_REPLY == b"\x1b[?6c"
    assert terminal.feed(b"\x1b[0c").replies == b"\x1b[?6c"
    assert terminal.feed(b"\x1b[>c").replies == DA2_REPLY == b"\x1b[>0;10;0c"
    assert terminal.feed(b"\x1b[5n").replies == b"\x1b[0n"
    assert terminal.feed(b"\x1b[3;7H\x1b[6n").replies == b"\x1b[3;7R"
    assert terminal.feed(b"\x1b[6n\x1b[c\x1b[5n").replies == b"\x1b[3;7R\x1b[?6c\x1b[0n"
    # A pending wrap reports the last column; origin mode reports relative rows.
    assert terminal.feed(b"\x1b[1;75H" + b"x" * 6 + b"\x1b[6n").replies == b"\x1b[1;80R"
    assert terminal.feed(b"\x1b[5;10r\x1b[?6h\x1b[2;3H\x1b[6n").replies == b"\x1b[2;3R"
    assert terminal.feed(b"\x1b[?6c").replies == b""


def test_wide_characters_take_two_cells_and_show_once(Terminal: type[AnyTerminal]) -> None:
    terminal = Terminal(6, 2)
    terminal.feed("a中b".encode())
    cells = terminal.cells(0)
    assert cells[1] == Cell("中", DEFAULT_FG, DEFAULT_BG, WIDE)
    assert cells[2] == Cell("", DEFAULT_FG, DEFAULT_BG, WIDE_CONT)
    assert cells[3].char == "b"
    assert terminal.text() == "a中b\n\n"
    assert terminal.cursor[:2] == (4, 0)


def test_wide_character_wraps_at_the_margin_and_halves_are_blanked(Terminal: type[AnyTerminal]) -> None:
    terminal = Terminal(6, 3)
    terminal.feed("abcde中".encode())
    assert lines_of(terminal)[:2] == ["abcde", "中"]
    terminal.feed(b"\x1b[2;2Hx")
    assert terminal.cells(1)[0] == BLANK
    assert lines_of(terminal)[1] == " x"


def test_combining_characters_join_their_base_as_written(Terminal: type[AnyTerminal]) -> None:
    """printf 'cafe\\u0301\\n' leaves the decomposed sequence in `screen`, which grep
    finds; a precomposed é stays precomposed."""
    terminal = Terminal(10, 2)
    terminal.feed("cafe\u0301x\r\ncaf\u00e9".encode())
    assert terminal.cells(0)[3].char == "e\u0301"
    assert terminal.cells(0)[4].char == "x"
    assert terminal.cells(1)[3].char == "\u00e9"
    assert terminal.text() == "cafe\u0301x\ncaf\u00e9\n"


def test_utf8_split_across_feeds_and_invalid_bytes(Terminal: type[AnyTerminal]) -> None:
    data = "é中€".encode()
    for cut in range(len(data) + 1):
        terminal = Terminal(10, 2)
        terminal.feed(data[:cut])
        terminal.feed(data[cut:])
        assert terminal.text() == "é中€\n\n"
    terminal = Terminal(10, 2)
    terminal.feed(b"a\xffb\xc3")
    terminal.feed(b"(")
    assert terminal.text() == "a\ufffdb\ufffd(\n\n"


def test_title_from_osc(Terminal: type[AnyTerminal]) -> None:
    terminal = Terminal(10, 2)
    assert terminal.feed(b"\x1b]2;hello\x07").title == "hello"
    assert terminal.feed(b"x").title is None
    assert terminal.feed(b"\x1b]2;hello\x1b\\").title is None  # unchanged
    assert terminal.feed(b"\x1b]0;wor").title is None
    assert terminal.feed(b"ld\x1b\\").title == "world"
    assert terminal.feed(b"\x1b]1;icon\x07").title is None
    assert terminal.title == "world"
    assert terminal.text() == "x\n\n"


def test_modes(Terminal: type[AnyTerminal]) -> None:
    terminal = Terminal(10, 2)
    assert not terminal.modes.app_cursor and not terminal.modes.bracketed_paste
    terminal.feed(b"\x1b[?1h\x1b[?2004h\x1b[?25l\x1b=\x1b[?1000h\x1b[?1006h")
    modes = terminal.modes
    assert modes.app_cursor and modes.bracketed_paste and modes.app_keypad
    assert not modes.cursor_visible and not terminal.cursor.visible
    assert modes.mouse == 1000 and modes.mouse_sgr
    terminal.feed(b"\x1b[?1l\x1b[?2004l\x1b[?25h\x1b>")
    modes = terminal.modes
    assert not modes.app_cursor and not modes.bracketed_paste and modes.cursor_visible
    assert not modes.app_keypad


def test_reverse_screen_is_a_mode_that_redraws_everything(Terminal: type[AnyTerminal]) -> None:
    """terminfo linux flash=\\E[?5h$<200/>\\E[?5l: DECSCNM is a mode of the whole screen,
    left to the renderer; setting or resetting it makes every row dirty, the cells stay."""
    terminal = Terminal(10, 3)
    terminal.feed(b"text")
    before = [terminal.cells(y) for y in range(3)]
    update = terminal.feed(b"\x1b[?5h")
    assert terminal.modes.reverse_video and update.dirty == frozenset(range(3))
    assert [terminal.cells(y) for y in range(3)] == before
    assert terminal.feed(b"\x1b[?5h").dirty == frozenset()
    update = terminal.feed(b"\x1b[?5l")
    assert not terminal.modes.reverse_video and update.dirty == frozenset(range(3))
    terminal.feed(b"\x1b[?5h\x1bc")
    assert not terminal.modes.reverse_video


def test_cursor_style_from_decscusr(Terminal: type[AnyTerminal]) -> None:
    """CSI Ps SP q (xterm ctlseqs): Ps 0..6 is kept for the renderer; others are ignored,
    RIS goes back to 0; the screen is not touched."""
    terminal = Terminal(10, 2)
    assert terminal.modes.cursor_style == 0
    for data, style in [(b"\x1b[4 q", 4), (b"\x1b[6 q", 6), (b"\x1b[7 q", 6), (b"\x1b[1;2 q", 6),
                        (b"\x1b[? q", 6), (b"\x1b[2 q", 2), (b"\x1b[ q", 0), (b"\x1b[5 q\x1bc", 0)]:
        terminal.feed(data)
        assert terminal.modes.cursor_style == style, data
    terminal.feed(b"\x1b[3 qx")
    assert terminal.text() == "x\n\n"
    assert BACKENDS["fast"].restore(terminal.snapshot()).modes.cursor_style == 3


def test_dec_special_graphics(Terminal: type[AnyTerminal]) -> None:
    terminal = Terminal(10, 2)
    terminal.feed(b"\x1b(0lqk\x1b(Bq\x1b)0\x0eq\x0fq")
    assert lines_of(terminal)[0] == "┌─┐q─q"


def test_save_and_restore_cursor(Terminal: type[AnyTerminal]) -> None:
    terminal = Terminal(10, 3)
    terminal.feed(b"\x1b[2;3H\x1b[1m\x1b7\x1b[H\x1b[0mx\x1b8y")
    assert terminal.cursor[:2] == (3, 1)
    assert terminal.cells(1)[2] == Cell("y", PALETTE[15], DEFAULT_BG, BOLD)


def test_insert_and_delete_lines_are_scroll_events(Terminal: type[AnyTerminal]) -> None:
    terminal = Terminal(4, 4)
    terminal.feed(b"a\r\nb\r\nc\r\nd")
    update = terminal.feed(b"\x1b[2;1H\x1b[L")
    assert lines_of(terminal) == ["a", "", "b", "c"]
    assert update.scrolls == ((1, 3, -1),) and update.dirty == frozenset({1})
    update = terminal.feed(b"\x1b[2M")
    assert lines_of(terminal) == ["a", "c", "", ""]
    assert update.scrolls == ((1, 3, 2),) and update.dirty == frozenset({2, 3})


def test_scrolling_output_is_one_merged_event(Terminal: type[AnyTerminal]) -> None:
    terminal = Terminal(10, 5)
    terminal.feed(b"\x1b[5;1H")
    update = terminal.feed(b"1\r\n2\r\n3\r\n")
    assert update.scrolls == ((0, 4, 3),)
    assert update.dirty == frozenset({1, 2, 3, 4})


def test_resize(Terminal: type[AnyTerminal]) -> None:
    terminal = Terminal(10, 5)
    terminal.feed(b"0\r\n1\r\n2\r\n3\r\n4")
    update = terminal.resize(4, 3)
    assert (terminal.columns, terminal.lines) == (4, 3)
    assert lines_of(terminal) == ["2", "3", "4"]
    assert terminal.cursor[:2] == (1, 2)
    assert update.dirty == frozenset(range(3))
    terminal.resize(12, 6)
    assert lines_of(terminal) == ["2", "3", "4", "", "", ""]
    assert len(terminal.cells(0)) == 12
    terminal.feed(b"\tx\ty")
    assert lines_of(terminal)[2] == "4       x  y"


def test_bad_sizes_are_refused(Terminal: type[AnyTerminal]) -> None:
    with pytest.raises(ValueError):
        Terminal(1, 10)
    with pytest.raises(ValueError):
        Terminal(10, 10).resize(0, 5)


def test_reset(Terminal: type[AnyTerminal]) -> None:
    terminal = Terminal(10, 2)
    terminal.feed(b"\x1b[31mabc\x1b[?1049h\x1bc")
    assert terminal.text() == "\n\n" and not terminal.modes.alt_screen
    terminal.feed(b"x")
    assert terminal.cells(0)[0] == Cell("x", DEFAULT_FG, DEFAULT_BG, 0)


def test_margins_set_in_the_first_line_stop_the_skip_ahead(Terminal: type[AnyTerminal]) -> None:
    terminal = Terminal(10, 4)
    terminal.feed(b"top\r\n")
    terminal.feed(b"\x1b[2;4r\x1b[4;1H\r\n" + b"".join(b"%d\r\n" % n for n in range(1000)))
    assert lines_of(terminal) == ["top", "998", "999", ""]


def test_resize_keeps_tab_stops_every_eight_columns(Terminal: type[AnyTerminal]) -> None:
    terminal = Terminal(16, 2)
    terminal.resize(40, 2)
    terminal.feed(b"\t\t\tx")
    assert terminal.cursor[0] == 25


def test_rep_after_a_long_feed_repeats_the_last_character(Terminal: type[AnyTerminal]) -> None:
    terminal = Terminal(10, 3)
    terminal.feed(b"a\r\n" + b"x" * 5 + b"\r\n" * 3000 + b"\x1b[3b")
    assert lines_of(terminal) == ["", "", "xxx"]


def test_sgr_right_after_a_full_row_with_wide_characters(Terminal: type[AnyTerminal]) -> None:
    terminal = Terminal(10, 6)
    terminal.feed("中".encode() + b"x" * 8)
    terminal.feed(b"\x1b[1m" + b"y" * 40)
    assert lines_of(terminal) == ["中xxxxxxxx"] + ["yyyyyyyyyy"] * 4 + [""]


def test_insert_mode_shifts_wide_characters(Terminal: type[AnyTerminal]) -> None:
    terminal = Terminal(6, 2)
    terminal.feed("abcd\r\x1b[4h中".encode())
    assert lines_of(terminal)[0] == "中abcd"


def test_rows_filled_exactly_by_a_batch_are_dirty(Terminal: type[AnyTerminal]) -> None:
    terminal = Terminal(4, 5)
    terminal.feed(b"")
    update = terminal.feed(b"abcd\x1b[1mefgh\x1b[0mijkl\x1b[1mmnop\x1b[0mqr")
    assert lines_of(terminal) == ["abcd", "efgh", "ijkl", "mnop", "qr"]
    assert update.dirty == frozenset(range(5))


def test_rep_repeats_the_last_character_of_a_mixed_batch(Terminal: type[AnyTerminal]) -> None:
    terminal = Terminal(80, 3)
    terminal.feed(b"a" * 40 + b"\r\n" + b"\rxy" + b"b" * 40 + b"\r\n\x1b[2b")
    assert lines_of(terminal)[2] == "bb"


def test_rep_after_a_batch_ending_in_a_lone_carriage_return(Terminal: type[AnyTerminal]) -> None:
    terminal = Terminal(80, 3)
    terminal.feed(b"a" * 40 + b"\r\n" + b"b" * 40 + b"\r\n\r\x1b[2b")
    assert lines_of(terminal)[2] == "bb"


@pytest.mark.parametrize("sequence", [
    b"\x1b[%sm", b"\x1b[38;5;%sm", b"\x1b[38;2;1;%s;3m", b"\x1b[38:2::%s:1:1m", b"\x1b[%sH",
    b"\x1b[1;%sH", b"\x1b[%sA", b"\x1b[%s@", b"\x1b[?%sh", b"\x1b[%s;%sr",
])
def test_parameters_of_thousands_of_digits(Terminal: type[AnyTerminal], sequence: bytes) -> None:
    terminal = Terminal(10, 3)
    huge = b"9" * 5000
    terminal.feed(sequence.replace(b"%s", huge) + b"x")
    terminal.feed(sequence.replace(b"%s", b"0" * 5000 + b"2") + b"y")
    assert "x" in terminal.text() and "y" in terminal.text()


def test_make_terminal_picks_the_backend_and_refuses_unknown_names() -> None:
    fast = make_terminal("fast", 12, 3)
    slow = make_terminal("pyte", 12, 3)
    assert type(fast) is emulator.Terminal and type(slow) is pyte_backend.PyteTerminal
    assert (slow.columns, slow.lines) == (12, 3)
    with pytest.raises(ValueError, match="emulator 'xterm'.*'fast' or 'pyte'"):
        make_terminal("xterm", 12, 3)

"""The lexer and dispatcher both backends share (parser.py): what each sequence becomes
on a screen model, whole, byte by byte, cut anywhere and with trailing bytes (h11's
``tr()``); what it ignores; and that both backends, fed through it, give the same
screens for a corpus of sequences in a corpus of states."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from vzfs.terminal import BACKENDS, AnyTerminal, make_terminal
from vzfs.terminal.interface import TerminalBackend
from vzfs.terminal.parser import DA1_REPLY, DA2_REPLY, DSR_OK_REPLY, Parser

Call = tuple[Any, ...]


class Recorder:
    """A screen model that keeps the calls the parser makes on it, in order."""

    def __init__(self) -> None:
        self.calls: list[Call] = []

    def __getattr__(self, name: str) -> Callable[..., None]:
        def record(*args: Any) -> None:
            self.calls.append((name, *args))
        return record


def merged(calls: list[Call]) -> list[Call]:
    """The calls with consecutive draws joined: a text run cut by a feed's end is two."""
    out: list[Call] = []
    for call in calls:
        if call[0] == "draw" and out and out[-1][0] == "draw":
            out[-1] = ("draw", out[-1][1] + call[1])
        else:
            out.append(call)
    return out


def feedings(data: bytes) -> list[list[bytes]]:
    """`data` as one feed, byte by byte, and cut in two at every position."""
    return ([[data], [data[i:i + 1] for i in range(len(data))]]
            + [[data[:cut], data[cut:]] for cut in range(1, len(data))])


def dispatched(*feeds: bytes) -> list[Call]:
    screen = Recorder()
    parser = Parser(screen)  # type: ignore[arg-type]
    for data in feeds:
        parser.feed(data)
    return merged(screen.calls)


# Each sequence and what the parser calls for it: parameters decoded, defaults applied
# (0 and absence mean the default), C0 controls inside a sequence executed in place.
DISPATCH: list[tuple[bytes, list[Call]]] = [
    (b"ab", [("draw", "ab")]),
    ("é中".encode(), [("draw", "é中")]),
    (b"\r\n", [("carriage_return",), ("linefeed",)]),
    (b"\r\x0b\x0c\n", [("carriage_return",), ("linefeed",), ("linefeed",), ("linefeed",)]),
    (b"\t\x08\x07\x0e\x0f", [("tab", 1), ("backspace",), ("bell",), ("shift_out",), ("shift_in",)]),
    (b"\x00\x01\x10\x1f\x7f", []),
    (b"\x1b[H", [("cursor_position", 1, 1)]),
    (b"\x1b[3;5H", [("cursor_position", 3, 5)]),
    (b"\x1b[0;0H", [("cursor_position", 1, 1)]),
    (b"\x1b[;7f", [("cursor_position", 1, 7)]),
    (b"\x1b[A\x1b[0A\x1b[4A", [("cursor_up", 1), ("cursor_up", 1), ("cursor_up", 4)]),
    (b"\x1b[99999999999999999999B", [("cursor_down", 65535)]),
    (b"\x1b[2C\x1b[2a\x1b[D\x1b[E\x1b[F", [("cursor_forward", 2), ("cursor_forward", 2), ("cursor_back", 1),
                                          ("cursor_down1", 1), ("cursor_up1", 1)]),
    (b"\x1b[5G\x1b[5`\x1b[7d\x1b[e", [("cursor_to_column", 5), ("cursor_to_column", 5), ("cursor_to_line", 7),
                                     ("cursor_down", 1)]),
    (b"\x1b[J\x1b[1J\x1b[?2K", [("erase_in_display", 0), ("erase_in_display", 1), ("erase_in_line", 2)]),
    (b"\x1b[3X\x1b[@\x1b[2P\x1b[L\x1b[4M", [("erase_characters", 3), ("insert_characters", 1),
                                           ("delete_characters", 2), ("insert_lines", 1), ("delete_lines", 4)]),
    (b"\x1b[S\x1b[2T", [("scroll_up", 1), ("scroll_down", 2)]),
    (b"\x1b[1;2;3;4;5T", []),  # mouse highlight tracking, not SD
    (b"\x1b[3b\x1b[3I\x1b[Z\x1b[g\x1b[3g", [("repeat", 3), ("tab", 3), ("back_tab", 1), ("clear_tab_stop", 0),
                                          ("clear_tab_stop", 3)]),
    (b"\x1b[2;3r\x1b[r", [("set_margins", 2, 3), ("set_margins", 1, 0)]),
    (b"\x1b[4;20h\x1b[4l", [("ansi_mode", 4, True), ("ansi_mode", 20, True), ("ansi_mode", 4, False)]),
    (b"\x1b[?25;1049l\x1b[?6h", [("dec_mode", 25, False), ("dec_mode", 1049, False), ("dec_mode", 6, True)]),
    (b"\x1b[s\x1b[u\x1b[1s", [("save_cursor",), ("restore_cursor",)]),
    (b"\x1b[m\x1b[1;31m", [("select_graphic_rendition", ""), ("select_graphic_rendition", "1;31")]),
    (b"\x1b[38:2::1:2:3m", [("select_graphic_rendition", "38:2::1:2:3")]),
    (b"\x1b[>4;1m\x1b[?1m", []),  # modifyOtherKeys and private SGR-like sequences are never SGR
    (b"\x1b[c\x1b[0c\x1b[1c", [("reply", DA1_REPLY), ("reply", DA1_REPLY)]),
    (b"\x1b[>c", [("reply", DA2_REPLY)]),
    (b"\x1b[5n\x1b[6n\x1b[7n", [("reply", DSR_OK_REPLY), ("report_cursor_position",)]),
    (b"\x1b[4 q\x1b[ q\x1b[7 q\x1b[?2 q", [("set_cursor_style", 4), ("set_cursor_style", 0)]),
    (b"\x1b[!p", [("soft_reset",)]),
    (b"\x1b[2\rC", [("carriage_return",), ("cursor_forward", 2)]),
    (b"\x1b[1\x18A", [("draw", "A")]),  # CAN cancels the CSI and goes with it
    (b"\x1b[1\x1b[2C", [("cursor_forward", 2)]),  # ESC aborts the CSI and starts the next
    ("\x9b3C".encode(), [("cursor_forward", 3)]),  # C1 CSI, as UTF-8 carries it
    (b"\x1b(0\x1b)B\x1b(A\x1b(K", [("define_charset", "0", "("), ("define_charset", "B", ")"),
                                  ("define_charset", "B", "(")]),
    (b"\x1b7\x1b8\x1bD\x1bM\x1bH\x1bc", [("save_cursor",), ("restore_cursor",), ("index",), ("reverse_index",),
                                         ("set_tab_stop",), ("reset",)]),
    (b"\x1bE", [("carriage_return",), ("index",)]),
    (b"\x1b=\x1b>", [("set_app_keypad", True), ("set_app_keypad", False)]),
    (b"\x1b#8\x1b#3\x1b%G", [("alignment_display",)]),
    (b"\x1b]2;ti\x01tle\x07", [("set_title", "title")]),
    (b"\x1b]0;x\x1b\\", [("set_title", "x")]),
    ("\x9d2;y\x9c".encode(), [("set_title", "y")]),
    (b"\x1b]2;x\x18\x1b]2;x\x1a\x1b]1;icon\x07", []),
    (b"\x1bPq#0;2\x1b\\\x1b_apc\x07\x1b^pm\x1b\\\x1bXsos\x1b\\", []),
    (b"\x1b]2;ab\x1b7", [("save_cursor",)]),  # an ESC that is not ST aborts the string
    (b"\x1b]R", [("set_palette", "\x1b]R")]),
    (b"\x1b]P1ff0000", [("set_palette", "\x1b]P1ff0000")]),
    (b"\x1b]P1f\nf0000", [("linefeed",), ("set_palette", "\x1b]P1f\nf0000")]),
    (b"\x1b]P1fz", [("set_palette", "\x1b]P1fz")]),  # aborted; z is consumed
    ("\u0085\u008d".encode(), []),
]


@pytest.mark.parametrize(("data", "calls"), DISPATCH, ids=lambda value: repr(value)[:40])
def test_each_sequence_is_one_dispatch_however_it_is_cut(data: bytes, calls: list[Call]) -> None:
    for feeds in feedings(data):
        assert dispatched(*feeds) == calls, feeds
    # Trailing bytes are left to what follows: the sequence ends where it should.
    assert dispatched(data + b"Z") == merged(calls + [("draw", "Z")])
    assert dispatched(data, b"Z") == merged(calls + [("draw", "Z")])


def test_an_unfinished_sequence_waits_for_the_next_feed() -> None:
    screen = Recorder()
    parser = Parser(screen)  # type: ignore[arg-type]
    for part in (b"\x1b", b"[", b"1;", b"3", b"1"):
        parser.feed(part)
        assert screen.calls == []
    assert parser.pending == "\x1b[1;31"
    parser.feed(b"m")
    assert screen.calls == [("select_graphic_rendition", "1;31")] and parser.pending == ""


def test_a_long_control_string_keeps_only_its_start() -> None:
    screen = Recorder()
    parser = Parser(screen)  # type: ignore[arg-type]
    parser.feed(b"\x1b]2;" + b"t" * 3000)
    parser.feed(b"t" * 3000 + b"\x1b")
    assert len(parser.pending) == 4096 + 1 and parser.pending.endswith("\x1b")
    parser.feed(b"\\")
    assert screen.calls == [("set_title", "t" * 1024)]
    parser.feed(b"\x1b[" + b"1" * 5000)  # an endless CSI is dropped
    assert parser.pending == ""


def test_a_split_character_waits_for_its_other_bytes() -> None:
    encoded = "中".encode()
    assert dispatched(encoded[:1], encoded[1:2], encoded[2:]) == [("draw", "中")]
    assert dispatched(b"\xff") == [("draw", "\ufffd")]


# Sequences that change nothing: a screen fed them between two pieces of output is the
# screen fed the output alone, on both backends.
IGNORED = [
    b"\x1b[5y", b"\x1b[?5y", b"\x1b[=1c", b"\x1b[<1u", b"\x1b[1$p", b"\x1b[?1;2$p", b"\x1b[0\"q", b"\x1b[1 t",
    b"\x1b[>4;1m", b"\x1b[>1p", b"\x1b[1;2;3;4;5T", b"\x1b[3J", b"\x1b[1:2:3x", b"\x1b[7 q", b"\x1b[6y",
    b"\x1bZ", b"\x1b%G", b"\x1b#3", b"\x1b(K", b"\x1b)U", b"\x1bn", b"\x1b~",
    b"\x1bPq#0;2;0;0;0#0~~\x1b\\", b"\x1b_apc\x07", b"\x1b^pm\x1b\\", b"\x1bXsos\x1b\\",
    b"\x1b]1;icon\x07", b"\x1b]52;c;Zm9v\x07", b"\x1b]2;cancelled\x18", b"\x1b]2;substituted\x1a",
    b"\x1b[1\x18", b"\x1b[\x1a", b"\x00\x01\x02\x03\x04\x05\x06\x10\x11\x1c\x7f",
    "\u0080\u0084\u0085\u0088\u008d\u0096".encode(),
]
BEFORE = b"\x1b[2;3Hab\x1b[1;32mcd"
AFTER = b"ef\x1b[Bgh\r\nij"


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@pytest.mark.parametrize("sequence", IGNORED, ids=lambda value: repr(value)[:30])
def test_unknown_and_unused_sequences_are_ignored(backend: str, sequence: bytes) -> None:
    plain = BACKENDS[backend](10, 5)
    plain.feed(BEFORE + AFTER)
    fed = BACKENDS[backend](10, 5)
    update = fed.feed(BEFORE + sequence + AFTER)
    assert fed.snapshot() == plain.snapshot()
    assert (update.replies, update.bell, update.title) == (b"", False, None)


# The corpus: states a screen can be in, and sequences fed in each.
STATES = [
    b"", b"0123456789", b"01234\x1b[2;4r\x1b[?6h", b"ab\x1b[4h", b"\x1b(0", b"\x1b)0\x0e", b"\x1b[?1049hAB",
    b"\x1b[?7l0123456789xyz", b"\x1b[3;3H\x1b[1;31m", "中文字中文".encode(), b"\x1b[?25l\x1b[20h",
    b"\x1b[5;1H\r\n\r\n", b"\x1b[2;3r\x1b[3;1H", b"\x1b[1;44mfull\x1b[2J",
]
SEQUENCES = (
    [bytes([c]) for c in range(0x20)] + [b"\x7f"]
    + [chr(c).encode() for c in range(0x80, 0xa0)]
    + [b"\x1b" + bytes([c]) for c in range(0x20, 0x7f)]
    + [b"\x1b" + i + bytes([f]) for i in (b"(", b")", b"#", b" ") for f in b"0AB8"]
    + [b"\x1b[" + p + bytes([f]) for p in (b"", b"0", b"3", b"2;4", b"99999999", b"1:2")
       for f in b"@ABCDEFGHIJKLMPSTXZ`abcdefghlmnrsu"]
    + [b"\x1b[" + p + bytes([f]) for p in (b"?1", b"?6", b"?1049", b"?25;7", b">0", b"=1")
       for f in b"hlJKcmnrsu"]
    + [b"\x1b[!p", b"\x1b[4 q", b"\x1b[7 q", b"\x1b[1\x08;2H", b"\x1b[2\rK", b"\x1b[1\x1b[2m", "\x9b5C".encode()]
    + [b"\x1b]0;one\x07", b"\x1b]2;two\x1b\\", b"\x1b]2;ab\x1bc", b"\x1bPq#0\x1b\\", b"\x1b]R", b"\x1b]P1ff0000",
       b"\x1b]P1f\nf0000", b"\x1b]P1ffz"]
    + [b"\x1b[" + p + b"m" for p in (b"0", b"1;2;3;4;5;7;8;9", b"22;23;24;25;27;28;29", b"38;5;196",
                                     b"48;2;1;2;3", b"38:2::1:2:3", b"4:0", b"38;2;300;0;0", b"90;107")]
    + ["é\u0301".encode(), "\u200b".encode(), "中".encode() * 6, b"\xe2\x94"]
)
SHOW = b"XY\x1b[BZ\r\nW"


def same_screen(one: AnyTerminal, other: AnyTerminal, what: bytes) -> None:
    for y in range(one.lines):
        assert one.cells(y) == other.cells(y), f"row {y} differs after {what!r}"
    assert one.cursor == other.cursor and one.modes == other.modes, what
    assert (one.title, one.palette) == (other.title, other.palette), what
    assert one.snapshot() == other.snapshot(), what


@pytest.mark.parametrize("state", STATES, ids=lambda value: repr(value)[:30])
def test_both_backends_give_the_same_screen_for_the_corpus(state: bytes) -> None:
    for sequence in SEQUENCES:
        fast, pyte = BACKENDS["fast"](10, 5), BACKENDS["pyte"](10, 5)
        for data in (state, sequence, SHOW):
            one, other = fast.feed(data), pyte.feed(data)
            assert (one.replies, one.bell, one.title) == (other.replies, other.bell, other.title), sequence
        same_screen(fast, pyte, state + sequence)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_each_corpus_sequence_byte_by_byte_gives_the_screen_of_one_feed(backend: str) -> None:
    for state in STATES[:4]:
        for sequence in SEQUENCES:
            whole = BACKENDS[backend](10, 5)
            whole.feed(state + sequence + SHOW)
            split = BACKENDS[backend](10, 5)
            split.feed(state)
            for index in range(len(sequence)):
                split.feed(sequence[index:index + 1])
            split.feed(SHOW)
            assert split.snapshot() == whole.snapshot(), state + sequence


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_backends_are_terminal_backends(backend: str) -> None:
    assert isinstance(make_terminal(backend, 10, 5), TerminalBackend)
    assert isinstance(BACKENDS[backend].restore(make_terminal(backend).snapshot()), TerminalBackend)

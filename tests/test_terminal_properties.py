"""Properties of both emulator backends on arbitrary input: snapshot round trips, exact
scroll events, robustness, the backends' agreement, and the import rule of the pure
terminal layer."""

from __future__ import annotations

import ast
import json
import pathlib
import subprocess
import sys
import unicodedata
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vzfs.terminal import BACKENDS, AnyTerminal
from vzfs.terminal.cell import CONCEAL, DEFAULT_FG, DIM, Cell, wcwidth
from vzfs.terminal.emulator import Terminal
from vzfs.terminal.interface import Update
from vzfs.terminal.palette import LINUX_COLOURS
from vzfs.terminal.parser import NOT_SIMPLE
from vzfs.terminal.pyte_backend import PyteTerminal

each_backend = pytest.mark.parametrize("backend", sorted(BACKENDS))

_CSI_FINALS = "@ABCDEFGHIJKLMPSTXZ`abdefghlmnrsu"

SEQUENCE = st.one_of(
    st.text(min_size=1, max_size=40).map(lambda s: s.encode()),
    st.text(alphabet="ab 中é\u0301x", min_size=1, max_size=30).map(lambda s: s.encode()),
    st.sampled_from([b"\r", b"\n", b"\r\n", b"\x08", b"\t", b"\x07", b"\x0e", b"\x0f", b"\x00"]),
    st.tuples(st.sampled_from(["", "?", ">"]),
              st.lists(st.integers(0, 30), max_size=3),
              st.sampled_from(_CSI_FINALS)).map(
        lambda c: ("\x1b[" + c[0] + ";".join(map(str, c[1])) + c[2]).encode()),
    st.sampled_from([b"\x1b[?1049h", b"\x1b[?1049l", b"\x1b[?1047h", b"\x1b[?1047l", b"\x1b[?47h",
                     b"\x1b[?47l", b"\x1b[?6h", b"\x1b[?6l", b"\x1b[?7l", b"\x1b[?7h", b"\x1b[4h",
                     b"\x1b[4l", b"\x1b[20h", b"\x1b[20l", b"\x1b7", b"\x1b8", b"\x1bD", b"\x1bM",
                     b"\x1bE", b"\x1bH", b"\x1b(0", b"\x1b(B", b"\x1b#8", b"\x1b[2;4r",
                     b"\x1b]2;title\x07", b"\x1bPdcs\x1b\\", b"\x1b[38:2::1:2:3m", b"\x1b[1;31m",
                     b"\x1b[>4;1m", b"\x1b[!p", b"\x1bc", b"\x1b[2;8m", b"\x1b[22;28m", b"\x1b[4 q",
                     b"\x1b[?5h", b"\x1b[?5l", b"\x1b]P1ff0000", b"\x1b]P0\n1a2b3c", b"\x1b]P7ab",
                     b"\x1b]R"]),
    st.binary(max_size=8),
)
STREAM = st.lists(SEQUENCE, max_size=40).map(b"".join)
SIZES = st.sampled_from([(80, 25), (10, 4), (7, 3), (2, 2)])


def screen(terminal: AnyTerminal) -> list[list[Cell]]:
    return [list(terminal.cells(y)) for y in range(terminal.lines)]


def apply_update(old: list[list[Cell]], update: Update) -> list[list[Cell] | None]:
    """The previous screen after the update's scrolls, vacated rows unknown (None)."""
    rows: list[list[Cell] | None] = list(old)
    for top, bottom, count in update.scrolls:
        region = rows[top:bottom + 1]
        if count > 0:
            region = region[count:] + [None] * count
        else:
            region = [None] * -count + region[:count]
        rows[top:bottom + 1] = region
    return rows


@each_backend
@settings(max_examples=300, deadline=None)
@given(SIZES, STREAM, STREAM, st.integers(0, 10**6))
def test_scroll_events_are_exact(backend: str, size: tuple[int, int], before: bytes, data: bytes,
                                 seed: int) -> None:
    terminal = BACKENDS[backend](*size)
    terminal.feed(before)
    old = screen(terminal)
    cut = seed % (len(data) + 1)
    first = terminal.feed(data[:cut])
    middle = screen(terminal)
    second = terminal.feed(data[cut:])
    for previous, update, new in ((old, first, middle), (middle, second, screen(terminal))):
        moved = apply_update(previous, update)
        for y in range(terminal.lines):
            if y not in update.dirty:
                assert moved[y] == new[y], f"row {y} changed but is not dirty"


@each_backend
def test_scroll_events_are_exact_for_long_simple_output(backend: str) -> None:
    terminal = BACKENDS[backend](20, 5)
    terminal.feed(b"keep\r\n")
    old = screen(terminal)
    update = terminal.feed(b"".join(b"\x1b[3%dmline %d\r\n" % (n % 8, n) for n in range(400)))
    assert update.dirty == frozenset(range(5)) and update.scrolls == ()
    update = terminal.feed(b"a\r\nb\r\n")
    assert update.scrolls == ((0, 4, 2),) and update.dirty == frozenset({2, 3, 4})
    del old


@pytest.mark.slow
@each_backend
@settings(max_examples=300, deadline=None)
@given(SIZES, STREAM, STREAM)
def test_snapshot_round_trips(backend: str, size: tuple[int, int], before: bytes, after: bytes) -> None:
    terminal = BACKENDS[backend](*size)
    terminal.feed(before)
    snapshot = terminal.snapshot()
    restored = BACKENDS[backend].restore(json.loads(json.dumps(snapshot)))
    assert restored.snapshot() == snapshot
    assert restored.text() == terminal.text()
    assert restored.cursor == terminal.cursor and restored.modes == terminal.modes
    first = terminal.feed(after)
    second = restored.feed(after)
    assert restored.snapshot() == terminal.snapshot()
    assert (first.replies, first.bell, first.title) == (second.replies, second.bell, second.title)


@each_backend
def test_snapshot_keeps_partial_utf8_and_sequences(backend: str) -> None:
    terminal = BACKENDS[backend](10, 2)
    terminal.feed(b"\x1b[3")
    restored = BACKENDS[backend].restore(json.loads(json.dumps(terminal.snapshot())))
    restored.feed(b"1m" + "中".encode()[:2])
    assert restored.text() == "\n\n"
    again = BACKENDS[backend].restore(json.loads(json.dumps(restored.snapshot())))
    again.feed("中".encode()[2:])
    cell = again.cells(0)[0]
    assert cell.char == "中" and cell.fg == 0xAA0000
    assert again.text() == "中\n\n"


@each_backend
@settings(max_examples=300, deadline=None)
@given(SIZES, STREAM, st.lists(st.integers(0, 400), max_size=5))
def test_any_bytes_keep_the_screen_well_formed(backend: str, size: tuple[int, int], data: bytes,
                                               cuts: list[int]) -> None:
    terminal = BACKENDS[backend](*size)
    start = 0
    for cut in sorted(cuts) + [len(data)]:
        update = terminal.feed(data[start:cut])
        start = max(start, cut)
        assert all(0 <= y < terminal.lines for y in update.dirty)
    text = terminal.text()
    assert text.count("\n") == terminal.lines
    for y in range(terminal.lines):
        cells = terminal.cells(y)
        assert len(cells) == terminal.columns
        for x, cell in enumerate(cells):
            assert isinstance(cell, Cell)
            if cell.flags & 128:  # WIDE_CONT follows its WIDE half
                assert x > 0 and cells[x - 1].flags & 64
    x, y, _ = terminal.cursor
    assert 0 <= x < terminal.columns and 0 <= y < terminal.lines


@each_backend
@settings(max_examples=100, deadline=None)
@given(STREAM, st.integers(0, 1000))
def test_split_feeds_equal_one_feed_in_text(backend: str, data: bytes, seed: int) -> None:
    whole = BACKENDS[backend](10, 4)
    whole.feed(data)
    split = BACKENDS[backend](10, 4)
    cut = seed % (len(data) + 1)
    split.feed(data[:cut])
    split.feed(data[cut:])
    assert split.text() == whole.text()
    assert split.cursor == whole.cursor


SESSIONS = sorted((pathlib.Path(__file__).resolve().parent / "sessions").glob("*.bin"))


def same_state(fast: Terminal, pyte: PyteTerminal) -> None:
    assert pyte.text() == fast.text()
    for y in range(fast.lines):
        assert pyte.cells(y) == fast.cells(y), f"row {y} differs"
    assert pyte.cursor == fast.cursor and pyte.modes == fast.modes and pyte.title == fast.title
    assert pyte.snapshot() == fast.snapshot()


@pytest.mark.slow
@pytest.mark.parametrize("path", SESSIONS, ids=lambda path: path.stem)
@pytest.mark.parametrize("chunk", [4096, 61])
def test_backends_agree_on_captured_sessions(path: pathlib.Path, chunk: int) -> None:
    """Real programs' output (tests/sessions/capture.py): the same screen from both backends."""
    data = path.read_bytes()
    fast = Terminal(80, 25)
    pyte = PyteTerminal(80, 25)
    shown = False
    for start in range(0, len(data), chunk):
        piece = data[start:start + chunk]
        one, other = fast.feed(piece), pyte.feed(piece)
        assert (one.replies, one.bell, one.title) == (other.replies, other.bell, other.title)
        same_state(fast, pyte)
        shown = shown or bool(fast.text().strip())
    assert shown  # full-screen programs leave the empty main screen behind


def test_captured_sessions_are_present() -> None:
    assert {path.stem for path in SESSIONS} >= {"bash", "less", "ls_color", "man", "top", "vim",
                                                 "linux_console", "linux_reset"}


def feed_session(backend: str, name: str, chunk: int, *until: bytes) -> AnyTerminal:
    """A terminal fed the recorded session `name`, up to the end of the first `until`
    marker after the ones before it, if any are given."""
    data = (pathlib.Path(__file__).resolve().parent / "sessions" / f"{name}.bin").read_bytes()
    end = 0
    for marker in until:
        end = data.index(marker, end) + len(marker)
    if until:
        data = data[:end]
    terminal = BACKENDS[backend](80, 25)
    for start in range(0, len(data), chunk):
        terminal.feed(data[start:start + chunk])
    return terminal


@each_backend
@pytest.mark.parametrize("chunk", [4096, 7])
def test_a_linux_console_session_shows_what_a_linux_console_shows(backend: str, chunk: int) -> None:
    """bash with TERM=linux (tests/sessions/capture.py linux_console): palette sequences
    end without a terminator, ?1049 l restores the cursor on the main screen, faint and
    concealed text are attributes, the combining sequence stays as written, colour 7 is
    the default colour; `setterm --inversescreen on` and `tput flash` reverse the screen,
    CSI 4 SP q makes the cursor an underline."""
    terminal = feed_session(backend, "linux_console", chunk)
    lines = [line for line in terminal.text().split("\n") if line and not line.startswith("$")]
    assert lines[:6] == ["bash-5.2# PS1='$ '", "AB", "C", "E", "AD", "cafe\u0301 dim hidden grey"]
    assert lines[6] == "red"
    row = next(y for y in range(terminal.lines) if terminal.text().split("\n")[y].startswith("cafe"))
    cells = terminal.cells(row)
    assert [cells[x].flags for x in (6, 11, 17)] == [DIM, CONCEAL, 0]
    assert cells[17].fg == cells[0].fg == DEFAULT_FG
    assert terminal.palette[1:3] == (0xFF0000, 0x00FF00)
    assert terminal.modes.cursor_style == 4
    flashed = feed_session(backend, "linux_console", chunk, b"\x1b[?5h\x1b[?5h")
    assert flashed.modes.reverse_video


@each_backend
@pytest.mark.parametrize("chunk", [4096, 7])
def test_reset_on_a_linux_console_session_keeps_the_next_output(backend: str, chunk: int) -> None:
    """reset, tput reset and setterm --reset send ESC c ESC ] R (TERM=linux rs1); what
    follows is shown, and the palette, reverse screen and cursor style are reset."""
    for command, after in [(b"reset;", b"after-reset\r\n"), (b"tput reset;", b"after-tput-reset\r\n"),
                           (b"setterm --reset;", b"after-setterm-reset\r\n")]:
        terminal = feed_session(backend, "linux_reset", chunk, command + b" echo " + after, after)
        assert terminal.text().split("\n")[0] == after.decode().strip()
        assert terminal.palette == tuple(LINUX_COLOURS)
        assert not terminal.modes.reverse_video and terminal.modes.cursor_style == 0


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(SIZES, STREAM, st.lists(st.integers(0, 400), max_size=3))
def test_backends_agree(size: tuple[int, int], data: bytes, cuts: list[int]) -> None:
    fast = Terminal(*size)
    pyte = PyteTerminal(*size)
    start = 0
    for cut in sorted(cuts) + [len(data)]:
        one, other = fast.feed(data[start:cut]), pyte.feed(data[start:cut])
        start = max(start, cut)
        assert (one.replies, one.bell, one.title) == (other.replies, other.bell, other.title)
    same_state(fast, pyte)


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(SIZES, STREAM, STREAM, st.sampled_from([(Terminal, PyteTerminal), (PyteTerminal, Terminal)]))
def test_snapshots_are_interchangeable(size: tuple[int, int], before: bytes, after: bytes,
                                       kinds: tuple[type[AnyTerminal], type[AnyTerminal]]) -> None:
    """A screen saved by one backend is restored by the other and goes on the same."""
    source_kind, target_kind = kinds
    source = source_kind(*size)
    source.feed(before)
    target = target_kind.restore(json.loads(json.dumps(source.snapshot())))
    assert target.snapshot() == source.snapshot()
    source.feed(after)
    target.feed(after)
    assert target.snapshot() == source.snapshot()


_FORBIDDEN = {"trio", "pyfuse3", "socket", "cffi", "_cffi_backend", "select", "selectors", "subprocess"}
_PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "vzfs" / "terminal"


def test_terminal_layer_imports_nothing_impure() -> None:
    for path in sorted(_PACKAGE.glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in _FORBIDDEN | {"os"}, f"{path.name} imports {name}"
    code = (
        "import sys, vzfs.terminal, vzfs.terminal.emulator, vzfs.terminal.pyte_backend,"
        " vzfs.terminal.palette, vzfs.terminal.cell, vzfs.terminal.interface, vzfs.terminal.parser,"
        " vzfs.terminal.sgr\n"
        f"print(sorted(set(sys.modules) & set({sorted(_FORBIDDEN)!r})))"
    )
    loaded: Any = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        cwd=_PACKAGE.parent.parent,
    )
    assert loaded.stdout.strip() == "[]"


def test_no_module_takes_a_private_name_of_a_terminal_module() -> None:
    """Each terminal module's underscore names are its own: the backends share what
    they share through public names (parser, interface, sgr, cell, palette)."""
    root = _PACKAGE.parent.parent
    for path in sorted([*root.glob("vzfs/**/*.py"), *root.glob("tests/*.py"), *root.glob("bench/*.py")]):
        tree = ast.parse(path.read_text(), str(path))
        in_terminal = path.parent == _PACKAGE
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom):
                continue
            terminal = (node.module or "").startswith("vzfs.terminal") or (
                in_terminal and node.level == 1) or (node.module or "").startswith("terminal")
            if terminal:
                private = [alias.name for alias in node.names if alias.name.startswith("_")]
                assert not private, f"{path.relative_to(root)} imports {private} from {node.module}"


_LINE_PART = st.one_of(
    st.text(alphabet="ab 中é\u0301\t\x08\r", min_size=1, max_size=50).map(lambda s: s.encode()),
    st.text(alphabet="xyz", min_size=60, max_size=200).map(lambda s: s.encode()),
    st.sampled_from([b"\x1b[1;31m", b"\x1b[0m", b"\x1b[m", b"\x1b[38;5;99m", b"\x1b[44m",
                     b"\x1b[38:2::1:2:3m", b"\x1b[H", b"\x07", b"\x1b(0", b"\x1b(B", b"\x1b[4h",
                     b"\x1b[4l", b"\x1b[2;3r", b"\x1b[r", b"\x1b[?7l", b"\x1b[?7h", b"\n", b"\x1b[3b"]),
)
_LINE = st.lists(_LINE_PART, max_size=6).map(lambda parts: b"".join(parts) + b"\r\n")


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(SIZES, STREAM, st.lists(_LINE, min_size=1, max_size=10), st.integers(1, 40), STREAM)
def test_skipping_equals_drawing_everything(size: tuple[int, int], before: bytes,
                                            body: list[bytes], repeat: int, after: bytes) -> None:
    """A feed big enough to skip ahead ends in the same state as the same bytes fed in
    pieces too small to skip."""
    data = before + b"".join(body) * repeat + after
    whole = Terminal(*size)
    whole.feed(data)
    pieces = Terminal(*size)
    for start in range(0, len(data), 500):
        pieces.feed(data[start:start + 500])
    assert whole.snapshot() == pieces.snapshot()


def test_simple_stretch_characters_are_one_cell_wide() -> None:
    simple = [chr(code) for code in range(0x110000)
              if not 0xD800 <= code < 0xE000 and NOT_SIMPLE.match(chr(code)) is None]
    printable = [char for char in simple if char not in "\r\n\x1b"]
    assert printable
    for char in printable:
        assert wcwidth(char) == 1 and not unicodedata.combining(char), hex(ord(char))

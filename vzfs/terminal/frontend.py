"""The public terminal both backends are: parser.py's ``Parser`` feeding a screen model, written once.

Theory of operation
-------------------
A backend is a screen model and nothing more: emulator.py's ``Terminal`` and
pyte_backend.py's ``PyteTerminal`` are each ``TerminalFrontend`` naming its screen
class (``screen_class``). The frontend makes the screen and the parser, feeds the
parser, takes the ``Update`` a feed or a resize leaves on the screen (the dirty rows,
the scroll events, the replies, the bell, the title: ``_take_update``), reports the
cursor and the modes, and writes and reads the snapshot format of interface.py.

What the frontend needs of a screen model is ``BackendScreen``: the parser's
``ScreenModel``, the modes of modes.py (``ModeState``), the state both models keep
under the same names (title, palette, saved cursors, charsets, the last character,
what a feed collects for its Update), and the few things only a model can say: its
cells (``cells``, ``text``), the cursor's place (``position``, where x == columns is a
pending wrap), the rows dirty since the last Update (``take_dirty``), and the part of
a snapshot in its own terms (``model_snapshot`` / ``restore_model``: the two buffers,
the cursor, the pen, the margins, the tab stops). A model that takes the parser's
shortcuts hands them over with ``parser_shortcuts``.

Where the two models compute the same thing on their own data, the computation is
here once: a new title (``retitle``), the cells an erase in line covers
(``erased_span``), the cell a combining character joins (``cell_before``).
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, Self, Sequence

from .cell import Cell
from .interface import SNAPSHOT_VERSION, Cursor, Modes, SavedCursor, Scroll, Update
from .modes import ModeState, mode_snapshot, modes_of, restore_modes
from .palette import LINUX_COLOURS
from .parser import Parser, ScreenModel, Shortcuts


class BackendScreen(ModeState, ScreenModel, Protocol):
    """A backend's screen model, as the frontend drives and reads it."""

    columns: int
    lines: int
    title: str
    palette: list[int]
    saved: list[SavedCursor | None]
    g: list[str]
    gl: int
    last_char: str
    # Collected by a feed (or resize) for its Update, emptied when it is taken.
    events: list[Scroll]
    replies: list[bytes]
    bell_rung: bool
    title_changed: bool

    @property
    def position(self) -> tuple[int, int]:
        """The cursor's column and row; column == columns is a pending wrap."""
        ...

    def cells(self, row: int) -> Sequence[Cell]:
        """The cells of one row, left to right."""
        ...

    def text(self) -> str:
        """The screen as text: one line per row, trailing spaces trimmed, each ending in "\\n"."""
        ...

    def resize_to(self, columns: int, lines: int) -> None:
        """Change the size; rows are cut at the top only as far as the cursor row needs."""

    def take_dirty(self) -> frozenset[int]:
        """The rows written since the last call (all_dirty aside); they are clean after it."""
        ...

    def model_snapshot(self) -> dict[str, Any]:
        """The snapshot's ``main``, ``alt``, ``cursor``, ``pen``, ``margins`` and ``tabstops``."""
        ...

    def restore_model(self, snapshot: dict[str, Any]) -> None:
        """Take what ``model_snapshot`` gives, and ``alt_active``, from `snapshot`; the
        rest of the state is set already."""

    def parser_shortcuts(self) -> Shortcuts | None:
        """The parser's shortcuts this model takes, if any (parser.py's ``Shortcuts``)."""
        ...


def retitle(screen: BackendScreen, title: str) -> None:
    """OSC 0 / 2: the title, and whether the next Update tells it."""
    if title != screen.title:
        screen.title = title
        screen.title_changed = True


def erased_span(how: int, x: int, columns: int) -> tuple[int, int] | None:
    """The columns start..end-1 that EL (``CSI Ps K``) with `how` erases from column x;
    None for a `how` that erases nothing."""
    if how == 0:
        return x, columns
    if how == 1:
        return 0, x + 1
    if how == 2:
        return 0, columns
    return None


def cell_before(x: int, y: int, columns: int) -> tuple[int, int] | None:
    """The cell before column x of row y (the last of the row above at the left
    margin), or None at the top left, where there is none."""
    if x == 0:
        if y == 0:
            return None
        return columns - 1, y - 1
    return x - 1, y


class TerminalFrontend:
    """A terminal screen fed with the bytes a pty master reads, kept by ``screen_class``."""

    screen_class: ClassVar[type[BackendScreen]]

    def __init__(self, columns: int = 80, lines: int = 25) -> None:
        if columns < 2 or lines < 2:
            raise ValueError(f"cannot make a {columns}x{lines} terminal: it needs at least 2x2 cells")
        self._screen = self.screen_class(columns, lines)  # type: ignore[call-arg]
        self._parser = Parser(self._screen, self._screen.parser_shortcuts())

    @property
    def columns(self) -> int:
        return self._screen.columns

    @property
    def lines(self) -> int:
        return self._screen.lines

    @property
    def title(self) -> str:
        return self._screen.title

    @property
    def palette(self) -> tuple[int, ...]:
        """The sixteen colours (0xRRGGBB) the renderer draws the basic colours and the
        default ones with: the Linux console's, or what ``ESC ] P`` made them."""
        return tuple(self._screen.palette)

    @property
    def cursor(self) -> Cursor:
        # x == columns means "a wrap is pending"; the cursor is shown in the last column.
        screen = self._screen
        x, y = screen.position
        return Cursor(min(x, screen.columns - 1), y, screen.cursor_visible)

    @property
    def modes(self) -> Modes:
        return modes_of(self._screen)

    def cells(self, row: int) -> Sequence[Cell]:
        """The cells of one row, left to right."""
        return self._screen.cells(row)

    def text(self) -> str:
        """The screen as text: one line per row, trailing spaces trimmed, each ending in "\\n"."""
        return self._screen.text()

    def feed(self, data: bytes) -> Update:
        """Process bytes read from the pty master and tell what changed."""
        self._parser.feed(data)
        return self._take_update()

    def resize(self, columns: int, lines: int) -> Update:
        """Change the size; rows are cut at the top only as far as the cursor row needs."""
        if columns < 2 or lines < 2:
            raise ValueError(f"cannot resize the terminal to {columns}x{lines}: it needs at least 2x2 cells")
        self._screen.resize_to(columns, lines)
        return self._take_update()

    def snapshot(self) -> dict[str, Any]:
        """The whole state as plain JSON-serialisable data; ``restore`` (of either backend)
        rebuilds it exactly."""
        screen = self._screen
        return {
            "version": SNAPSHOT_VERSION,
            "columns": screen.columns,
            "lines": screen.lines,
            "alt_active": screen.alt_active,
            **screen.model_snapshot(),
            "modes": mode_snapshot(screen),
            "saved": [None if saved is None else list(saved) for saved in screen.saved],
            "charsets": [screen.g[0], screen.g[1], screen.gl],
            "title": screen.title,
            "palette": list(screen.palette),
            "last_char": screen.last_char,
            **self._parser.snapshot(),
        }

    @classmethod
    def restore(cls, snapshot: dict[str, Any]) -> Self:
        """A terminal in exactly the state ``snapshot`` recorded (by either backend)."""
        if snapshot.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"cannot restore terminal snapshot version {snapshot.get('version')!r}")
        terminal = cls(snapshot["columns"], snapshot["lines"])
        screen = terminal._screen
        restore_modes(screen, snapshot["modes"])
        screen.saved = [
            None if saved is None else (
                saved[0], saved[1], saved[2], saved[3], saved[4],
                saved[5], saved[6], saved[7], saved[8], saved[9],
            )
            for saved in snapshot["saved"]
        ]
        g0, g1, screen.gl = snapshot["charsets"]
        screen.g = [g0, g1]
        screen.title = snapshot["title"]
        screen.palette = list(snapshot.get("palette", LINUX_COLOURS))  # absent before ESC ] P
        screen.last_char = snapshot["last_char"]
        screen.restore_model(snapshot)
        terminal._parser.restore(snapshot)
        screen.all_dirty = True
        return terminal

    def _take_update(self) -> Update:
        """What the screen collected since the last Update; it starts collecting anew."""
        screen = self._screen
        lines = screen.lines
        dirty = screen.take_dirty()
        if screen.all_dirty:
            dirty = frozenset(range(lines))
        scrolls = () if len(dirty) == lines else tuple(screen.events)
        update = Update(
            dirty=dirty,
            scrolls=scrolls,
            replies=b"".join(screen.replies),
            bell=screen.bell_rung,
            title=screen.title if screen.title_changed else None,
        )
        screen.events = []
        screen.replies = []
        screen.bell_rung = False
        screen.title_changed = False
        screen.all_dirty = False
        return update

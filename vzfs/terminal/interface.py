"""What a terminal backend gives its users: the Update of a feed, the Cursor, the Modes, the snapshot format, and the TerminalBackend protocol.

Theory of operation
-------------------
A terminal is fed the bytes a pty master reads and answers each feed (or resize) with
an ``Update``: the rows to repaint after the scrolls it lists, the replies for the pty,
whether the bell rang and the new title. The VNC server and the controller hold a
terminal only through ``TerminalBackend``; the two backends (``emulator.Terminal``,
the fast engine, and ``pyte_backend.PyteTerminal``) both satisfy it, and both write
and read one snapshot format (``SNAPSHOT_VERSION``), so a screen saved by either is
restored by either.

Scroll events are merged as they come (``add_scroll``): a run of one-line scrolls of
the same region is one event, and past ``MAX_SCROLLS`` events an Update gives up
scrolls and marks every row dirty, which costs a client one full repaint at most.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, NamedTuple, Protocol, Self, Sequence, runtime_checkable

from .cell import Cell

SNAPSHOT_VERSION: Final = 1

MAX_SCROLLS: Final = 64


class Cursor(NamedTuple):
    """Where the cursor is drawn: column, row (both 0-based) and whether it is shown."""

    x: int
    y: int
    visible: bool


class Modes(NamedTuple):
    """The modes a renderer or an input encoder needs (xterm ctlseqs DECSET numbers)."""

    app_cursor: bool        # DECCKM (?1): cursor keys send SS3 instead of CSI
    app_keypad: bool        # DECKPAM (ESC =)
    bracketed_paste: bool   # ?2004
    alt_screen: bool        # ?47 / ?1047 / ?1049
    cursor_visible: bool    # DECTCEM (?25)
    autowrap: bool          # DECAWM (?7)
    insert: bool            # IRM (4)
    origin: bool            # DECOM (?6)
    newline: bool           # LNM (20)
    reverse_video: bool     # DECSCNM (?5), left to the renderer
    mouse: int              # 0, or the active tracking mode: 9, 1000, 1002 or 1003
    mouse_sgr: bool         # ?1006
    cursor_style: int       # DECSCUSR (CSI Ps SP q), 0..6, left to the renderer


Scroll = tuple[int, int, int]
"""(top, bottom, count): rows top..bottom (inclusive) moved up by count (down if < 0)."""

SavedCursor = tuple[int, int, int, int, int, str, str, int, bool, bool]
"""x, y, fg spec, bg spec, flags, G0, G1, GL, DECOM, DECAWM — what DECSC saves (xterm),
one per screen buffer, as the snapshot's ``saved`` holds them."""


@dataclass(frozen=True, slots=True)
class Update:
    """What one ``feed`` (or ``resize``) changed.

    Apply ``scrolls`` in order to the previous screen, then repaint the ``dirty`` rows:
    the result is the new screen. Rows vacated by a scroll are always dirty.
    """

    dirty: frozenset[int]
    scrolls: tuple[Scroll, ...]
    replies: bytes      # to be written back to the pty, in order
    bell: bool
    title: str | None   # the new title, or None when unchanged


def add_scroll(scrolls: list[Scroll], top: int, bottom: int, count: int) -> bool:
    """Add a scroll of rows top..bottom by `count` to the events of an Update, merged
    into the last one when it goes on in the same region and direction; when there
    are already MAX_SCROLLS, empty the list instead and tell (False) that every row
    must be marked dirty."""
    if scrolls:
        last_top, last_bottom, last_count = scrolls[-1]
        if last_top == top and last_bottom == bottom and (last_count > 0) == (count > 0):
            height = bottom - top + 1
            scrolls[-1] = (top, bottom, max(-height, min(height, last_count + count)))
            return True
    if len(scrolls) >= MAX_SCROLLS:
        scrolls.clear()
        return False
    scrolls.append((top, bottom, count))
    return True


@runtime_checkable
class TerminalBackend(Protocol):
    """A terminal as the VNC server, the controller and the ``screen`` file use it,
    whichever backend keeps it."""

    @property
    def columns(self) -> int: ...

    @property
    def lines(self) -> int: ...

    @property
    def title(self) -> str: ...

    @property
    def palette(self) -> tuple[int, ...]:
        """The sixteen colours (0xRRGGBB) the renderer draws the basic colours with."""
        ...

    @property
    def cursor(self) -> Cursor: ...

    @property
    def modes(self) -> Modes: ...

    def cells(self, row: int) -> Sequence[Cell]:
        """The cells of one row, left to right."""
        ...

    def text(self) -> str:
        """The screen as text: one line per row, trailing spaces trimmed, each ending in "\\n"."""
        ...

    def feed(self, data: bytes) -> Update:
        """Process bytes read from the pty master and tell what changed."""
        ...

    def resize(self, columns: int, lines: int) -> Update:
        """Change the size; rows are cut at the top only as far as the cursor row needs."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """The whole state as plain JSON-serialisable data, in the format both backends share."""
        ...

    @classmethod
    def restore(cls, snapshot: dict[str, Any]) -> Self:
        """A terminal in exactly the state `snapshot` recorded (by either backend)."""
        ...

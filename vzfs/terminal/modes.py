"""The modes both screen models keep, and what DECSET / DECRST do to them: written once for both backends.

Theory of operation
-------------------
Each screen model (emulator.py's, pyte_backend.py's) keeps every mode that
interface.py's ``Modes`` reports under the name ``Modes`` gives it (``alt_active``
for ``alt_screen``), as a plain attribute or as a property over its own model
(pyte keeps DECAWM, DECOM, IRM, LNM and DECTCEM in its ``mode`` set). That shared
shape, ``ModeState``, is all the code here needs: ``dec_mode`` is the one dispatch of
the DEC private modes (xterm ctlseqs "CSI ? Pm h"), ``modes_of`` is the ``Modes`` a
terminal reports, ``reset_modes`` their power-on values, and ``mode_snapshot`` / ``restore_modes`` are the ``modes`` entry of
the snapshot format both backends write and read (``MODE_NAMES``, in that order).

The alternate screen is the one place the models differ: each says how it swaps
its buffer in (``show_buffer``) and clears the alternate one (``clear_alternate``).
"""

from __future__ import annotations

from typing import Any, Final, Protocol

from .interface import Modes

POWER_ON: Final[dict[str, Any]] = dict(
    app_cursor=False, app_keypad=False, bracketed_paste=False, cursor_visible=True, autowrap=True,
    insert=False, origin=False, newline=False, reverse_video=False, mouse=0, mouse_sgr=False,
    cursor_style=0,
)
"""The modes at power-on (RIS), by the names of ``Modes`` and of ``ModeState``."""

MODE_NAMES: Final = tuple(POWER_ON)
"""The modes a snapshot records, in this order."""

MODE_DEFAULTS: Final[dict[str, Any]] = {"cursor_style": 0}
"""What a snapshot written before a mode existed means by its absence (DECSCUSR)."""

MOUSE_MODES: Final = frozenset({9, 1000, 1002, 1003})
"""X10, normal, button-event and any-event tracking: one of them is active at a time."""


class ModeState(Protocol):
    """The modes of a screen model and the few operations DECSET / DECRST need."""

    app_cursor: bool
    app_keypad: bool
    bracketed_paste: bool
    alt_active: bool
    cursor_visible: bool
    autowrap: bool
    insert: bool
    origin: bool
    newline: bool
    reverse_video: bool
    mouse: int
    mouse_sgr: bool
    cursor_style: int
    all_dirty: bool

    def cursor_position(self, line: int, column: int) -> None: ...
    def save_cursor(self) -> None: ...
    def restore_cursor(self) -> None: ...

    def show_buffer(self, alternate: bool) -> None:
        """Make the alternate buffer (or the main one) the one drawn on and shown."""

    def clear_alternate(self) -> None:
        """Fill the alternate buffer with blanks of the current pen."""


def dec_mode(screen: ModeState, mode: int, on: bool) -> None:
    """DECSET / DECRST (xterm ctlseqs "CSI ? Pm h"); modes not listed are ignored."""
    if mode == 1:
        screen.app_cursor = on
    elif mode == 5:
        if screen.reverse_video != on:
            screen.all_dirty = True
        screen.reverse_video = on
    elif mode == 6:
        screen.origin = on
        # DECOM homes the cursor: to the top of the region when it is on (VT510 manual).
        screen.cursor_position(1, 1)
    elif mode == 7:
        screen.autowrap = on
    elif mode == 25:
        screen.cursor_visible = on
    elif mode == 2004:
        screen.bracketed_paste = on
    elif mode in MOUSE_MODES:
        if on:
            screen.mouse = mode
        elif screen.mouse == mode:
            screen.mouse = 0
    elif mode == 1006:
        screen.mouse_sgr = on
    elif mode == 47:
        switch_screen(screen, on)
    elif mode == 1047:
        if not on and screen.alt_active:
            screen.clear_alternate()
        switch_screen(screen, on)
    elif mode == 1048:
        if on:
            screen.save_cursor()
        else:
            screen.restore_cursor()
    elif mode == 1049:
        # Save the cursor, switch, clear the alternate screen; back: restore it,
        # even when already on the main screen (xterm's CursorRestore, as tmux).
        if on:
            if not screen.alt_active:
                screen.save_cursor()
                switch_screen(screen, True)
                screen.clear_alternate()
        else:
            switch_screen(screen, False)
            screen.restore_cursor()


def reset_modes(screen: ModeState) -> None:
    """The modes at power-on (RIS); the alternate screen is the model's to leave."""
    for name, value in POWER_ON.items():
        setattr(screen, name, value)


def switch_screen(screen: ModeState, alternate: bool) -> None:
    """Show the alternate screen (or the main one); every row is dirty after a switch."""
    if alternate == screen.alt_active:
        return
    screen.alt_active = alternate
    screen.show_buffer(alternate)
    screen.all_dirty = True


def modes_of(screen: ModeState) -> Modes:
    """The modes a renderer or an input encoder needs, as the screen keeps them."""
    return Modes(alt_screen=screen.alt_active, **mode_snapshot(screen))


def mode_snapshot(screen: ModeState) -> dict[str, Any]:
    """The ``modes`` entry of a snapshot."""
    return {name: getattr(screen, name) for name in MODE_NAMES}


def restore_modes(screen: ModeState, modes: dict[str, Any]) -> None:
    """Set the modes a snapshot's ``modes`` entry recorded."""
    for name in MODE_NAMES:
        setattr(screen, name, modes[name] if name in modes else MODE_DEFAULTS[name])

"""The terminal emulator layer shared by the `screen` file and the VNC server, and its backend selector.

Two backends have one interface (interface.py's ``TerminalBackend``): ``"fast"``,
vzfs's own engine (emulator.py), and ``"pyte"``, pyte's Screen with its verified gaps
closed (pyte_backend.py). Each is the one frontend (frontend.py: the lexer and
dispatcher of parser.py, the Update, the modes of modes.py, the snapshot) over a
screen model of its own. Their snapshots have one format, so a screen saved by either
is restored by either.
"""

from __future__ import annotations

from typing import Final

from .emulator import Terminal
from .pyte_backend import PyteTerminal

AnyTerminal = Terminal | PyteTerminal

BACKENDS: Final[dict[str, type[Terminal] | type[PyteTerminal]]] = {"fast": Terminal, "pyte": PyteTerminal}


def make_terminal(name: str, columns: int = 80, lines: int = 25) -> AnyTerminal:
    """A `columns`x`lines` terminal of the backend called `name` ("fast" or "pyte")."""
    backend = BACKENDS.get(name)
    if backend is None:
        known = " or ".join(repr(known) for known in BACKENDS)
        raise ValueError(f"cannot make a terminal with emulator {name!r}: the emulators are {known}")
    return backend(columns, lines)

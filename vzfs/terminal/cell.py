"""One character cell of the terminal screen, as the emulator hands it to the renderer, and how many cells a character takes.

The emulator resolves every colour (default, 16-colour, 256-colour and true colour)
to a 24-bit ``0xRRGGBB`` integer, the sixteen basic ones as the Linux console's default
palette has them; the renderer needs no palette but to draw those sixteen as the
terminal's palette (``ESC ] P``) has them now. Attributes
are bit flags; REVERSE, DIM and CONCEAL are left for the renderer to apply (REVERSE so
that the cursor and selection can be drawn the same way; DIM and CONCEAL because they
act on the colours the renderer draws with, after its palette).
"""

from functools import lru_cache
from typing import Callable, NamedTuple

from wcwidth import wcwidth as _wcwidth

BOLD = 1
ITALIC = 2
UNDERLINE = 4
REVERSE = 8
STRIKETHROUGH = 16
BLINK = 32
WIDE = 64          # left half of a double-width character; the next cell is WIDE_CONT
WIDE_CONT = 128    # right half of a double-width character; its char is ""
DIM = 256          # SGR 2, faint: drawn at half intensity
CONCEAL = 512      # SGR 8, concealed: drawn in its background colour

# Combining characters joined to one cell's character at most; more are dropped.
MAX_COMBINING = 8

# The cells a character takes: 1, 2 (wide), 0 (combining) or -1 (not printable); the
# emulator asks for every character it draws outside ASCII.
wcwidth: Callable[[str], int] = lru_cache(maxsize=4096)(_wcwidth)

# The Linux console's default colours: its palette's colour 7 (grey) on colour 0 (palette.py).
DEFAULT_FG = 0xAAAAAA
DEFAULT_BG = 0x000000


class Cell(NamedTuple):
    char: str    # one character plus any combining marks; "" for WIDE_CONT
    fg: int      # 0xRRGGBB
    bg: int      # 0xRRGGBB
    flags: int   # BOLD | ITALIC | …


BLANK = Cell(" ", DEFAULT_FG, DEFAULT_BG, 0)

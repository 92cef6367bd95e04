"""What SGR parameters do to a pen (ECMA-48 §8.3.117, xterm ctlseqs "Character Attributes").

A pen is three integers: the foreground and background colour specs (palette.py:
default, a palette index or a true colour) and the cell flags (cell.py). Both
backends keep their pen so and hand ``apply_sgr`` the parameter string as the lexer
cut it, which both of xterm's forms of extended colours may be in: the semicolon form
(``38;5;N``, ``38;2;R;G;B``) and the ITU T.416 colon form (``38:2::R:G:B``, ``4:3``).
The fast engine caches the result per (pen, string), so this is off its hot path.
"""

from __future__ import annotations

from typing import Final

from .cell import BLINK, BOLD, CONCEAL, DIM, ITALIC, REVERSE, STRIKETHROUGH, UNDERLINE
from .palette import DEFAULT, TRUECOLOR
from .parser import number

# SGR attribute codes (ECMA-48 §8.3.117, xterm ctlseqs "Character Attributes"); 22 is
# "normal intensity", neither bold nor faint.
_FLAG_ON: Final = {1: BOLD, 2: DIM, 3: ITALIC, 4: UNDERLINE, 5: BLINK, 7: REVERSE, 8: CONCEAL,
                   9: STRIKETHROUGH}
_FLAG_OFF: Final = {22: BOLD | DIM, 23: ITALIC, 24: UNDERLINE, 25: BLINK, 27: REVERSE, 28: CONCEAL,
                    29: STRIKETHROUGH}


def apply_sgr(params: str, fg: int, bg: int, flags: int) -> tuple[int, int, int]:
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
            fg, bg, flags = _colon(part.split(":"), fg, bg, flags)
            continue
        code = number(part)
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
            colour, index = _extended_colour(parts, index)
            if colour is not None:
                if code == 38:
                    fg = colour
                else:
                    bg = colour
    return fg, bg, flags


def _extended_colour(parts: list[str], index: int) -> tuple[int | None, int]:
    """``5;N`` or ``2;R;G;B`` after 38/48: the colour spec and the next index."""
    if index >= len(parts):
        return None, index
    kind = parts[index]
    if kind == "5" and index + 1 < len(parts):
        value = number(parts[index + 1])
        return (value if value < 256 else None), index + 2
    if kind == "2" and index + 3 < len(parts):
        rgb = [number(part) for part in parts[index + 1:index + 4]]
        if max(rgb) > 255:
            return None, index + 4
        return TRUECOLOR | (rgb[0] << 16) | (rgb[1] << 8) | rgb[2], index + 4
    return None, index + 1


def _colon(sub: list[str], fg: int, bg: int, flags: int) -> tuple[int, int, int]:
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
            value = number(sub[2])
            colour = value if value < 256 else None
        elif sub[1] == "2":
            # 38:2:CS:R:G:B carries a colour-space id before R (T.416); 38:2:R:G:B not.
            values = sub[2:]
            if len(values) >= 4:
                values = values[1:4]
            if len(values) == 3:
                rgb = [number(value) for value in values]
                if max(rgb) <= 255:
                    colour = TRUECOLOR | (rgb[0] << 16) | (rgb[1] << 8) | rgb[2]
    except ValueError:
        colour = None
    if colour is None:
        return fg, bg, flags
    return (colour, bg, flags) if head == "38" else (fg, colour, flags)

"""Colour specifications as the SGR parser stores them, and their resolution to 0xRRGGBB.

A colour *spec* is a small JSON-friendly integer: ``DEFAULT`` (-1), a palette index
0..255, or ``TRUECOLOR | 0xRRGGBB``. Keeping the spec (not only the resolved value)
lets bold brighten the eight basic colours the way xterm's ``boldColors`` resource
and the Linux console do, and lets a snapshot restore the pen exactly.

The sixteen basic colours are the Linux console's (the domain's TERM is ``linux``),
and its default colours are two of them, as ``vc_def_color`` (0x07) makes them there:
default text is colour 7 on colour 0, so ``CSI 37 m`` changes nothing and bold default
text is colour 15.
"""

from typing import Final

from .cell import DEFAULT_BG, DEFAULT_FG

DEFAULT: Final = -1
TRUECOLOR: Final = 1 << 24

# linux/drivers/tty/vt/vt.c default_red, default_grn, default_blu (in SGR order:
# black, red, green, brown, blue, magenta, cyan, grey, then their bright forms).
LINUX_COLOURS: Final[tuple[int, ...]] = (
    0x000000, 0xAA0000, 0x00AA00, 0xAA5500, 0x0000AA, 0xAA00AA, 0x00AAAA, 0xAAAAAA,
    0x555555, 0xFF5555, 0x55FF55, 0xFFFF55, 0x5555FF, 0xFF55FF, 0x55FFFF, 0xFFFFFF,
)
DEFAULT_FG_INDEX: Final = 7
DEFAULT_BG_INDEX: Final = 0


def _build_palette() -> tuple[int, ...]:
    # 16..231 are the 6x6x6 cube and 232..255 the grey ramp of xterm's 256colres.pl.
    steps = (0x00, 0x5F, 0x87, 0xAF, 0xD7, 0xFF)
    cube = tuple(
        (steps[r] << 16) | (steps[g] << 8) | steps[b]
        for r in range(6) for g in range(6) for b in range(6)
    )
    greys = tuple(((8 + 10 * i) * 0x010101) for i in range(24))
    return LINUX_COLOURS + cube + greys


PALETTE: Final[tuple[int, ...]] = _build_palette()

_HEX_DIGITS: Final = frozenset("0123456789abcdefABCDEF")


def apply_palette_sequence(palette: list[int], sequence: str) -> bool:
    """Apply one of the Linux console's palette sequences, as the lexer cut it, to the
    sixteen `palette` colours; tell whether a colour changed.

    ``ESC ] R`` resets the palette; ``ESC ] P`` and seven hex digits n rr gg bb set
    colour n (console_codes(4); vt.c ESnonstd, ESpalette). A sequence aborted before
    its seventh digit changes nothing. Controls inside are the caller's to execute.
    """
    if sequence[2] == "R":
        changed = palette != list(LINUX_COLOURS)
        palette[:] = LINUX_COLOURS
        return changed
    digits = [char for char in sequence[3:] if char in _HEX_DIGITS]
    if len(digits) != 7:
        return False
    index, colour = int(digits[0], 16), int("".join(digits[1:]), 16)
    changed = palette[index] != colour
    palette[index] = colour
    return changed


def resolve_fg(spec: int, bold: bool) -> int:
    """The foreground 0xRRGGBB of a spec; bold brightens the default and colours 0..7
    (vt.c build_attr: bold sets the intensity bit of the colour index)."""
    if spec < 0:
        return PALETTE[DEFAULT_FG_INDEX + 8] if bold else DEFAULT_FG
    if spec >= TRUECOLOR:
        return spec - TRUECOLOR
    if bold and spec < 8:
        return PALETTE[spec + 8]
    return PALETTE[spec]


def resolve_bg(spec: int) -> int:
    """The background 0xRRGGBB of a spec (bold never changes the background)."""
    if spec < 0:
        return DEFAULT_BG
    if spec >= TRUECOLOR:
        return spec - TRUECOLOR
    return PALETTE[spec]

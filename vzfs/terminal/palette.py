"""Colour specifications as the SGR parser stores them, and their resolution to 0xRRGGBB.

A colour *spec* is a small JSON-friendly integer: ``DEFAULT`` (-1), a palette index
0..255, or ``TRUECOLOR | 0xRRGGBB``. Keeping the spec (not only the resolved value)
lets bold brighten the eight basic colours the way xterm's ``boldColors`` resource
and the Linux console do, and lets a snapshot restore the pen exactly.
"""

from typing import Final

from .cell import DEFAULT_BG, DEFAULT_FG

DEFAULT: Final = -1
TRUECOLOR: Final = 1 << 24


def _build_palette() -> tuple[int, ...]:
    # The first 16 entries are xterm's default resources (XTerm-col.ad, color0..color15);
    # 16..231 the 6x6x6 cube and 232..255 the grey ramp of xterm's 256colres.pl.
    basic = (
        0x000000, 0xCD0000, 0x00CD00, 0xCDCD00, 0x0000EE, 0xCD00CD, 0x00CDCD, 0xE5E5E5,
        0x7F7F7F, 0xFF0000, 0x00FF00, 0xFFFF00, 0x5C5CFF, 0xFF00FF, 0x00FFFF, 0xFFFFFF,
    )
    steps = (0x00, 0x5F, 0x87, 0xAF, 0xD7, 0xFF)
    cube = tuple(
        (steps[r] << 16) | (steps[g] << 8) | steps[b]
        for r in range(6) for g in range(6) for b in range(6)
    )
    greys = tuple(((8 + 10 * i) * 0x010101) for i in range(24))
    return basic + cube + greys


PALETTE: Final[tuple[int, ...]] = _build_palette()


def resolve_fg(spec: int, bold: bool) -> int:
    """The foreground 0xRRGGBB of a spec; bold brightens palette colours 0..7."""
    if spec < 0:
        return DEFAULT_FG
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

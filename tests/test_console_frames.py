"""Rendered frames of console output: what the VNC framebuffer shows for the sequences a
Linux console (TERM=linux) and xterm draw, checked pixel by pixel.

Each test feeds real bytes to a ``TerminalDisplay`` (the emulator and the renderer the
VNC server uses, no network) and reads its framebuffer.
"""

from __future__ import annotations

import numpy as np
import pytest

from vzfs.terminal import BACKENDS, AnyTerminal
from vzfs.vnc import font as fontmod
from vzfs.vnc.render import Renderer
from vzfs.vnc.server import TerminalDisplay

pytestmark = pytest.mark.skipif(
    not fontmod.UNIFONT_OTF.exists(),
    reason=f"{fontmod.UNIFONT_OTF} missing: install the Debian package fonts-unifont")

FONT = fontmod.default_font() if fontmod.UNIFONT_OTF.exists() else None
CW, CH = 8, 16


@pytest.fixture(params=sorted(BACKENDS))
def Terminal(request: pytest.FixtureRequest) -> type[AnyTerminal]:
    return BACKENDS[request.param]


def display(Terminal: type[AnyTerminal], data: bytes, columns: int = 10, lines: int = 3) -> TerminalDisplay:
    """A display fed `data`, its cursor hidden afterwards unless the data shows it."""
    shown = TerminalDisplay(Terminal(columns, lines), Renderer(columns, lines, FONT))
    shown.feed(b"\x1b[?25l" + data)
    return shown


def cell(shown: TerminalDisplay, column: int, line: int = 0) -> np.ndarray:
    return shown.framebuffer[line * CH:(line + 1) * CH, column * CW:(column + 1) * CW]


def colours(pixels: np.ndarray) -> set[int]:
    """The 0xRRGGBB colours present in some pixels."""
    flat = pixels.reshape(-1, 3).astype(np.uint32)
    return set((flat[:, 0] << 16 | flat[:, 1] << 8 | flat[:, 2]).tolist())


def test_colour_7_text_looks_like_default_text(Terminal: type[AnyTerminal]) -> None:
    shown = display(Terminal, b"X\x1b[37mX\x1b[0;1mX\x1b[37mX")
    assert np.array_equal(cell(shown, 0), cell(shown, 1))
    assert colours(cell(shown, 0)) == {0xAAAAAA, 0x000000}
    assert np.array_equal(cell(shown, 2), cell(shown, 3))
    assert colours(cell(shown, 2)) == {0xFFFFFF, 0x000000}


def test_a_decomposed_character_looks_like_its_composed_form(Terminal: type[AnyTerminal]) -> None:
    shown = display(Terminal, "e\u0301\u00e9".encode())
    assert shown.terminal.cells(0)[0].char == "e\u0301"
    assert np.array_equal(cell(shown, 0), cell(shown, 1))
    assert colours(cell(shown, 0)) == {0xAAAAAA, 0x000000}


def test_faint_text_is_drawn_at_half_intensity(Terminal: type[AnyTerminal]) -> None:
    shown = display(Terminal, b"\x1b[2mX\x1b[31mX\x1b[22mX")
    assert colours(cell(shown, 0)) == {0x555555, 0x000000}
    assert colours(cell(shown, 1)) == {0x550000, 0x000000}
    assert colours(cell(shown, 2)) == {0xAA0000, 0x000000}


def test_concealed_text_is_invisible(Terminal: type[AnyTerminal]) -> None:
    shown = display(Terminal, b"\x1b[44;8mX\x1b[7mX\x1b[28mX\x1b[0m \x1b[8m_\x1b[4m_")
    assert colours(cell(shown, 0)) == {0x0000AA}
    assert colours(cell(shown, 1)) == {0xAAAAAA}
    assert colours(cell(shown, 2)) == {0x0000AA, 0xAAAAAA}
    assert np.array_equal(cell(shown, 4), cell(shown, 3))
    assert np.array_equal(cell(shown, 5), cell(shown, 3))


def test_flash_shows_the_screen_reversed(Terminal: type[AnyTerminal]) -> None:
    """terminfo linux flash: CSI ? 5 h, a pause, CSI ? 5 l; the visual bell must show."""
    shown = display(Terminal, b"X \x1b[7mX\x1b[0m")
    normal = shown.framebuffer.copy()
    shown.feed(b"\x1b[?5h")
    assert np.array_equal(cell(shown, 0), normal[:CH, 2 * CW:3 * CW])
    assert np.array_equal(cell(shown, 2), normal[:CH, :CW])
    assert colours(cell(shown, 1)) == {0xAAAAAA}
    assert colours(cell(shown, 0, line=2)) == {0xAAAAAA}
    shown.feed(b"\x1b[?5l")
    assert np.array_equal(shown.framebuffer, normal)


@pytest.mark.parametrize(("style", "rows", "columns"), [
    (b"", slice(0, CH), slice(0, CW)),          # the default: a block
    (b"\x1b[2 q", slice(0, CH), slice(0, CW)),
    (b"\x1b[4 q", slice(CH - 2, CH), slice(0, CW)),
    (b"\x1b[3 q", slice(CH - 2, CH), slice(0, CW)),
    (b"\x1b[6 q", slice(0, CH), slice(0, 2)),
    (b"\x1b[5 q", slice(0, CH), slice(0, 2)),
])
def test_cursor_shape_follows_decscusr(Terminal: type[AnyTerminal], style: bytes, rows: slice,
                                       columns: slice) -> None:
    shown = display(Terminal, b"\x1b[?25h" + style)
    drawn = cell(shown, 0)
    cursor = np.zeros((CH, CW), bool)
    cursor[rows, columns] = True
    assert colours(drawn[cursor]) != {0x000000}
    assert colours(drawn[~cursor]) <= {0x000000}
    shown.feed(b"\x1b[?25l")
    assert colours(cell(shown, 0)) == {0x000000}


def test_the_palette_recolours_what_is_shown_and_reset_restores_it(Terminal: type[AnyTerminal]) -> None:
    """A Linux console theme: ESC ] P sets colours (the default background is colour 0),
    ESC ] R, as `reset` sends it, restores the Linux colours."""
    shown = display(Terminal, b"\x1b[31mX")
    normal = shown.framebuffer.copy()
    shown.feed(b"\x1b]P1ff0000\x1b]P0102030Y")
    assert colours(cell(shown, 0)) == {0xFF0000, 0x102030}
    assert colours(cell(shown, 1)) == {0xFF0000, 0x102030}
    assert colours(cell(shown, 2, line=2)) == {0x102030}
    shown.feed(b"\x1bc")
    assert colours(shown.framebuffer[CH:]) == {0x102030}
    shown.feed(b"\x1b]R\x1b[?25l\x1b[31mX")
    assert np.array_equal(shown.framebuffer, normal)


def test_a_restored_display_shows_the_palette(Terminal: type[AnyTerminal]) -> None:
    shown = display(Terminal, b"\x1b]P7ffffffX")
    restored = TerminalDisplay(Terminal.restore(shown.terminal.snapshot()), Renderer(10, 3, FONT))
    assert colours(cell(restored, 0)) == {0xFFFFFF, 0x000000}
    assert np.array_equal(restored.framebuffer, shown.framebuffer)

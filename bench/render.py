"""Benchmark of the renderer: full-screen and one-dirty-row render times for an 80×25 terminal.

Targets (issue 5): full-screen render ≤ 2 ms, one dirty row ≤ 0.1 ms. Times are medians
of many runs after a warm-up, so the glyph atlas is already filled, as it is in steady
state; `first_render_ms` shows the cold cost of rasterising a screenful of new glyphs.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from vzfs.terminal.cell import BOLD, DEFAULT_BG, REVERSE, UNDERLINE, WIDE, WIDE_CONT, Cell
from vzfs.vnc.render import Renderer

COLUMNS, LINES = 80, 25
PALETTE = [0xAAAAAA, 0xFF5555, 0x55FF55, 0xFFFF55, 0x5555FF, 0xFF55FF, 0x55FFFF, 0xFFFFFF]


def busy_screen(shift: int = 0) -> list[list[Cell]]:
    """A screen like a coloured `ls -l` with some bold, reverse, underline and CJK."""
    rows = []
    for y in range(LINES):
        row = []
        for x in range(COLUMNS):
            char = chr(33 + (x * 7 + y * 13 + shift) % 94)
            fg = PALETTE[(x // 10 + y) % len(PALETTE)]
            flags = (BOLD if x % 11 == 0 else 0) | (UNDERLINE if y % 7 == 0 else 0)
            row.append(Cell(char, fg, DEFAULT_BG, flags))
        rows.append(row)
    red = 0xFF5555
    rows[5][10:14] = [Cell("中", red, DEFAULT_BG, WIDE), Cell("", red, DEFAULT_BG, WIDE_CONT),
                      Cell("文", red, DEFAULT_BG, WIDE), Cell("", red, DEFAULT_BG, WIDE_CONT)]
    rows[24] = [Cell(c, 0x000000, 0xAAAAAA, REVERSE) for c in "-- status line --".ljust(COLUMNS)]
    return rows


def _median_ms(run: Callable[[], object], repeat: int = 200) -> float:
    run()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def full_render_ms() -> float:
    """Median time of `render_all` for a busy 80×25 screen (cell 8×16 → 640×400)."""
    renderer = Renderer(COLUMNS, LINES)
    screens = [busy_screen(0), busy_screen(1)]
    flip = iter(range(1 << 62))
    return _median_ms(lambda: renderer.render_all(screens[next(flip) & 1]))


def dirty_row_ms() -> float:
    """Median time of `render_rows` for one changed line, the per-keystroke case."""
    renderer = Renderer(COLUMNS, LINES)
    screen = busy_screen()
    renderer.render_all(screen)
    rows = [{12: screen[12]}, {12: screen[13]}]
    flip = iter(range(1 << 62))
    return _median_ms(lambda: renderer.render_rows(rows[next(flip) & 1]), 2000)


def scroll_ms() -> float:
    """Median time of a one-line `scroll` of the whole screen plus drawing the new line."""
    renderer = Renderer(COLUMNS, LINES)
    screen = busy_screen()
    renderer.render_all(screen)

    def scroll_one() -> None:
        renderer.scroll(0, LINES, 1)
        renderer.render_rows({LINES - 1: screen[3]})
    return _median_ms(scroll_one, 1000)


def first_render_ms() -> float:
    """One cold `render_all`: every glyph and colour is new to the atlas."""
    renderer = Renderer(COLUMNS, LINES)
    start = time.perf_counter()
    renderer.render_all(busy_screen())
    return (time.perf_counter() - start) * 1e3


if __name__ == "__main__":
    print(f"render full 80x25 (640x400)  {full_render_ms():8.3f} ms  (target <= 2 ms)")
    print(f"render one dirty row         {dirty_row_ms():8.3f} ms  (target <= 0.1 ms)")
    print(f"render scroll + new line     {scroll_ms():8.3f} ms")
    print(f"render first frame (cold)    {first_render_ms():8.3f} ms")

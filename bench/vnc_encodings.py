"""Measure RFB encodings on terminal frames: bytes per full frame, bytes per scrolled line, encode time.

Run: PYTHONPATH=. python bench/vnc_encodings.py
The frame is 80×25 cells of 9×16 px (720×400) of light-grey text on black,
rendered with DejaVu Sans Mono when Pillow finds it — once with binary glyphs
(a bitmap font) and once anti-aliased (many grey levels: the hard case).
"""

from __future__ import annotations

import statistics
import struct
import time

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vzfs.vnc import encodings as enc
from vzfs.vnc.rfb import RFBServerConnection

COLS, ROWS, CELL_W, CELL_H = 80, 25, 9, 16
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"
ENCODINGS = [enc.RAW, enc.ZLIB, enc.HEXTILE, enc.ZRLE, enc.TIGHT]


def text_lines(n: int) -> list[str]:
    """Plausible console output: an `ls -l`-like listing."""
    rng = np.random.default_rng(1)
    words = ["bash", "busybox", "init", "README.md", "vzfs", "console", "python3.11", "libc.so.6",
             "etc", "passwd", "hosts", "resolv.conf", "sbin", "ldconfig", "x86_64-linux-gnu"]
    lines = []
    for i in range(n):
        size = int(rng.integers(0, 10**7))
        name = "/".join(rng.choice(words, int(rng.integers(1, 4))))
        lines.append(f"-rwxr-xr-x 1 root root {size:>9} Nov 26 01:{i % 60:02d} {name}"[:COLS])
    return lines


def render(lines: list[str], antialias: bool) -> np.ndarray:
    img = Image.new("L", (COLS * CELL_W, len(lines) * CELL_H), 0)
    draw = ImageDraw.Draw(img)
    try:
        font: ImageFont.FreeTypeFont | ImageFont.ImageFont = ImageFont.truetype(FONT, 14)
    except OSError:
        font = ImageFont.load_default()
    if not antialias:
        draw.fontmode = "1"
    for row, line in enumerate(lines):
        for col, ch in enumerate(line):
            draw.text((col * CELL_W, row * CELL_H), ch, fill=0xAA, font=font)
    grey = np.asarray(img, dtype=np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)  # H×W×3 RGB, as vzfs.vnc.render draws


NOVNC_FORMAT = enc.PixelFormat(32, 24, False, True, 255, 255, 255, 0, 8, 16)


def connection(encoding: int, pixel_format: enc.PixelFormat | None = None) -> RFBServerConnection:
    conn = RFBServerConnection()
    conn.receive_data(b"RFB 003.008\n\x01\x01")
    conn.next_event()
    conn.send_server_init(COLS * CELL_W, ROWS * CELL_H, "bench")
    if pixel_format is not None:
        conn.receive_data(b"\0\0\0\0" + pixel_format.pack())
        conn.next_event()
    conn.receive_data(struct.pack(">BxH2i", 2, 2, encoding, enc.COPY_RECT))
    conn.next_event()
    return conn


def measure(antialias: bool, pixel_format: enc.PixelFormat | None = None) -> None:
    lines = text_lines(ROWS + 60)
    tall = render(lines, antialias)
    frame = tall[:ROWS * CELL_H]
    print(f"\n## {'anti-aliased' if antialias else 'binary'} glyphs, "
          f"{len(np.unique(frame[..., 0]))} distinct colours in the frame, "
          f"{'native pixel format' if pixel_format is None else 'noVNC pixel format (shifts 0/8/16)'}")
    print(f"{'encoding':10} {'full frame B':>13} {'encode ms':>10} {'scrolled line B':>16} {'line ms':>8}")
    for encoding in ENCODINGS:
        times, sizes = [], []
        for _ in range(5):
            conn = connection(encoding, pixel_format)
            t0 = time.perf_counter()
            data = conn.send_framebuffer_update(frame, [(0, 0, frame.shape[1], frame.shape[0])])
            times.append(time.perf_counter() - t0)
            sizes.append(len(data))
        # steady-state scrolling: each step moves the screen up one text row
        scroll_sizes, scroll_times = [], []
        for step in range(1, 51):
            shown = tall[step * CELL_H:(step + ROWS) * CELL_H]
            t0 = time.perf_counter()
            data = conn.send_framebuffer_update(
                shown, [(0, (ROWS - 1) * CELL_H, COLS * CELL_W, CELL_H)],
                [(0, 0, COLS * CELL_W, (ROWS - 1) * CELL_H, 0, CELL_H)])
            scroll_times.append(time.perf_counter() - t0)
            scroll_sizes.append(len(data))
        print(f"{enc.ENCODING_NAMES[encoding]:10} {sizes[0]:>13} {statistics.median(times) * 1e3:>10.1f} "
              f"{statistics.median(scroll_sizes):>16.0f} {statistics.median(scroll_times) * 1e3:>8.2f}")


if __name__ == "__main__":
    measure(antialias=False)
    measure(antialias=True)
    measure(antialias=False, pixel_format=NOVNC_FORMAT)

"""Throughput of the terminal emulator layer (both its backends) beside stock pyte, on the same bytes.

``bench/run`` calls ``measure(backend, data)``; ``python bench/emulator.py [MB]`` prints
every backend for plain and SGR-heavy input. Input is fed in 4 KiB chunks, the size
a pty master read returns (n_tty), unless ``chunk_size`` says otherwise.
"""

from __future__ import annotations

import random
import sys
import time
from typing import Callable

import pyte

from vzfs.terminal.emulator import Terminal
from vzfs.terminal.pyte_backend import PyteTerminal

CHUNK_SIZE = 4096


def plain_input(n_bytes: int) -> bytes:
    """Output like `seq 1 N` through a pty (ONLCR turns "\\n" into "\\r\\n")."""
    parts: list[bytes] = []
    size = 0
    number = 1
    while size < n_bytes:
        line = b"%d\r\n" % number
        parts.append(line)
        size += len(line)
        number += 1
    return b"".join(parts)[:n_bytes]


def sgr_input(n_bytes: int, seed: int = 4) -> bytes:
    """Output like `ls --color` of a large directory: a colour change per name.

    Names are random letters, so no two pieces of text repeat except the separators,
    as in a real listing.
    """
    rng = random.Random(seed)
    styles = [b"01;34", b"01;32", b"01;36", b"00", b"01;31", b"38;5;208", b"01;35",
              b"40;33;01", b"38;2;255;128;0", b"30;42", b"04;33"]
    letters = "abcdefghijklmnopqrstuvwxyz0123456789_-"
    extensions = ["", "", ".txt", ".log", ".py", ".tar.gz", ".c", ".o"]
    parts: list[bytes] = []
    size = 0
    while size < n_bytes:
        line = bytearray()
        visible = 0
        while True:
            name = ("".join(rng.choice(letters) for _ in range(rng.randint(3, 12)))
                    + rng.choice(extensions)).encode()
            if visible + len(name) + 2 > 78:
                break
            line += b"\x1b[0m\x1b[" + rng.choice(styles) + b"m" + name + b"\x1b[0m  "
            visible += len(name) + 2
        line += b"\r\n"
        parts.append(bytes(line))
        size += len(line)
    return b"".join(parts)[:n_bytes]


def cursor_input(n_bytes: int, seed: int = 5) -> bytes:
    """Output like `top` redrawing its screen: cursor addressing, erases and colour."""
    rng = random.Random(seed)
    parts: list[bytes] = []
    size = 0
    while size < n_bytes:
        row = rng.randint(1, 25)
        column = rng.randint(1, 60)
        field = "".join(rng.choice("0123456789 .%KMG") for _ in range(rng.randint(3, 18)))
        part = (b"\x1b[%d;%dH\x1b[%sm%s\x1b[m\x1b[K" % (
            row, column, rng.choice([b"1", b"7", b"32", b"0;36", b"38;5;66"]), field.encode()))
        parts.append(part)
        size += len(part)
    return b"".join(parts)[:n_bytes]


def _feeder(backend: str) -> Callable[[bytes], object]:
    if backend == "vzfs":
        return Terminal(80, 25).feed
    if backend == "pyte_backend":
        return PyteTerminal(80, 25).feed
    if backend == "pyte":
        stream = pyte.ByteStream(pyte.Screen(80, 25))
        return stream.feed
    raise ValueError(f"cannot measure backend {backend!r}: it is not 'vzfs', 'pyte_backend' or 'pyte'")


def measure(backend: str, data: bytes, chunk_size: int = CHUNK_SIZE) -> float:
    """Throughput of `backend` ('vzfs', 'pyte_backend' or 'pyte', all 80x25) on `data`, in MB/s (10^6 B/s)."""
    feed = _feeder(backend)
    chunks = [data[offset:offset + chunk_size] for offset in range(0, len(data), chunk_size)]
    start = time.perf_counter()
    for chunk in chunks:
        feed(chunk)
    elapsed = time.perf_counter() - start
    return len(data) / elapsed / 1e6


def main(argv: list[str]) -> None:
    megabytes = float(argv[1]) if len(argv) > 1 else 10.0
    size = int(megabytes * 1e6)
    for name, make in (("plain", plain_input), ("sgr", sgr_input), ("cursor", cursor_input)):
        data = make(size)
        for chunk in (4096, 65536):
            vzfs = measure("vzfs", data, chunk)
            print(f"{name:6} {len(data) / 1e6:5.1f} MB chunk {chunk:5}: vzfs {vzfs:7.2f} MB/s")
        backend_speed = measure("pyte_backend", data)
        print(f"{name:6} {len(data) / 1e6:5.1f} MB chunk  4096: pyte_backend {backend_speed:7.2f} MB/s")
        pyte_speed = measure("pyte", data)
        print(f"{name:6} {len(data) / 1e6:5.1f} MB chunk  4096: pyte {pyte_speed:7.2f} MB/s")


if __name__ == "__main__":
    main(sys.argv)

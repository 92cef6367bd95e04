"""VNC figures on a running busybox domain: keypress → framebuffer update latency, bytes per scrolled line.

A minimal RFB 3.8 client (security None) over a plain blocking socket. It does not
decode pixels: `parse_message` only finds where each server message ends and which
rectangles an update holds (rfbproto's framing of every encoding the client asks
for), so that timing a message's arrival costs no decoding. The client asks for
what a real one offers (Tight first) and keeps an incremental request outstanding,
re-sent as soon as an update arrives, as real clients do.
"""

from __future__ import annotations

import dataclasses
import os
import select
import signal
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

from .context import Context
from .host import parent_pid
from .instance import BenchError
from .registry import Values, measurement
from .stats import median, percentile

# rfbproto §Encodings (the numbers of vzfs/vnc/encodings.py).
RAW, COPY_RECT, HEXTILE, ZLIB, TIGHT, ZRLE = 0, 1, 5, 6, 7, 16
DESKTOP_SIZE, LAST_RECT, CURSOR, DESKTOP_NAME, EXTENDED_DESKTOP_SIZE = -223, -224, -239, -307, -308
# What a real client (TigerVNC, noVNC) offers, best first.
BEST_ENCODINGS = (TIGHT, ZRLE, ZLIB, COPY_RECT, HEXTILE, RAW,
                  DESKTOP_SIZE, EXTENDED_DESKTOP_SIZE, CURSOR, DESKTOP_NAME, LAST_RECT)

KEY_X = 0x78            # keysym 'x'
KEY_BACKSPACE = 0xFF08
KEY_CONTROL_L = 0xFFE3
KEY_U = 0x75

SETTLE_S = 0.3          # no update for this long: the screen has settled
CONNECT_TIMEOUT_S = 20.0
SCROLL_LINES = 400
PACE_US = 20_000        # between paced lines: well past the server's 4 ms coalescing
NS_PER_MS = 1e6


class Incomplete(Exception):
    """The buffer ends inside a message."""


@dataclasses.dataclass(frozen=True)
class Rect:
    x: int
    y: int
    w: int
    h: int
    encoding: int

    @property
    def pixels(self) -> bool:
        """A rectangle of the framebuffer (not a pseudo-encoding) that covers something."""
        return self.encoding >= 0 and self.w > 0 and self.h > 0


@dataclasses.dataclass(frozen=True)
class PixelSizes:
    """Bytes per pixel on the wire: PIXEL, Tight's TPIXEL, ZRLE's CPIXEL."""
    pixel: int
    tpixel: int

    @classmethod
    def of(cls, pixel_format: bytes) -> "PixelSizes":
        bpp, depth, _big, true = pixel_format[:4]
        maxes = struct.unpack(">HHH", pixel_format[4:10])
        packed = true and bpp == 32 and depth == 24 and maxes == (255, 255, 255)
        return cls(bpp // 8, 3 if packed else bpp // 8)


class _Reader:
    def __init__(self, data: bytes | bytearray, pos: int) -> None:
        self.data, self.pos = data, pos

    def skip(self, n: int) -> None:
        if self.pos + n > len(self.data):
            raise Incomplete
        self.pos += n

    def u8(self) -> int:
        self.skip(1)
        return self.data[self.pos - 1]

    def unpack(self, fmt: str) -> tuple[int, ...]:
        size = struct.calcsize(fmt)
        self.skip(size)
        return struct.unpack_from(fmt, self.data, self.pos - size)

    def compact_length(self) -> int:
        """Tight's 1–3 byte length."""
        b = self.u8()
        n = b & 0x7F
        if b & 0x80:
            b = self.u8()
            n |= (b & 0x7F) << 7
            if b & 0x80:
                n |= self.u8() << 14
        return n


def _hextile(r: _Reader, w: int, h: int, px: int) -> None:
    for ty in range(0, h, 16):
        th = min(16, h - ty)
        for tx in range(0, w, 16):
            tw = min(16, w - tx)
            mask = r.u8()
            if mask & 1:                      # Raw tile
                r.skip(tw * th * px)
                continue
            r.skip((px if mask & 2 else 0) + (px if mask & 4 else 0))
            if mask & 8:                      # AnySubrects
                r.skip(r.u8() * ((px if mask & 16 else 0) + 2))


def _tight(r: _Reader, w: int, h: int, sizes: PixelSizes) -> None:
    method = r.u8() >> 4
    if method == 8:                           # fill
        r.skip(sizes.tpixel)
        return
    if method == 9:                           # JPEG
        r.skip(r.compact_length())
        return
    if method & 8:
        raise ValueError(f"Tight compression control {method:#x}")
    data = w * h * sizes.tpixel
    if method & 4:                            # explicit filter
        kind = r.u8()
        if kind == 1:                         # palette
            colours = r.u8() + 1
            r.skip(colours * sizes.tpixel)
            data = (w + 7) // 8 * h if colours == 2 else w * h
        elif kind not in (0, 2):              # copy, gradient
            raise ValueError(f"Tight filter {kind}")
    r.skip(data if data < 12 else r.compact_length())


def parse_message(buf: bytes | bytearray, pos: int, sizes: PixelSizes) -> tuple[int, int, list[Rect]]:
    """Frame one server message at *pos*: (its type, the position after it, its rectangles).

    Raises `Incomplete` when *buf* ends inside it, ValueError on what rfbproto forbids
    or this client never asked for.
    """
    r = _Reader(buf, pos)
    kind = r.u8()
    rects: list[Rect] = []
    if kind == 0:                             # FramebufferUpdate
        _pad, count = r.unpack(">BH")
        for _ in range(count):
            x, y, w, h, encoding = r.unpack(">HHHHi")
            if encoding == LAST_RECT:
                break
            rects.append(Rect(x, y, w, h, encoding))
            px = sizes.pixel
            if encoding == RAW:
                r.skip(w * h * px)
            elif encoding == COPY_RECT:
                r.skip(4)
            elif encoding in (ZLIB, ZRLE):
                r.skip(r.unpack(">I")[0])
            elif encoding == HEXTILE:
                _hextile(r, w, h, px)
            elif encoding == TIGHT:
                _tight(r, w, h, sizes)
            elif encoding == DESKTOP_SIZE:
                pass
            elif encoding == EXTENDED_DESKTOP_SIZE:
                r.skip(r.u8() * 16 + 3)
            elif encoding == CURSOR:
                r.skip(w * h * px + (w + 7) // 8 * h)
            elif encoding == DESKTOP_NAME:
                r.skip(r.unpack(">I")[0])
            else:
                raise ValueError(f"encoding {encoding} was not asked for")
    elif kind == 1:                           # SetColourMapEntries
        _pad, _first, n = r.unpack(">BHH")
        r.skip(6 * n)
    elif kind == 2:                           # Bell
        pass
    elif kind == 3:                           # ServerCutText
        r.skip(3)
        r.skip(r.unpack(">I")[0])
    else:
        raise ValueError(f"server message type {kind}")
    return kind, r.pos, rects


@dataclasses.dataclass(frozen=True)
class Message:
    kind: int
    size: int                 # bytes on the wire
    rects: list[Rect]
    arrived_ns: int           # perf_counter_ns when its last byte was received

    @property
    def pixels(self) -> bool:
        return self.kind == 0 and any(rect.pixels for rect in self.rects)


class Client:
    """An RFB 3.8 client, security None, with the server's own pixel format."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.received = 0     # wire bytes after the handshake
        self.width = self.height = 0
        self.pixel_format = b""
        self.sizes = PixelSizes(4, 3)
        self._arrived = 0      # perf_counter_ns of the last receive
        self.updates = 0       # FramebufferUpdates received

    @classmethod
    def connect(cls, host: str, port: int, encodings: tuple[int, ...]) -> "Client":
        sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self = cls(sock)
        try:
            version = self._exactly(12)
            if version != b"RFB 003.008\n":
                raise BenchError(f"VNC server speaks {version!r}")
            sock.sendall(b"RFB 003.008\n")
            types = self._exactly(self._exactly(1)[0])
            if 1 not in types:
                raise BenchError(f"VNC server offers security types {list(types)}, not None")
            sock.sendall(b"\x01")
            if self._exactly(4) != b"\0\0\0\0":
                raise BenchError("VNC security None refused")
            sock.sendall(b"\x01")                            # ClientInit: shared
            self.width, self.height = struct.unpack(">HH", self._exactly(4))
            self.pixel_format = self._exactly(16)
            self._exactly(struct.unpack(">I", self._exactly(4))[0])   # the desktop's name
            self.sizes = PixelSizes.of(self.pixel_format)
            sock.sendall(struct.pack(f">BxH{len(encodings)}i", 2, len(encodings), *encodings))
        except BaseException:
            sock.close()
            raise
        sock.setblocking(False)
        return self

    def _exactly(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise BenchError("VNC server closed the connection during the handshake")
            out += chunk
        return out

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.setblocking(True)
        try:
            self.sock.sendall(data)
        finally:
            self.sock.setblocking(False)

    def request(self, incremental: bool) -> None:
        self.send(struct.pack(">BBHHHH", 3, incremental, 0, 0, self.width, self.height))

    @staticmethod
    def key_event(keysym: int, down: bool) -> bytes:
        return struct.pack(">BBxxI", 4, down, keysym)

    def receive(self, timeout: float) -> list[Message]:
        """The complete messages that arrive within *timeout* s (stops at the first batch)."""
        deadline = time.monotonic() + timeout
        while True:
            messages = self._parse()
            if messages:
                return messages
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                return []
            while True:
                try:
                    data = self.sock.recv(1 << 20)
                except BlockingIOError:
                    break
                if not data:
                    raise BenchError("VNC server closed the connection")
                self.buf += data
                self.received += len(data)
            self._arrived = time.perf_counter_ns()

    def _parse(self) -> list[Message]:
        messages, pos = [], 0
        while pos < len(self.buf):
            try:
                kind, end, rects = parse_message(self.buf, pos, self.sizes)
            except Incomplete:
                break
            messages.append(Message(kind, end - pos, rects, self._arrived))
            self.updates += kind == 0
            pos = end
        del self.buf[:pos]
        return messages


def _updates(client: Client, timeout: float) -> list[Message]:
    """Receive, re-requesting an incremental update after each one (as real clients do)."""
    messages = client.receive(timeout)
    if any(m.kind == 0 for m in messages):
        client.request(incremental=True)
    return messages


def _quiet(client: Client, quiet: float, limit: float = 30.0) -> int:
    """Take updates until none came for *quiet* s; their bytes."""
    deadline = time.monotonic() + limit
    size = 0
    while time.monotonic() < deadline:
        messages = _updates(client, quiet)
        if not messages:
            return size
        size += sum(m.size for m in messages)
    raise BenchError(f"the VNC screen did not settle within {limit:.0f} s")


def _until_pixels(client: Client, timeout: float = 5.0) -> int:
    """Wait for an update with a non-empty framebuffer rectangle; when its last byte came."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        for m in _updates(client, left):
            if m.pixels:
                return m.arrived_ns
    raise BenchError(f"no framebuffer update within {timeout:.0f} s of a keypress")


def _address(inst_read: Callable[[], str]) -> tuple[str, int]:
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    while not (text := inst_read().strip()):
        if time.monotonic() > deadline:
            raise BenchError("the domain's vnc file stayed empty")
        time.sleep(0.02)
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def _wait_screen(read: Callable[[], str], ok: Callable[[str], bool], what: str,
                 timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while not ok(screen := read()):
        if time.monotonic() > deadline:
            raise BenchError(f"{what} not on the screen within {timeout:.0f} s; it shows:\n{screen}")
        time.sleep(0.02)
    return screen


def _type(console: str, text: str) -> None:
    with open(console, "w") as f:
        f.write(text)


@dataclasses.dataclass(frozen=True)
class Scroll:
    lines: int          # lines the screen scrolled by
    bytes: int          # wire bytes received meanwhile
    updates: int        # FramebufferUpdates among them
    seconds: float      # from typing the command until the last update


def _scroll(client: Client, console: str, screen: Callable[[], str], command: str,
            lines: int) -> Scroll:
    """Type *command* (printing 1..*lines*, one a line) at the prompt of a full screen;
    take updates until the screen settles showing the last number and the prompt."""
    before, updates = client.received, client.updates
    t0 = time.monotonic()
    _type(console, command)
    deadline = t0 + 60
    while True:
        _quiet(client, SETTLE_S)
        text = screen()
        if f"\n{lines}\n" in text and _ends_with_prompt(text):
            break
        if time.monotonic() > deadline:
            raise BenchError(f"{command.strip()!r} did not end on the screen:\n{text}")
    # The command's own newline, then one per number: each scrolls the full screen by one.
    return Scroll(lines + 1, client.received - before, client.updates - updates,
                  round(time.monotonic() - t0 - SETTLE_S, 3))


def _ends_with_prompt(screen: str) -> bool:
    lines = [row for row in screen.splitlines() if row.strip()]
    return bool(lines) and ":/#" in lines[-1]


def raw_frame_bytes(host: str, port: int) -> tuple[int, int]:
    """One full frame as a Raw-only client gets it: (its bytes, width*height*bpp + headers)."""
    client = Client.connect(host, port, (RAW,))
    try:
        client.request(incremental=False)
        messages = [m for m in client.receive(10.0) if m.kind == 0]
        if not messages:
            raise BenchError("no full frame for the Raw client")
        expected = 4 + 12 + client.width * client.height * client.sizes.pixel
        return messages[0].size, expected
    finally:
        client.close()


def _server_pid(init_pid: int, name: str) -> int:
    """The domain's VNC server: vzfs-vnc:NAME, a grandchild of init's parent (the controller)."""
    controller = parent_pid(init_pid)
    comm = f"vzfs-vnc:{name}"[:15]
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                if f.read().strip() != comm:
                    continue
            if parent_pid(parent_pid(int(entry))) == controller:
                return int(entry)
        except (OSError, ValueError):
            continue
    raise BenchError(f"no VNC server process for domain {name}")


def _restart(inst: Any, name: str, host: str, port: int) -> float:
    """SIGKILL the VNC server; ms until a new one answers on the same port (issue 5:
    within a second). One sample: a server that keeps dying is restarted with backoff."""
    server = _server_pid(int(inst.read(name, "pid")), name)
    t0 = time.perf_counter_ns()
    os.kill(server, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1) as sock:
                if sock.recv(12) == b"RFB 003.008\n":
                    return (time.perf_counter_ns() - t0) / NS_PER_MS
        except OSError:
            pass
        time.sleep(0.002)
    raise BenchError("the VNC server was not restarted within 10 s")


@measurement("vnc_key_latency_ms_p50", "vnc_bytes_per_scrolled_line", "vnc_raw_frame_bytes",
             "vnc_bytes_per_scrolled_line_paced", "vnc_restart_ms")
def vnc(ctx: Context) -> Values:
    inst = ctx.instance()
    name = "vnc"
    inst.define(name, "")                     # busybox's /sbin/init: a shell on the console
    inst.start(name)

    def screen() -> str:
        return inst.read(name, "screen")

    _wait_screen(screen, lambda s: ":/#" in s, "the shell prompt")
    host, port = _address(lambda: inst.read(name, "vnc"))
    client = Client.connect(host, port, BEST_ENCODINGS)
    try:
        client.request(incremental=False)
        full_frame = _quiet(client, SETTLE_S)
        rows = client.height // 16

        # -- keypress → the update showing its echo -------------------------------------
        samples = 20 if ctx.settings.quick else 50
        paced_lines = 50 if ctx.settings.quick else 100
        warmup = 3
        latencies: list[float] = []
        press_x = client.key_event(KEY_X, True) + client.key_event(KEY_X, False)
        rub_out = client.key_event(KEY_BACKSPACE, True) + client.key_event(KEY_BACKSPACE, False)
        for i in range(warmup + samples):
            _quiet(client, 0.02)              # nothing in flight; a request is outstanding
            t0 = time.perf_counter_ns()
            client.send(press_x)
            arrived = _until_pixels(client)
            if i >= warmup:
                latencies.append((arrived - t0) / NS_PER_MS)
            _quiet(client, 0.02)
            client.send(rub_out)              # untimed: the line stays empty
            _until_pixels(client)
        _quiet(client, SETTLE_S)
        line = [row for row in screen().splitlines() if ":/#" in row][-1]
        if line.partition(":/#")[2].strip():
            raise BenchError(f"the typed x's were not rubbed out: {line!r}")

        # -- scrolling -------------------------------------------------------------------
        # Fill the screen first (untimed), so that every later newline scrolls it by one line.
        _type(inst.path(name, "console"), f"seq 1 {rows}\n")
        _wait_screen(screen, lambda s: _ends_with_prompt(s) and f"\n{rows}\n" in s,
                     "the filling seq")
        _quiet(client, SETTLE_S)
        # A burst (the output outruns the server's coalescing: few updates), then one
        # line per update (paced well past the coalescing delay: the worst case).
        burst = _scroll(client, inst.path(name, "console"), screen,
                        f"seq 1 {SCROLL_LINES}\n", SCROLL_LINES)
        paced = _scroll(client, inst.path(name, "console"), screen,
                        f"for i in $(seq 1 {paced_lines}); do echo $i; usleep {PACE_US}; done\n",
                        paced_lines)
    finally:
        client.close()
    restart_ms = _restart(inst, name, host, port)
    raw_bytes, raw_expected = raw_frame_bytes(host, port)
    if raw_bytes != raw_expected:
        raise BenchError(f"a Raw full frame is {raw_bytes} bytes, not {raw_expected}")
    ctx.meta["vnc_key_samples"] = len(latencies)
    return {
        "vnc_key_latency_ms_p50": median(latencies),
        "vnc_key_latency_ms_min": min(latencies),
        "vnc_key_latency_ms_p90": percentile(latencies, 90),
        "vnc_bytes_per_scrolled_line": burst.bytes / burst.lines,
        "vnc_scroll_lines": burst.lines,
        "vnc_scroll_bytes": burst.bytes,
        "vnc_scroll_updates": burst.updates,
        "vnc_scroll_s": burst.seconds,
        "vnc_bytes_per_scrolled_line_paced": paced.bytes / paced.lines,
        "vnc_scroll_paced_lines": paced.lines,
        "vnc_scroll_paced_bytes": paced.bytes,
        "vnc_scroll_paced_updates": paced.updates,
        "vnc_scroll_paced_s": paced.seconds,
        "vnc_raw_frame_bytes": raw_bytes,
        "vnc_full_frame_bytes": full_frame,
        "vnc_restart_ms": restart_ms,
        "vnc_framebuffer": f"{client.width}x{client.height}",
    }

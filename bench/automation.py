"""Automation (issue 9): how soon watchers see a change nobody wrote, and what hooks cost a start.

A crash is the change: init is killed from the host, and the clock runs until an
inotify watcher of `state` gets IN_MODIFY (with `state` then reading `crashed`),
and until a reader of `events` gets the `state crashed` line. A start with one
hook (a no-op script, run at prepare and start before init, and at started after)
is timed beside one without.
"""

import ctypes
import ctypes.util
import os
import select
import signal
import struct
import time

from .context import Context
from .instance import BenchError
from .lifecycle import DOMAIN_CONFIG, NS_PER_MS, SETTLE_S
from .registry import Values, measurement
from .stats import alternate, median, percentile

IN_MODIFY = 0x2
IN_CLOEXEC = 0o2000000
IN_NONBLOCK = 0o4000
EVENT = struct.Struct("iIII")        # struct inotify_event, before its name
WAIT_S = 5.0

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


class Watch:
    """An inotify watch for IN_MODIFY on one file (stdlib has no inotify)."""

    def __init__(self, path: str) -> None:
        self.fd = _libc.inotify_init1(IN_CLOEXEC | IN_NONBLOCK)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        if _libc.inotify_add_watch(self.fd, os.fsencode(path), IN_MODIFY) < 0:
            err = ctypes.get_errno()
            os.close(self.fd)
            raise OSError(err, "inotify_add_watch", path)

    def drain(self) -> int:
        """The IN_MODIFY events queued now."""
        count = 0
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return count
            pos = 0
            while pos < len(data):
                _wd, mask, _cookie, length = EVENT.unpack_from(data, pos)
                pos += EVENT.size + length
                count += bool(mask & IN_MODIFY)

    def close(self) -> None:
        os.close(self.fd)


def _crash_once(ctx: Context, name: str) -> tuple[float, float]:
    """Start *name*, kill its init from the host; ms until inotify and `events` saw it."""
    inst = ctx.instance()
    inst.start(name)
    time.sleep(SETTLE_S)
    pid = int(inst.read(name, "pid"))
    watch = Watch(inst.path(name, "state"))
    events = os.open(os.path.join(inst.mountpoint, "events"), os.O_RDONLY | os.O_NONBLOCK)
    try:
        time.sleep(SETTLE_S)       # the start's own touches come and go first
        watch.drain()
        t0 = time.perf_counter_ns()
        os.kill(pid, signal.SIGKILL)
        seen_inotify = seen_event = 0
        text = b""
        deadline = time.monotonic() + WAIT_S
        while not (seen_inotify and seen_event):
            if time.monotonic() > deadline:
                raise BenchError(f"a crash of domain {name} was not seen in {WAIT_S:g} s "
                                 f"(inotify: {bool(seen_inotify)}, events: {bool(seen_event)})")
            select.select([watch.fd, events], [], [], 0.5)
            now = time.perf_counter_ns()
            if not seen_inotify and watch.drain() and inst.read(name, "state") == "crashed":
                seen_inotify = now
            try:
                text += os.read(events, 65536)
            except BlockingIOError:
                pass
            if not seen_event and f" {name} state crashed\n".encode() in text:
                seen_event = now
        return (seen_inotify - t0) / NS_PER_MS, (seen_event - t0) / NS_PER_MS
    finally:
        watch.close()
        os.close(events)


@measurement("inotify_crash_ms_p50", "inotify_crash_ms_p99", "events_crash_ms_p50")
def crash_seen(ctx: Context) -> Values:
    inst = ctx.instance()
    name = "watched"
    inst.define_filled(name, DOMAIN_CONFIG)
    by_inotify, by_events = [], []
    for _ in range(ctx.settings.cycles):
        ms_inotify, ms_events = _crash_once(ctx, name)
        by_inotify.append(ms_inotify)
        by_events.append(ms_events)
        time.sleep(SETTLE_S)
    ctx.meta["crash_seen_cycles"] = ctx.settings.cycles
    return {"inotify_crash_ms_p50": median(by_inotify),
            "inotify_crash_ms_p99": percentile(by_inotify, 99),
            "events_crash_ms_p50": median(by_events)}


@measurement("start_with_hook_ms_p50", "start_without_hook_ms_p50")
def start_with_a_hook(ctx: Context) -> Values:
    inst = ctx.instance()
    name = "hooked"
    inst.define_filled(name, DOMAIN_CONFIG)
    hook = os.path.join(inst.hooks_dir, "50-noop")
    times: dict[str, list[float]] = {"with": [], "without": []}
    try:
        for i in range(ctx.settings.cycles):
            for side in alternate(i, ("with", "without")):
                if side == "with":
                    with open(hook, "w") as f:
                        f.write("#!/bin/sh\nexit 0\n")
                    os.chmod(hook, 0o755)
                times[side].append(inst.start(name) / NS_PER_MS)
                time.sleep(SETTLE_S)
                inst.kill(name)
                if side == "with":
                    os.unlink(hook)
                time.sleep(SETTLE_S)
    finally:
        if os.path.exists(hook):
            os.unlink(hook)
    return {"start_with_hook_ms_p50": median(times["with"]),
            "start_without_hook_ms_p50": median(times["without"])}

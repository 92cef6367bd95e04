"""How a change of a domain reaches those who look at its files: the filesystem's Observer.

The registry announces every change of a domain as one `Changed` (daemon/domain.py:
the names of the fields that changed); `Notifier` decides what that makes stale,
from the tables below, and makes it known three ways:

* **the kernel's page cache** — the small files in CACHED_FILES are read from it
  (fs/operations.py), made only from the fields in CACHED_FIELDS: a change of one of
  those drops the cached pages (`Invalidator`);
* **inotify** — a FUSE server's own changes raise no inotify events, so the files
  FILES_OF names for each changed field are touched by a process of the daemon's own
  (`Toucher`), whose writes the kernel reports as any writer's;
* **poll(2)** — the per-domain `events` file shows the fields in POLLED: a change of
  one bumps the domain's generation and wakes the readers waiting in poll (`Pollers`).

Domains that come or go without mkdir or rmdir (migrations) get or lose their inode
numbers here, and each line added to `events` touches that file.
"""

import logging
import os
import subprocess
import sys
import weakref
from typing import Any

import pyfuse3
import trio

from ..daemon.domain import Changed, Domain
from ..daemon.registry import Registry
from . import files
from .inodes import INO_DOMAINS, DomainInodes

log = logging.getLogger(__name__)

# Control files whose reads the kernel answers from its page cache: one FUSE request
# (READ) fewer per open+read+close. Their content is short and made only from the
# fields in CACHED_FIELDS, so every change of them is announced and the kernel's copy
# dropped then (Invalidator). The rest stay direct_io.
CACHED_FILES = frozenset({"state", "pid", "id"})
CACHED_FIELDS = frozenset({"state", "pid", "config"})
# The control files whose content a change of each field changes (`mounts`: the live
# mount table, which no field holds).
FILES_OF: dict[str, tuple[str, ...]] = {
    "state": ("state", "events"), "error": ("error", "events"),
    "vnc_restarts": ("vnc", "vnc_websocket", "events"),
    "pid": ("pid", "stats"), "migration": ("migrate_target",),
    "vnc_address": ("vnc",), "vnc_websocket": ("vnc_websocket",),
    "config": ("config",), "mounts": ("mounts",)}
# The fields the per-domain `events` file shows (files.show_events): its pollers wake.
POLLED = frozenset({"state", "error", "vnc_restarts"})


class Notifier:
    """The filesystem's observer of the registry (daemon.domain.Observer)."""

    def __init__(self, registry: Registry, inodes: DomainInodes) -> None:
        self.reg = registry
        self.inodes = inodes
        self.invalidator = Invalidator()
        self.toucher = Toucher()
        self.pollers = Pollers()
        self.cached_index = [i for i, f in enumerate(files.DOMAIN_FILES) if f.name in CACHED_FILES]

    async def run(self) -> None:
        """The invalidator's and the toucher's tasks, for the daemon's life."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.invalidator.run)
            nursery.start_soon(self.toucher.run)

    def changed(self, change: Changed) -> None:
        dom, fields = change.domain, change.fields
        base = self.inodes.base(dom)
        if base is not None and CACHED_FIELDS.intersection(fields):
            self.invalidator.mark([base + 1 + i for i in self.cached_index])
        names = list(dict.fromkeys(name for field in fields for name in FILES_OF.get(field, ())))
        if names and base is not None and self.reg.mountpoint:
            where = os.path.join(self.reg.mountpoint, "domains", dom.name)
            self.toucher.mark([os.path.join(where, name) for name in names])
        if POLLED.intersection(fields):
            self.pollers.wake(dom)

    def added(self, dom: Domain) -> None:
        self.inodes.assign(dom)

    def removed(self, dom: Domain) -> None:
        self.inodes.forget(dom.name)
        try:
            pyfuse3.invalidate_entry_async(INO_DOMAINS, os.fsencode(dom.name), ignore_enoent=True)
        except OSError:
            pass

    def emitted(self) -> None:
        # tail -f follows `events` by inotify (or by its size, each second).
        if self.reg.mountpoint:
            self.toucher.mark([os.path.join(self.reg.mountpoint, "events")])


class Pollers:
    """poll(2) on a domain's `events` file, as on sysfs and cgroup.events files: each
    domain has a generation, bumped at each change of what the file shows; an open
    file that last read an older one is ready (POLLPRI), and the handles of those
    waiting for the next change are notified when it comes."""

    def __init__(self) -> None:
        # Kept while the domain is: a handle's open file holds the domain.
        self.of: weakref.WeakKeyDictionary[Domain, _Polled] = weakref.WeakKeyDictionary()

    def generation(self, dom: Domain) -> int:
        polled = self.of.get(dom)
        return 0 if polled is None else polled.generation

    def wait(self, dom: Domain, fh: int, handle: Any) -> None:
        """Notify *handle* (pyfuse3's, opaque here) at the next change; a newer poll's
        handle of the same open file replaces its last."""
        self.of.setdefault(dom, _Polled()).handles[fh] = handle

    def drop(self, dom: Domain, fh: int) -> None:
        polled = self.of.get(dom)
        if polled is not None:
            polled.handles.pop(fh, None)

    def wake(self, dom: Domain) -> None:
        polled = self.of.setdefault(dom, _Polled())
        polled.generation += 1
        handles, polled.handles = polled.handles, {}
        for handle in handles.values():
            handle.notify()


class _Polled:
    def __init__(self) -> None:
        self.generation = 0
        self.handles: dict[int, Any] = {}       # open file → poll handle


def _invalidate(inodes: set[int]) -> None:
    for inode in inodes:
        try:
            pyfuse3.invalidate_inode(inode)
        except OSError:
            pass        # ENOENT: the kernel holds no such inode, so nothing cached


# The toucher process: paths on stdin, one per line. It opens each control file for
# writing and writes one byte at offset 0 (or, to an empty file, truncates it), so the
# kernel raises IN_MODIFY and IN_CLOSE_WRITE for a change the daemon made itself: a
# FUSE server's own changes raise no inotify events (FACTS.md). The daemon knows the
# toucher by its pid: its opens are direct, so the byte never enters the page cache,
# and its writes and truncations do nothing. The fstat first fetches the file's size
# (the daemon dropped the cached one with the change): a write then never extends the
# size the kernel holds, and a reader's GETATTR that the write makes the kernel
# disregard leaves it with that fresh size, not an older one.
TOUCHER = """
import os, sys
for line in sys.stdin.buffer:
    try:
        fd = os.open(line.rstrip(b"\\n"), os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        continue
    try:
        if os.fstat(fd).st_size:
            os.pwrite(fd, b"\\n", 0)
        else:
            os.ftruncate(fd, 0)
    except OSError:
        pass
    finally:
        os.close(fd)
"""


RESPAWN_DELAY = 0.1


class Toucher:
    """Touches control files whose content changed (TOUCHER), from a process of its own:
    in the event loop the write would wait for the loop to answer it, and a thread of
    the daemon can be held up by the loop's blocking read of /dev/fuse (pyfuse3 reads
    it holding the GIL) while the loop waits for that thread: a deadlock. A separate
    process is any other writer to the kernel."""

    def __init__(self) -> None:
        self.pending: dict[str, None] = {}      # paths, in order, once each
        self.wake = trio.Event()
        self.pid = 0                            # the toucher's: its writes are ours

    def mark(self, paths: list[str]) -> None:
        for path in paths:
            self.pending[path] = None
        self.wake.set()

    def is_ours(self, pid: int) -> bool:
        """Whether a request of *pid* is the toucher's."""
        return bool(self.pid) and pid == self.pid

    async def run(self) -> None:
        """The toucher's life; one that died (an OOM kill, a stray signal) is started
        again, and its batch is lost: inotify watchers miss those changes, no more."""
        while True:
            try:
                await self._serve()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                log.warning("the toucher process died; starting another")
                await trio.sleep(RESPAWN_DELAY)

    async def _serve(self) -> None:
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-S", "-c", TOUCHER], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.pid = proc.pid
        assert proc.stdin is not None
        try:
            while True:
                await self.wake.wait()
                self.wake = trio.Event()
                batch, self.pending = list(self.pending), {}
                await proc.stdin.send_all(b"".join(os.fsencode(p) + b"\n" for p in batch))
        finally:
            with trio.CancelScope(shield=True):
                await proc.stdin.aclose()
                with trio.move_on_after(2):
                    await proc.wait()
                if proc.returncode is None:
                    proc.kill()


class Invalidator:
    """Drops the kernel's cached copies of control files after their content changed.

    The notification runs in a thread: in the event loop it could wait for a page
    that a READ still queued for this same loop has locked, and never return.
    `flushed` waits until every change marked before it has been dropped: a
    write that changed a domain returns only once readers see the change, and an
    open is answered only once no file shows older content than the daemon holds.
    """

    def __init__(self) -> None:
        self.pending: set[int] = set()
        self.marked = 0
        self.done = 0
        self.running = False
        self.wake = trio.Event()
        self.progress = trio.Event()

    def mark(self, inodes: list[int]) -> None:
        self.pending.update(inodes)
        self.marked += 1
        self.wake.set()

    async def run(self) -> None:
        self.running = True
        try:
            while True:
                await self.wake.wait()
                self.wake = trio.Event()
                batch, self.pending = self.pending, set()
                upto = self.marked
                await trio.to_thread.run_sync(_invalidate, batch, abandon_on_cancel=True)
                self.done = upto
                self.progress.set()
                self.progress = trio.Event()
        finally:
            self.running = False
            self.progress.set()

    async def flushed(self) -> None:
        target = self.marked
        while self.running and self.done < target:
            await self.progress.wait()

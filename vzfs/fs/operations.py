"""The FUSE operations — and the only FUSE error boundary.

pyfuse3 tears the whole filesystem down when anything but FUSEError escapes a
handler, so every handler runs under `boundary`: VzfsError becomes its errno
(the sentence having been put in the domain's `error` by the handler), OSError
its errno, anything else EIO plus a log line. Cancellation passes through.

Inode numbers are fs/inodes.py's. What a change of a domain makes stale (cached
pages, inotify watchers, poll waiters) is fs/notify.py's: the registry tells it.
"""

import dataclasses
import errno
import functools
import inspect
import logging
import os
import select
import stat
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pyfuse3
import trio

from ..base.errors import VzfsError
from ..daemon import events, templates
from ..daemon.domain import Domain
from ..daemon.registry import Registry
from ..model import config as configmod
from ..wire.consolestream import skipped_marker
from . import files
from .files import ControlFile
from .inflight import InFlight
from .inodes import (DOMAIN_BASE, INO_DOMAINS, INO_EVENTS, INO_README, INO_TEMPLATES,
                     INO_VERSION, ROOT, TEMPLATE_BASE, DomainInodes)
from .notify import CACHED_FILES, Notifier

log = logging.getLogger(__name__)

ENTRY_TIMEOUT = 60.0
ATTR_TIMEOUT = 1.0
FILE_SIZE = 4096          # what sysfs reports; a hint for direct reads, the limit for cached ones

INTERRUPT_POLL = 0.1

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def signal_pending(pid: int) -> bool:
    """Whether thread *pid* has a signal pending that it does not block (proc(5) status)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
    except (FileNotFoundError, ProcessLookupError):
        return False
    pending = int(fields.get("SigPnd", "0"), 16) | int(fields.get("ShdPnd", "0"), 16)
    return bool(pending & ~int(fields.get("SigBlk", "0"), 16) & ~int(fields.get("SigIgn", "0"), 16))


def boundary(fn: F) -> F:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except VzfsError as exc:
            raise pyfuse3.FUSEError(exc.errno) from exc
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from exc
        except Exception:
            log.exception("FUSE %s failed", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None
    return wrapper  # type: ignore[return-value]


@dataclasses.dataclass
class Handle:
    inode: int
    domain: Domain | None
    cfile: ControlFile | None
    static: Callable[[], str] | None
    content: bytes | None = None
    pending: files.Transaction | None = None   # a whole-document file opened for writing
    cursor: int = 0             # `console`: the ring offset that file offset 0 stands for
    nonblock: bool = False
    opener: int = 0             # pid (thread id) that opened it, for signal checks
    events: bool = False        # `events`: cursor is the stream offset of file offset 0
    seq: int = 0                # `events`: the event at the reader's position (overflows)
    generation: int = -1        # poll files: the domain's generation last read (notify.Pollers)
    touch: bool = False         # opened by the daemon's Toucher: its writes do nothing
    positioned: bool | None = None   # `events`: read as a file (tail), not a stream
    writing: bool = False       # opened for writing by a user (not the toucher)
    wrote: bool = False         # a preemptible file: a command was written (see _command)
    # A preemptible file: the commands its writes let go of, whose outcome is the close's.
    commands: list[InFlight] = dataclasses.field(default_factory=list)


class Operations(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False
    enable_acl = False

    def __init__(self, registry: Registry) -> None:
        super().__init__()
        self.reg = registry
        self.started = time.time()
        self.templates = sorted(templates.available(registry.state_dir))
        self.inodes = DomainInodes()
        self.handles: dict[int, Handle] = {}
        self.held: dict[int, set[InFlight]] = {}     # inode → commands whose write waits
        self.next_fh = 1
        for dom in registry.domains.values():
            self.inodes.assign(dom)
        # Every change of the registry's domains is told to the notifier, which makes
        # it seen in the files (fs/notify.py).
        self.notifier = Notifier(registry, self.inodes)
        registry.observer = self.notifier

    def _toucher(self, ctx: Any) -> bool:
        return self.notifier.toucher.is_ours(ctx.pid)

    def _resolve(self, inode: int) -> tuple[Domain | None, ControlFile | None]:
        """Domain and control file of a domain inode, or (None, None)."""
        if inode < DOMAIN_BASE:
            return None, None
        dom, index = self.inodes.owner(inode)
        if dom is None or self.reg.domains.get(dom.name) is not dom:
            raise pyfuse3.FUSEError(errno.ENOENT)
        if index < 0:
            return dom, None
        if index >= len(files.DOMAIN_FILES):
            raise pyfuse3.FUSEError(errno.ENOENT)
        return dom, files.DOMAIN_FILES[index]

    def _attrs(self, inode: int, mode: int, mtime: float, size: int = 0) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = inode
        a.st_mode = mode
        a.st_nlink = 2 if stat.S_ISDIR(mode) else 1
        a.st_uid = 0
        a.st_gid = 0
        a.st_size = size
        a.st_blksize = 4096
        ns = int(mtime * 1e9)
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = ns
        a.entry_timeout = ENTRY_TIMEOUT
        a.attr_timeout = ATTR_TIMEOUT
        return a

    def _getattr(self, inode: int) -> pyfuse3.EntryAttributes:
        if inode == ROOT:
            return self._attrs(inode, stat.S_IFDIR | 0o755, self.started)
        if inode == INO_EVENTS:
            # A file that grows with each event (for tail -f; see events.py), whose
            # size and time a reader must never take from an old answer.
            a = self._attrs(inode, stat.S_IFREG | 0o444, self.reg.events_at or self.started,
                            self.reg.events.size)
            a.attr_timeout = 0
            return a
        if inode in (INO_README, INO_VERSION):
            return self._attrs(inode, stat.S_IFREG | 0o444, self.started, FILE_SIZE)
        if inode == INO_TEMPLATES:
            return self._attrs(inode, stat.S_IFDIR | 0o755, self.started)
        if inode == INO_DOMAINS:
            return self._attrs(inode, stat.S_IFDIR | 0o755, self.started)
        if TEMPLATE_BASE <= inode < TEMPLATE_BASE + len(self.templates):
            return self._attrs(inode, stat.S_IFREG | 0o444, self.started, FILE_SIZE)
        dom, cfile = self._resolve(inode)
        if dom is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        if cfile is None:
            return self._attrs(inode, stat.S_IFDIR | 0o755, dom.changed_at)
        if cfile.name in CACHED_FILES:
            # The kernel reads a cached file up to its size only: give the exact one.
            # A READ then fills the page exactly, never leaving the zeros of a short read.
            shown = cfile.show(self.reg, dom)
            assert isinstance(shown, str)
            return self._attrs(inode, stat.S_IFREG | cfile.mode, dom.changed_at,
                               len(shown.encode()))
        return self._attrs(inode, stat.S_IFREG | cfile.mode, dom.changed_at, FILE_SIZE)

    def _children(self, inode: int) -> list[tuple[str, int]]:
        if inode == ROOT:
            return [("README", INO_README), ("version", INO_VERSION), ("events", INO_EVENTS),
                    ("templates", INO_TEMPLATES), ("domains", INO_DOMAINS)]
        if inode == INO_TEMPLATES:
            return [(name, TEMPLATE_BASE + i) for i, name in enumerate(self.templates)]
        if inode == INO_DOMAINS:
            return [(name, self.inodes.base_of[name]) for name in sorted(self.reg.domains)
                    if name in self.inodes.base_of]
        dom, cfile = self._resolve(inode)
        if dom is not None and cfile is None:
            return [(f.name, inode + 1 + i) for i, f in enumerate(files.DOMAIN_FILES)]
        raise pyfuse3.FUSEError(errno.ENOTDIR)

    # -- metadata ops ---------------------------------------------------------------
    @boundary
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any) -> pyfuse3.EntryAttributes:
        wanted = os.fsdecode(name)
        if wanted == ".":
            return self._getattr(parent_inode)
        for child, ino in self._children(parent_inode):
            if child == wanted:
                return self._getattr(ino)
        raise pyfuse3.FUSEError(errno.ENOENT)

    @boundary
    async def getattr(self, inode: int, ctx: Any) -> pyfuse3.EntryAttributes:
        return self._getattr(inode)

    @boundary
    async def setattr(self, inode: int, attr: Any, fields: Any, fh: int | None,
                      ctx: Any) -> pyfuse3.EntryAttributes:
        # Only truncation (`> file` without O_TRUNC support, `truncate -s0`) is
        # accepted, and means nothing: control files have no stored bytes.
        entry = self._getattr(inode)
        if fields.update_mode or fields.update_uid or fields.update_gid:
            raise pyfuse3.FUSEError(errno.EPERM)
        if fields.update_size and not entry.st_mode & 0o200 and not self._toucher(ctx):
            raise pyfuse3.FUSEError(errno.EACCES)
        h = self.handles.get(fh) if fh is not None else None
        if fields.update_size and h is not None and h.pending is not None:
            # ftruncate(2): the transaction starts over.
            h.pending.truncate()
        # The kernel takes a SETATTR's reply as it is, with no check that a change
        # (and its invalidation) came in between: let no reader rely on it.
        entry.attr_timeout = 0
        return entry

    @boundary
    async def forget(self, inode_list: Any) -> None:
        return None

    @boundary
    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_namemax = 255
        s.f_files = len(self.reg.domains)
        return s

    # -- directories ------------------------------------------------------------------
    @boundary
    async def opendir(self, inode: int, ctx: Any) -> int:
        self._children(inode)
        return inode

    @boundary
    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        entries = [(".", fh), ("..", ROOT)] + self._children(fh)
        for i, (name, ino) in enumerate(entries[start_id:], start_id + 1):
            if name == "..":
                attrs = self._attrs(ROOT, stat.S_IFDIR | 0o755, self.started)
            else:
                attrs = self._getattr(ino)
            if not pyfuse3.readdir_reply(token, os.fsencode(name), attrs, i):
                break

    @boundary
    async def releasedir(self, fh: int) -> None:
        return None

    @boundary
    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: Any) -> pyfuse3.EntryAttributes:
        if parent_inode != INO_DOMAINS:
            raise pyfuse3.FUSEError(errno.EPERM)
        dom = self.reg.define(os.fsdecode(name))
        return self._getattr(self.inodes.assign(dom))

    @boundary
    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        if parent_inode != INO_DOMAINS:
            raise pyfuse3.FUSEError(errno.EPERM)
        dom_name = os.fsdecode(name)
        dom = self.reg.get(dom_name)
        try:
            self.reg.undefine(dom_name)
        except VzfsError as exc:
            self.reg.update(dom, error=exc.sentence)
            raise
        self.inodes.forget(dom_name)

    @boundary
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: Any) -> Any:
        raise pyfuse3.FUSEError(errno.EACCES)

    @boundary
    async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        raise pyfuse3.FUSEError(errno.EPERM)

    # -- files ---------------------------------------------------------------------------
    @boundary
    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        # Cached copies are dropped from a thread, one inode after another: an open
        # waits for the drops due, so a reader that saw one change (a new pid)
        # then sees the others made with it (the state) in every file it opens.
        writing = flags & os.O_ACCMODE != os.O_RDONLY
        if writing and not self._toucher(ctx):
            # This writer's open may next wait in the kernel for a held write's inode
            # lock: let that write go (fs.inflight).
            for command in self.held.get(inode, ()):
                command.preempt()
        await self.notifier.invalidator.flushed()
        dom, cfile = None, None
        static: Callable[[], str] | None = None
        if inode == INO_EVENTS:
            if writing and not self._toucher(ctx):
                raise pyfuse3.FUSEError(errno.EACCES)
            fh = self.next_fh
            self.next_fh += 1
            # A stream reader sees the events from when it opened.
            log_ = self.reg.events
            self.handles[fh] = Handle(inode, None, None, None, cursor=log_.size, seq=log_.end,
                                      nonblock=bool(flags & os.O_NONBLOCK), opener=ctx.pid,
                                      events=True, touch=writing)
            return pyfuse3.FileInfo(fh=fh, direct_io=True, keep_cache=False)
        if inode == INO_README:
            static = lambda: files.README  # noqa: E731
        elif inode == INO_VERSION:
            static = lambda: files.version_text(self.reg)  # noqa: E731
        elif TEMPLATE_BASE <= inode < TEMPLATE_BASE + len(self.templates):
            tname = self.templates[inode - TEMPLATE_BASE]
            static = lambda: files.template_text(self.reg, tname)  # noqa: E731
        else:
            dom, cfile = self._resolve(inode)
            if cfile is None:
                raise pyfuse3.FUSEError(errno.EISDIR)
        touch = writing and self._toucher(ctx) and cfile is not None
        if writing and (cfile is None or cfile.store is None) and not touch:
            raise pyfuse3.FUSEError(errno.EACCES)    # like kernfs for files without a store
        fh = self.next_fh
        self.next_fh += 1
        handle = Handle(inode, dom, cfile, static, opener=ctx.pid, touch=touch,
                        writing=writing and not touch)
        if writing and not touch and cfile is not None and cfile.whole:
            assert dom is not None
            what = f"cannot replace the {cfile.name} of domain {dom.name}"
            if flags & os.O_APPEND:
                self.reg.update(dom, error=f"{what}: it cannot be appended to (open it without "
                                          "O_APPEND, `>` not `>>`, and write a whole new one)")
                raise pyfuse3.FUSEError(errno.EINVAL)
            handle.pending = files.Transaction(configmod.MAX_BYTES, what)
            if flags & os.O_TRUNC:
                # libfuse asks for atomic O_TRUNC: it comes here, not as a SETATTR.
                handle.pending.truncate()
        if cfile is not None and cfile.stream:
            assert dom is not None
            handle.cursor = dom.console.ring.start
            handle.nonblock = bool(flags & os.O_NONBLOCK)
        self.handles[fh] = handle
        if touch:
            return pyfuse3.FileInfo(fh=fh, direct_io=True, keep_cache=True)
        if not writing and cfile is not None and cfile.name in CACHED_FILES:
            return pyfuse3.FileInfo(fh=fh, direct_io=False, keep_cache=True)
        # Seekable, `console` too: sftp-server (sshfs) seeks to 0 after it opens a file,
        # and a file that answers ESPIPE has its writes dropped and reads empty.
        return pyfuse3.FileInfo(fh=fh, direct_io=True, keep_cache=False)

    async def _read_events(self, h: Handle, off: int, size: int) -> bytes:
        log_ = self.reg.events
        while True:
            changed = self.reg.events_changed
            pos = h.cursor + off
            if pos < log_.first_offset:
                # Fell behind: told so where the missed events were, then the oldest
                # kept comes next (the file offset after the note maps to it).
                data = events.overflow(max(1, log_.first - h.seq))[:size]
                h.cursor = log_.first_offset - (off + len(data))
                h.seq = log_.first
                return data
            data, seq = log_.read_on(pos, size)
            if data:
                h.seq = seq
                return data
            await self._wait_for_more(h, changed)

    @staticmethod
    async def _wait_for_more(h: Handle, changed: trio.Event) -> None:
        """A stream reader at the end: EAGAIN without blocking, else wait for *changed*.

        A read the kernel has handed to us can only end by our answer (fuse(4): the
        reader then sleeps uninterruptibly), and pyfuse3 does not pass FUSE_INTERRUPT
        on. So look every so often whether the reader has a signal to take (Ctrl-C,
        timeout(1)) and let it go with EINTR."""
        if h.nonblock:
            raise pyfuse3.FUSEError(errno.EAGAIN)
        with trio.move_on_after(INTERRUPT_POLL):
            await changed.wait()
        if signal_pending(h.opener):
            raise pyfuse3.FUSEError(errno.EINTR)

    async def _read_stream(self, h: Handle, off: int, size: int) -> bytes:
        """`console` read at file offset *off*: offsets count from where the ring began
        when the file was opened, as for `events`, so a client that seeks back to 0 or to
        where it is, or preads at its position (sftp-server does both), reads on."""
        assert h.domain is not None
        console = h.domain.console
        while True:
            changed = console.changed
            data, _, skipped = console.ring.read(h.cursor + off, size)
            if skipped:
                # The reader fell behind the scrollback: tell it, then go on with the
                # oldest kept, which the file offset after the note now stands for.
                data = skipped_marker(skipped)[:size]
                h.cursor = console.ring.start - (off + len(data))
                return data
            if data:
                return data
            await self._wait_for_more(h, changed)

    @boundary
    async def read(self, fh: int, off: int, size: int) -> bytes:
        h = self.handles[fh]
        if h.events:
            if h.positioned is None:
                h.positioned = not events.is_stream_read(off, size, self.reg.events.size)
            if h.positioned:
                return self.reg.events.read_at(off, size)
            return await self._read_events(h, off, size)
        if h.cfile is not None and h.cfile.stream:
            return await self._read_stream(h, off, size)
        if off == 0 or h.content is None:
            # Like sysfs: the content is made at the read from offset 0 and the
            # rest of the file is read from that snapshot.
            if h.static is not None:
                text = h.static()
            else:
                assert h.cfile is not None and h.domain is not None
                h.generation = self.notifier.pollers.generation(h.domain)
                shown = h.cfile.show(self.reg, h.domain)
                text = await shown if inspect.isawaitable(shown) else shown
            h.content = text.encode()
        return h.content[off:off + size]

    @boundary
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        h = self.handles[fh]
        if h.touch:
            return len(buf)               # the toucher's: for inotify only, not a command
        dom, cfile = h.domain, h.cfile
        assert dom is not None and cfile is not None and cfile.store is not None
        if h.pending is not None:
            return self._gather(h, dom, cfile, off, bytes(buf))
        if cfile.preemptible:
            await self._command(h, dom, cfile, bytes(buf))
        else:
            await self._apply(dom, cfile, bytes(buf), h.nonblock)
        return len(buf)

    async def _apply(self, dom: Domain, cfile: ControlFile, data: bytes,
                     nonblock: bool = False) -> None:
        """Carry out one command on *dom* (a write's, or a transaction's at its close):
        a refusal's sentence goes into `error`, a success clears it (_succeeded), and
        either way it returns once readers see what it changed."""
        assert cfile.store is not None
        before = dom.error
        try:
            if cfile.stream:
                await dom.console.send_input(dom.name, data, nonblock)
            else:
                await cfile.store(self.reg, dom, data)
        except VzfsError as exc:
            self.reg.update(dom, error=exc.sentence)
            raise
        finally:
            await self.notifier.invalidator.flushed()
        self._succeeded(dom, cfile, before)

    def _succeeded(self, dom: Domain, cfile: ControlFile, before: str) -> None:
        """A command succeeded: `error` (the last failure) is cleared — unless a condition
        came up while it ran (init died during its start, the VNC server cannot listen):
        that is newer, and stays."""
        if cfile.stream:
            return
        if dom.error == before or dom.error != dom.condition:
            self.reg.update(dom, error="")

    async def _command(self, h: Handle, dom: Domain, cfile: ControlFile, data: bytes) -> None:
        """A preemptible file's write. What the domain's state refuses fails here, at
        once; the command then runs as a task (InFlight), and the write waits for it —
        unless another writer opens the file meanwhile, or has it open and has not
        written yet (its write may be waiting in the kernel for ours): then the write
        returns, and the command's outcome is the close's (flush)."""
        if cfile.check is not None:
            try:
                cfile.check(self.reg, dom, data)
            except VzfsError as exc:
                self.reg.update(dom, error=exc.sentence)
                raise

        @boundary
        async def apply() -> None:
            await self._apply(dom, cfile, data)

        assert self.reg.nursery is not None
        command = InFlight.start(self.reg.nursery, apply)
        h.wrote = True
        held = self.held.setdefault(h.inode, set())
        held.add(command)
        if any(o is not h and o.inode == h.inode and o.writing and not o.wrote
               for o in self.handles.values()):
            command.preempt()
        try:
            ended = await command.wait_held()
        finally:
            held.discard(command)
            if not held and self.held.get(h.inode) is held:
                del self.held[h.inode]
        if ended:
            await command.wait_outcome()
        else:
            # The writer's close waits for it — not a close that came while the write
            # was held: that one closed another copy of the descriptor (a forked
            # child's close-on-exec), not the writer's.
            h.commands.append(command)

    def _gather(self, h: Handle, dom: Domain, cfile: ControlFile, off: int, buf: bytes) -> int:
        """One write to a whole-document file: gathered for the close (flush), and
        refused at once when what is gathered can no longer become valid."""
        tx = h.pending
        assert tx is not None
        if tx.failed:
            # An earlier write of this open file was refused (`error` says why): nothing
            # of it will be applied, whatever comes after.
            raise pyfuse3.FUSEError(tx.failed)
        try:
            tx.write(off, buf)
            if cfile.check is not None and tx.due():
                tx.mark_checked()
                cfile.check(self.reg, dom, bytes(tx.data))
        except VzfsError as exc:
            tx.failed = exc.errno
            self.reg.update(dom, error=exc.sentence)
            raise
        return len(buf)

    @boundary
    async def flush(self, fh: int) -> None:
        """close(2) of an open file (each close of a dup of it, too): a whole-document
        file's transaction is applied here, once, whole, and a refusal fails close(2).
        (release cannot: its answer reaches nobody.)"""
        h = self.handles.get(fh)
        if h is None:
            return
        if h.commands:
            # Commands whose writes were let go of (preempted): the close waits for
            # them, and fails with the first failure's errno (`error` has its sentence).
            commands, h.commands = h.commands, []
            for command in commands:
                await command.ended.wait()
            for command in commands:
                await command.wait_outcome()
        if h.pending is None:
            return
        tx, dom, cfile = h.pending, h.domain, h.cfile
        if tx.failed:
            # The refused write said why in `error`; the close says it again.
            raise pyfuse3.FUSEError(tx.failed)
        if not tx.ready():
            return
        assert dom is not None and cfile is not None
        tx.dirty = False
        await self._apply(dom, cfile, bytes(tx.data))

    @boundary
    async def poll(self, inode: int, fh: int, poll_handle: Any, ctx: Any) -> int:
        """Like sysfs and cgroup.events: always readable, and POLLPRI|POLLERR once what
        the file shows changed since this open file last read it from the start."""
        h = self.handles.get(fh)
        ready = select.POLLIN | select.POLLRDNORM
        if h is None or h.domain is None or h.cfile is None or not h.cfile.poll:
            return ready
        if self.notifier.pollers.generation(h.domain) != h.generation:
            return ready | select.POLLPRI | select.POLLERR
        if poll_handle is not None:
            self.notifier.pollers.wait(h.domain, fh, poll_handle)
        return ready

    @boundary
    async def release(self, fh: int) -> None:
        h = self.handles.pop(fh, None)
        if h is not None and h.domain is not None:
            self.notifier.pollers.drop(h.domain, fh)

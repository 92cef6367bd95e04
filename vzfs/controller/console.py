"""The domain's console in its controller: the pty, the scrollback ring, the terminal
emulator that keeps the screen, and the console connections that follow them.

Theory of operation
-------------------
The container's /dev/console is the slave of a pty whose master the controller holds
(the keeper holds it too, so that it outlives the controller). One task, `drain`, reads
the master as fast as the container writes, in batches, into a bounded ring with
absolute offsets (wire/consolestream.Ring). Another, `feed_terminal`, keeps the
emulator up with the ring on its own, so that a slow emulator never slows the
container: one that falls more than the ring behind goes on from the ring's start (the
screen then shows the latest output, which is what a screen is for). Every reader —
each console connection (`serve`), the VNC server's feed (vncsupervisor.py) — follows
the ring with a cursor of its own and waits on `changed`, an event replaced at each
append. Input — typed on console connections or in VNC clients, and the emulator's
answers to the application's DA/DSR queries — is written to the master in order, under
one lock, waiting while the pty is full.
"""

import fcntl
import os
import struct
import sys
import termios

import trio

from ..model.idmap import IdMap
from ..terminal import BACKENDS, AnyTerminal, make_terminal
from ..wire.consolestream import FrameDecoder, FrameError, Ring, data_frame
from . import screenstate

SCROLLBACK = 1 << 20
READ_BATCH = 1 << 18
FEED_CHUNK = 1 << 18
SMALL_BATCH = 16 << 10
GATHER_S = 0.001
SEND_CHUNK = 1 << 16
DEFAULT_COLUMNS, DEFAULT_LINES = 80, 25
MIN_SIZE, MAX_SIZE = 2, 1000      # columns and lines a console may have
TTY_GID = 5                       # the tty group inside (devpts gid=5)


def fits(columns: object, lines: object) -> bool:
    return (isinstance(columns, int) and isinstance(lines, int)
            and MIN_SIZE <= columns <= MAX_SIZE and MIN_SIZE <= lines <= MAX_SIZE)


class Console:
    """One domain's console (module docstring). *ready*: a blank terminal the zygote's
    spare made while it waited, taken when it is of the *emulator* wanted, at the
    default size (the emulator's first allocations cost most of a millisecond in a fresh
    fork)."""

    def __init__(self, emulator: str, ready: AnyTerminal | None = None) -> None:
        self.emulator = emulator
        self.ring = Ring(SCROLLBACK)
        self.changed = trio.Event()           # replaced at each append: readers wait on it
        self.screen_changed = trio.Event()
        self.input_lock = trio.Lock()
        self.columns, self.lines = DEFAULT_COLUMNS, DEFAULT_LINES
        if (ready is not None and type(ready) is BACKENDS.get(emulator)
                and (ready.columns, ready.lines) == (self.columns, self.lines)):
            self.term: AnyTerminal = ready
        else:
            self.term = make_terminal(emulator, self.columns, self.lines)
        self.fed = 0                 # ring offset the emulator has consumed
        self.master = -1
        self.slave = -1

    # -- set-up (synchronous: before trio runs) -----------------------------------------
    def open_pty(self) -> None:
        self.master, self.slave = os.openpty()
        self.set_winsize()
        os.set_inheritable(self.master, False)
        os.set_inheritable(self.slave, False)
        os.set_blocking(self.master, False)

    def own(self, idmap: IdMap | None) -> None:
        """The pty belongs to the domain's root (and tty group), or root inside could not
        open it: the host's root is nobody in a user namespace."""
        if idmap is not None:
            os.fchown(self.slave, idmap.uid, idmap.gid + TTY_GID)

    def load_saved(self, rootfs: str, consume: bool, name: str) -> None:
        """Show the screen saved on the root (screenstate: before a checkpoint), if any.

        The file is the container's to write, so anything wrong with it is logged and
        ignored: a bad file costs the old screen, never the start."""
        try:
            with screenstate.root(rootfs) as root_fd:
                snapshot = screenstate.load(root_fd, consume=consume)
            if snapshot is None:
                return
            columns, lines = snapshot.get("columns"), snapshot.get("lines")
            if not fits(columns, lines):
                raise ValueError(f"the saved screen is {columns}x{lines}")
            term = type(self.term).restore(snapshot)
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            print(f"vzfs: {name}: not restoring the saved screen: {exc}",
                  file=sys.stderr, flush=True)
            return
        self.term, self.columns, self.lines = term, term.columns, term.lines

    def save(self, rootfs: str) -> str:
        """Save the screen on the root (for the next start); its path inside."""
        with screenstate.root(rootfs) as root_fd:
            screenstate.save(root_fd, self.term.snapshot())
        return f"/{screenstate.DIR}/{screenstate.FILE}"

    def take_size(self, columns: int, lines: int) -> None:
        """The size a checkpoint's tree had (when no saved screen said so)."""
        if (columns, lines) != (self.columns, self.lines):
            self.columns, self.lines = columns, lines
            self.term.resize(columns, lines)
            self.set_winsize()

    def take_over(self) -> None:
        """A controller taking a running domain over: a blank terminal at the size the
        pty has, and an empty ring (what the dead controller had is gone with it)."""
        lines, columns, _, _ = struct.unpack(
            "HHHH", fcntl.ioctl(self.master, termios.TIOCGWINSZ, b"\0" * 8))
        if fits(columns, lines):
            self.columns, self.lines = columns, lines
        self.term = make_terminal(self.emulator, self.columns, self.lines)
        self.ring = Ring(SCROLLBACK)
        self.fed = 0

    def set_winsize(self) -> None:
        fcntl.ioctl(self.master, termios.TIOCSWINSZ,
                    struct.pack("HHHH", self.lines, self.columns, 0, 0))

    def resize(self, columns: int, lines: int) -> None:
        if not fits(columns, lines):
            raise ValueError("size out of range")
        self.columns, self.lines = columns, lines
        self.term.resize(columns, lines)
        # TIOCSWINSZ makes the kernel send SIGWINCH to the tty's foreground group.
        self.set_winsize()

    # -- output ------------------------------------------------------------------
    def wake(self) -> None:
        """Wake every reader waiting on `changed`."""
        changed, self.changed = self.changed, trio.Event()
        changed.set()

    async def drain(self) -> None:
        """Read the pty master as fast as the container writes, into the ring.

        Reads are batched (everything available, up to READ_BATCH) so that the
        container never waits on a full pty buffer while subscribers catch up.
        """
        while True:
            await trio.lowlevel.wait_readable(self.master)
            got = self.read_available(READ_BATCH)
            if not got:
                await trio.sleep(0.01)
                continue
            if got < SMALL_BATCH:
                # A writer making many small writes (a line each) would have us
                # wake per line; a millisecond lets its output gather (at most
                # a millisecond more on a typed character's echo).
                await trio.sleep(GATHER_S)

    def read_available(self, limit: int) -> int:
        """Append everything the pty master has now (up to about *limit* bytes) to the
        ring; return how many bytes that was."""
        batch = bytearray()
        while len(batch) < limit:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:            # EAGAIN: drained; EIO: no slave open right now
                break
            if not chunk:
                break
            batch += chunk
        if batch:
            self.ring.append(bytes(batch))
            self.wake()
        return len(batch)

    async def feed_terminal(self, nursery: trio.Nursery) -> None:
        """Keep the emulator up with the ring (module docstring); its answers to the
        application go back as typed input, in tasks of *nursery*."""
        while True:
            changed = self.changed
            if self.fed < self.ring.end:
                data, self.fed, _ = self.ring.read(self.fed, FEED_CHUNK)
                update = self.term.feed(data)
                if update.replies:
                    # DA/DSR/CPR answers go back to the application, as typed input.
                    nursery.start_soon(self.write, update.replies)
                if update.dirty or update.scrolls:
                    screen, self.screen_changed = self.screen_changed, trio.Event()
                    screen.set()
                await trio.lowlevel.checkpoint()
            else:
                await changed.wait()

    async def settle(self) -> None:
        """Read what is left in the pty and let the emulator take it all."""
        self.read_available(SCROLLBACK)
        with trio.move_on_after(1):
            while self.fed < self.ring.end:
                await trio.sleep(0.001)

    # -- console connections -----------------------------------------------------------
    async def serve(self, stream: trio.SocketStream, rest: bytes) -> None:
        """Serve one console connection: the ring from its start, then live; input back.
        *rest*: what came on the connection after its request."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._input, stream, rest, nursery.cancel_scope)
            cursor = self.ring.start
            try:
                while True:
                    changed = self.changed
                    if cursor < self.ring.end:
                        data, new, _ = self.ring.read(cursor, SEND_CHUNK)
                        await stream.send_all(data_frame(new - len(data), data))
                        cursor = new
                    else:
                        await changed.wait()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                nursery.cancel_scope.cancel()

    async def _input(self, stream: trio.SocketStream, rest: bytes,
                     scope: trio.CancelScope) -> None:
        frames = FrameDecoder()
        try:
            pending = [rest] if rest else []
            while True:
                data = pending.pop() if pending else await stream.receive_some(65536)
                if not data:
                    break
                for kind, _, payload in frames.feed(data):
                    if kind == "I":
                        await self.write(payload)
        except (trio.BrokenResourceError, trio.ClosedResourceError, FrameError):
            pass
        scope.cancel()

    async def write(self, data: bytes) -> None:
        """Type *data* into the console (the pty master), in order, waiting when it is full."""
        async with self.input_lock:
            view = memoryview(data)
            while view:
                try:
                    n = os.write(self.master, view)
                    view = view[n:]
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(self.master)

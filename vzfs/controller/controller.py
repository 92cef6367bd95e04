"""The per-domain controller process: creates the container, supervises it, obeys the daemon.

One controller runs per running domain. The zygote's spare that takes a start
request creates the container (so it starts without importing anything), lives
in its own session, and once the start is reported splits in two (keeper.py):
it stays the domain's *keeper*, init's parent, and forks the controller proper,
which runs everything else under trio and may die without taking the domain
down — the keeper forks another, which takes over (`Controller.reattach`). The
controller outlives the daemon: the daemon talks to it over a unix socket in the
domain's directory and finds it again after a restart. When the domain ends,
the controller records the outcome in `last_exit.json`, tells every connected
daemon, and exits, and so does the keeper.
"""

import dataclasses
import errno
import fcntl
import json
import math
import os
import shutil
import signal
import socket
import stat
import struct
import sys
import termios
import time
import traceback
from typing import Any, NoReturn

import trio

from ..base import proctitle
from ..base.atomicfile import atomic_write
from ..base.errors import VzfsError
from ..kernel import cgroups, idshift
from ..kernel import mounts as kmounts
from ..model import config as configmod
from ..model.idmap import IdMap
from ..model.mountspec import MountSpec
from ..terminal import BACKENDS, make_terminal
from ..vnc import process as vncprocess
from ..wire.consolestream import (
    FrameDecoder,
    FrameError,
    Ring,
    data_frame,
    json_frame,
    parse_json_frame,
)
from ..wire.framing import Decoder, Message, ProtocolError, encode, reply_error, reply_ok
from ..wire.messages import Malformed
from . import checkpoint, container, paths, screenstate, vncspawn
from . import keeper as keepermod

SCROLLBACK = 1 << 20
READ_BATCH = 1 << 18
FEED_CHUNK = 1 << 18
SMALL_BATCH = 16 << 10
GATHER_S = 0.001
DEFAULT_COLUMNS, DEFAULT_LINES = 80, 25
LOG_BYTES = 1 << 20
LOG_CHECK_S = 30.0          # how often a running controller bounds its log
VNC_CHUNK = 1 << 16
VNC_FAST_RESTART = 0.05    # the first restart after a crash is at once (issue 5: within a second)
VNC_MAX_BACKOFF = 60.0     # a server that keeps dying (or cannot listen) is tried less and less often
VNC_STABLE_S = 10.0        # a server that ran this long resets the backoff
MAX_STOP_TIMEOUT = 86400.0
KEEPER_EXIT_WAIT = 2.0     # for the keeper to go once the end is recorded
TTY_GID = 5                        # the tty group inside (devpts gid=5)
REBOOT_SIGNAL = signal.SIGHUP      # reboot(2) in a pid namespace kills init with SIGHUP
HALT_SIGNAL = signal.SIGINT        # … and with SIGINT for halt and power-off


def describe_exit(status: int) -> tuple[str, str]:
    """Classify init's wait status: ("stopped"|"rebooted"|"crashed", words)."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == HALT_SIGNAL:
            return "stopped", "init halted the system"
        if sig == REBOOT_SIGNAL:
            return "rebooted", "init rebooted the system"
        return "crashed", f"init was killed by signal {sig} ({signal.Signals(sig).name})"
    code = os.WEXITSTATUS(status)
    if code == 0:
        return "stopped", "init exited with status 0"
    return "crashed", f"init exited with status {code}"


class Controller:
    def __init__(self, request: dict[str, Any]) -> None:
        self.name: str = request["name"]
        self.state_dir: str = request["state_dir"]
        self.cfg = configmod.from_dict(request["config"], name=self.name, default_id=None)
        self.rootfs: str = request["rootfs"]
        # What the spare prepared while it waited: one of each kind (container.prepare).
        self.prepared: list[container.PreparedInit] = list(request.get("prepared") or ())
        # The mounts vzfs made in the container (configured, then added and removed live):
        # a reboot inside re-applies them, a checkpoint names them to CRIU (mounts.json).
        self.mounts: list[MountSpec] = [
            MountSpec(m.source, m.target, tuple(o for o in m.options.split(",") if o))
            for m in self.cfg.mounts]
        self.layout = cgroups.Layout(**request["layout"])
        self.cgroup = cgroups.Cgroup(self.layout, request["cgroup"])
        self.pid = 0
        self.started_at = 0.0
        self.state = "starting"
        # Suspend and resume (checkpoint.py): the CRIU command the daemon found, and
        # whether this controller restores the domain's checkpoint instead of booting.
        self.criu: str = request.get("criu", "")
        self.criu_error: str = request.get("criu_error", "")    # "errno sentence" when none
        self.restoring = bool(request.get("restore"))
        # A migration's restore: the images it brought, the memory coming lazily.
        self.images: str | None = request.get("images")
        self.lazy = bool(request.get("lazy"))
        self.migration: Any = None       # the outgoing migration under way (vzfs.migrate)
        self.migrating = False           # its dump runs: init's death may be the move
        self.migrated = False
        self.migrate_done = trio.Event()
        self.migration_target = ""
        self.suspending = False
        self.suspended = False          # the dump succeeded: init's death is the suspend
        self.suspend_done = trio.Event()
        self.restore_figures: dict[str, float] = {}
        self.stop_requested = False
        self.exited = trio.Event()
        self.ended = trio.Event()        # exited, and the VNC server gone: its ports are free
        self.exit_state = ""
        self.exit_reason = ""
        self.streams: dict[trio.SocketStream, trio.Lock] = {}
        self.ring = Ring(SCROLLBACK)
        self.console_changed = trio.Event()
        self.input_lock = trio.Lock()
        self.columns, self.lines = DEFAULT_COLUMNS, DEFAULT_LINES
        # The spare made a blank terminal of the default kind while it waited: the
        # emulator's first allocations cost most of a millisecond in a fresh fork.
        ready = request.get("terminal")
        if (ready is not None and type(ready) is BACKENDS.get(self.cfg.console.emulator)
                and (ready.columns, ready.lines) == (self.columns, self.lines)):
            self.term = ready
        else:
            self.term = make_terminal(self.cfg.console.emulator, self.columns, self.lines)
        self.fed = 0                 # ring offset the emulator has consumed
        # The VNC server process (vzfs.vnc.process), forked by the spawner on request.
        self.vnc_spawner: socket.socket | None = None
        self.vnc_pid = 0
        self.vnc_address = ""        # HOST:PORT while a server listens
        self.vnc_websocket = ""
        self.vnc_error = ""
        self.vnc_errno = 0
        # Set once the first VNC server listens or failed to (the daemon's start waits
        # for it: `vnc` holds its value when `echo start` returns).
        self.vnc_settled = trio.Event()
        # The listening sockets every VNC server of this domain serves (_listen_vnc).
        self.vnc_sockets: tuple[socket.socket, ...] = ()
        self.vnc_restarts = 0
        self.vnc_prefer: dict[str, int] = {}   # the ports it had: a restart keeps them
        self.vnc_resync = False
        self.vnc_pidfd = -1
        self.screen_changed = trio.Event()
        self.master = -1
        self.slave = -1
        self.domain_dir = paths.domain_dir(self.state_dir, self.name)
        self.dir_fd = os.open(self.domain_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        # The keeper (keeper.py): init's parent, which holds the domain while we run.
        self.keeper_pid = 0
        self.keeper: socket.socket | None = None
        self.rootfs_shifted = False      # its ids shifted on disk (kernel.idshift), not idmapped

    # -- start (synchronous: runs before trio.run, in a single-threaded process) --
    def start(self) -> None:
        self._load_screen()
        self.master, self.slave = os.openpty()
        self._set_winsize()
        os.set_inheritable(self.master, False)
        os.set_inheritable(self.slave, False)
        os.set_blocking(self.master, False)
        if self.restoring:
            self._restore()
        else:
            self._spawn()
        # Which way the root's ids are seen, for `stats`: told once, not looked up on
        # the root at every read.
        self.rootfs_shifted = (self.idmap is not None
                               and idshift.shifted_as(self.rootfs) is not None)
        self._listen_vnc()

    def _listen_vnc(self) -> None:
        """Bind the VNC listening sockets now (vnc.process.listen): `vnc` holds its address
        when the start is reported, and a port that cannot be had fails the start,
        unless `[vnc] required = false` (then the VNC server tries itself, later)."""
        c = self.cfg.vnc
        try:
            rfb, ws = vncprocess.listen({"listen": c.listen, "port": c.port,
                                         "websocket": c.websocket,
                                         "websocket_port": c.websocket_port}, self.vnc_prefer)
        except OSError as exc:
            self.vnc_error = exc.strerror or str(exc)
            self.vnc_errno = exc.errno or errno.EIO
            if c.required:
                raise OSError(self.vnc_errno, f"its VNC server cannot listen: {self.vnc_error} "
                              "(with [vnc] required = false it starts without one)") from exc
            return
        self.vnc_sockets = (rfb,) + ((ws,) if ws is not None else ())
        self.vnc_address = vncprocess.address(c.listen, rfb.getsockname()[1])
        self.vnc_websocket = (vncprocess.address(c.listen, ws.getsockname()[1])
                              if ws is not None else "")
        self.vnc_prefer = {"rfb": _port(self.vnc_address), "websocket": _port(self.vnc_websocket)}
        self.vnc_settled.set()

    def _close_vnc_sockets(self) -> None:
        sockets, self.vnc_sockets = self.vnc_sockets, ()
        for sock in sockets:
            sock.close()

    def _load_screen(self) -> None:
        """Show the screen saved on the root (screenstate: before a checkpoint), if any.

        The file is the container's to write, so anything wrong with it is logged and
        ignored: a bad file costs the old screen, never the start."""
        try:
            with screenstate.root(self.rootfs) as root_fd:
                snapshot = screenstate.load(root_fd, consume=not self.restoring)
            if snapshot is None:
                return
            columns, lines = snapshot.get("columns"), snapshot.get("lines")
            if not (isinstance(columns, int) and isinstance(lines, int)
                    and 2 <= columns <= 1000 and 2 <= lines <= 1000):
                raise ValueError(f"the saved screen is {columns}x{lines}")
            term = type(self.term).restore(snapshot)
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            print(f"vzfs: {self.name}: not restoring the saved screen: {exc}",
                  file=sys.stderr, flush=True)
            return
        self.term, self.columns, self.lines = term, term.columns, term.lines

    def _save_screen(self) -> str:
        with screenstate.root(self.rootfs) as root_fd:
            screenstate.save(root_fd, self.term.snapshot())
        return f"/{screenstate.DIR}/{screenstate.FILE}"

    def _place(self, pid: int) -> None:
        """Create the domain's cgroup with its limits and move *pid* into it."""
        self._make_cgroup()
        self.cgroup.join_pid(pid)

    def _make_cgroup(self) -> None:
        self.cgroup.create()
        limits = self.cfg.limits
        self.cgroup.set_limits(limits.memory, limits.cpus, limits.pids)
        if self.idmap is not None:
            # Delegated to the domain's root (cgroups(7) "Cgroups delegation"), so a
            # distribution's init can make its own sub-cgroups; the limits stay ours.
            self.cgroup.delegate(self.idmap.uid, self.idmap.gid)

    @property
    def idmap(self) -> IdMap | None:
        return None if self.cfg.privileged else self.cfg.idmap

    def _own_console(self) -> None:
        """The console pty belongs to the domain's root (and tty group), or root inside
        could not open it: the host's root is nobody in a user namespace."""
        if self.idmap is not None:
            os.fchown(self.slave, self.idmap.uid, self.idmap.gid + TTY_GID)

    def _spawn(self) -> None:
        self._own_console()
        spec = container.ContainerSpec(
            name=self.name, rootfs=self.rootfs, hostname=self.cfg.hostname,
            init=self.cfg.init, console=os.ttyname(self.slave), cgroup=self.cgroup,
            mounts=tuple(self.mounts), idmap=self.idmap)
        kind = self.idmap is not None
        prepared = next((p for p in self.prepared if p.userns == kind), None)
        if prepared is not None:
            self.prepared.remove(prepared)
        else:
            prepared = container.prepare(userns=kind)
        self.pid = container.launch(prepared, spec, self._place)
        self.started_at = time.time()
        self.state = "running"

    def _restore(self) -> None:
        """Bring the domain back from its checkpoint, as our child, in its cgroup."""
        started = time.monotonic()
        self.abandon_prepared()            # the restored tree brings its own init
        meta = checkpoint.read_meta(self.domain_dir, self.images)
        if (meta.columns, meta.lines) != (self.columns, self.lines):
            # No saved screen (or a damaged one): at least the size the tree had.
            self.columns, self.lines = meta.columns, meta.lines
            self.term.resize(self.columns, self.lines)
            self._set_winsize()
        self.mounts = list(meta.mounts)
        self.vnc_prefer = dict(meta.vnc_prefer)
        self._make_cgroup()
        self._own_console()
        try:
            self.pid, figures = checkpoint.restore(self.criu, self.domain_dir, self.rootfs,
                                                   meta, self.slave, self.cgroup.join_self,
                                                   self.images, self.lazy, self.idmap)
        except OSError:
            self.cgroup.kill_all()         # whatever CRIU got as far as creating
            raise
        self.started_at = time.time()
        self.state = "running"
        figures["restore_ms"] = (time.monotonic() - started) * 1000
        figures["restored_at"] = self.started_at
        self.restore_figures = figures

    def respawn(self, mounts: tuple[MountSpec, ...]) -> None:
        """In the keeper: init again, as its child, after a reboot inside (the
        controller asks, with the mounts the domain has now)."""
        self.mounts = list(mounts)
        self._spawn()

    def reattach(self) -> None:
        """In a controller the keeper forked after the last one died: take the running
        domain over. The pty, init, its cgroup and the VNC sockets are the keeper's and
        so still there; what lived only in the dead controller is made again — the
        terminal (blank until the next output, at the size the pty has), the VNC spawner
        — or read back: the live mounts (mounts.json), whether it is paused."""
        try:
            self.state = "paused" if self.cgroup.frozen() else "running"
        except OSError:
            self.state = "running"
        try:
            with open(os.path.join(self.domain_dir, "mounts.json")) as f:
                self.mounts = [MountSpec.from_json(m) for m in json.load(f)]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"vzfs: {self.name}: keeping the mounts of the start: {exc}",
                  file=sys.stderr, flush=True)
        print(f"vzfs: {self.name}: controller {os.getpid()} takes init {self.pid} over",
              file=sys.stderr, flush=True)
        lines, columns, _, _ = struct.unpack(
            "HHHH", fcntl.ioctl(self.master, termios.TIOCGWINSZ, b"\0" * 8))
        if 2 <= columns <= 1000 and 2 <= lines <= 1000:
            self.columns, self.lines = columns, lines
        self.term = make_terminal(self.cfg.console.emulator, self.columns, self.lines)
        self.ring = Ring(SCROLLBACK)
        self.fed = 0
        try:
            self.vnc_spawner = vncspawn.start()
        except OSError:
            traceback.print_exc()
            self.vnc_spawner = None

    def undo(self) -> None:
        """A start that failed, or that nobody took: nothing of it stays."""
        self.abandon_prepared()
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        self._teardown()

    def abandon_prepared(self) -> None:
        """Let go what the spare prepared and the start did not use."""
        prepared, self.prepared = self.prepared, []
        for p in prepared:
            p.abandon()

    def record_restore(self) -> None:
        """Before "started" is sent: the checkpoint is spent (a reader of `state` or
        `checkpoint` after the resume must not see it), the figures recorded."""
        checkpoint.retire(self.domain_dir)
        checkpoint.record(self.domain_dir, self.restore_figures, fresh=False)
        with screenstate.root(self.rootfs) as root_fd:
            screenstate.remove(root_fd)

    def record_mounts(self) -> None:
        """mounts.json in the domain's directory: the external mounts of the running
        domain, for the checkpoint to declare to CRIU and re-create on restore.
        Written once the start has been reported, and after every live change."""
        atomic_write("mounts.json", json.dumps([m.to_json() for m in self.mounts]),
                     dir_fd=self.dir_fd)

    def listen(self) -> socket.socket:
        """Bind the controller socket (before "started" is sent, so the daemon can connect)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        path = paths.socket_path_via(self.dir_fd)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        old = os.umask(0o077)
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        sock.listen(16)
        return sock

    # -- the supervised life --------------------------------------------------
    async def _bound_log(self) -> None:
        """controller.log stays bounded while the domain runs (a VNC server that keeps
        dying writes a traceback each time), not only at the controller's start."""
        path = os.path.join(self.domain_dir, "controller.log")
        while True:
            await trio.sleep(LOG_CHECK_S)
            try:
                bound_log(2, path)
            except OSError:
                pass        # the state dir went (an undefine racing the end): nothing to bound

    async def main(self, daemon_fd: int | None, listener: trio.socket.SocketType) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            if daemon_fd is not None:
                first = trio.SocketStream(trio.socket.from_stdlib_socket(
                    socket.socket(fileno=daemon_fd)))
                nursery.start_soon(self._serve_stream, first, None)
            nursery.start_soon(self._accept, listener)
            nursery.start_soon(self._drain_console)
            nursery.start_soon(self._feed_terminal)
            nursery.start_soon(self._wait_init)
            if self.vnc_spawner is not None:
                nursery.start_soon(self._supervise_vnc)
            nursery.start_soon(self._bound_log)
            await self.exited.wait()
            await self._stop_vnc()
            await self._keeper_gone()
            self.ended.set()
            await self._broadcast({"event": "exited", "state": self.exit_state,
                                   "reason": self.exit_reason, "screen": self.term.text()})
            # Give replies queued on the exit a moment to leave, then end.
            with trio.move_on_after(0.5):
                await trio.sleep(0.05)
            nursery.cancel_scope.cancel()

    def _status(self) -> Message:
        state = "migrating" if self.migration is not None and self.state == "running" else self.state
        return {"event": "status", "state": state, "pid": self.pid,
                "started_at": self.started_at, "controller_pid": os.getpid(),
                "keeper_pid": self.keeper_pid, "rootfs_shifted": self.rootfs_shifted,
                "vnc": self.vnc_address, "vnc_websocket": self.vnc_websocket,
                "vnc_pid": self.vnc_pid, "vnc_restarts": self.vnc_restarts,
                "vnc_error": self.vnc_error, "vnc_errno": self.vnc_errno}

    async def _accept(self, listener: trio.socket.SocketType) -> None:
        while True:
            conn, _ = await listener.accept()
            self.nursery.start_soon(self._serve_stream, trio.SocketStream(conn), None)

    async def _send(self, stream: trio.SocketStream, msg: Message) -> None:
        """Send one message; replies and broadcasts share a stream, so take turns."""
        lock = self.streams.get(stream)
        if lock is None:
            return
        try:
            async with lock:
                with trio.move_on_after(1):
                    await stream.send_all(encode(msg))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.streams.pop(stream, None)

    async def _broadcast(self, msg: Message) -> None:
        for stream in list(self.streams):
            await self._send(stream, msg)

    async def _serve_stream(self, stream: trio.SocketStream, hello: Message | None) -> None:
        self.streams[stream] = trio.Lock()
        decoder = Decoder()
        try:
            if hello is not None:
                await self._send(stream, hello)
            async for data in stream:
                for msg in decoder.feed(data):
                    if msg.get("op") == "console":
                        # This connection now carries the console stream.
                        self.streams.pop(stream, None)
                        await self._console(stream, decoder.take_rest())
                        return
                    self.nursery.start_soon(self._handle, stream, msg)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ProtocolError, FrameError):
            pass
        finally:
            if self.streams.pop(stream, None) is not None:
                # (a console connection is _console's to close)
                with trio.CancelScope(shield=True):
                    await stream.aclose()

    async def _handle(self, stream: trio.SocketStream, msg: Message) -> None:
        """Answer one request. The request server's one error boundary: whatever a
        request holds (wrong types, missing fields, values out of range) and whatever
        fails while it is carried out becomes an error reply with an errno and a
        sentence; it never ends the controller."""
        req_id = msg.get("id")
        try:
            reply = await self._reply(msg)
        except Exception as exc:        # noqa: BLE001 - the boundary
            traceback.print_exc()
            if isinstance(exc, (KeyError, ValueError, TypeError, OverflowError)):
                code, why = errno.EINVAL, f"a malformed request ({type(exc).__name__}: {exc})"
            else:
                code = getattr(exc, "errno", None) or errno.EIO
                why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            reply = reply_error(req_id, code, f"the controller could not carry out "
                                              f"{str(msg.get('op'))[:40]!r}: {why}"[:400])
        await self._send(stream, reply)

    async def _reply(self, msg: Message) -> Message:
        op = msg.get("op")
        req_id = msg.get("id")
        if op == "status":
            reply = reply_ok(req_id, **self._status())
        elif op == "vnc_wait":
            if self.vnc_spawner is not None:
                with trio.move_on_after(max(0.0, _number(msg, "timeout_s", 10))):
                    await self.vnc_settled.wait()
            reply = reply_ok(req_id, **self._status())
        elif op in ("stop", "kill"):
            if op == "stop":
                timeout = _number(msg, "timeout_s", self.cfg.stop_timeout)
                sig = int(_number(msg, "signal", self.cfg.stop_signal))
                if not (0 <= timeout <= MAX_STOP_TIMEOUT and 1 <= sig <= 64):
                    raise ValueError(f"a stop takes a timeout_s of 0 to {MAX_STOP_TIMEOUT:g} s "
                                     "and a signal of 1 to 64")
                self._begin_stop(timeout, sig)
            else:
                self._kill()
            await self.ended.wait()
            reply = reply_ok(req_id, state=self.exit_state, reason=self.exit_reason,
                             screen=self.term.text())
        elif op == "stats":
            reply = reply_ok(req_id, **self.cgroup.stats())
        elif op == "screen":
            reply = reply_ok(req_id, text=self.term.text(), columns=self.columns,
                             lines=self.lines, title=self.term.title)
        elif op in ("mount_add", "mount_del", "mounts"):
            reply = await self._mount_op(req_id, op, msg)
        elif op in ("pause", "resume"):
            reply = await self._freeze_op(req_id, op)
        elif op == "suspend":
            reply = await self._suspend(req_id)
        elif op == "migrate":
            reply = await self._migrate(req_id, msg)
        elif op == "migrate_cancel":
            reply = await self._migrate_cancel(req_id)
        elif op == "save_screen":
            try:
                path = self._save_screen()
            except OSError as exc:
                reply = reply_error(req_id, exc.errno or errno.EIO,
                                    f"cannot save the screen: {exc.strerror or exc}")
            else:
                reply = reply_ok(req_id, path=path)
        elif op == "resize":
            try:
                self._resize(int(msg["columns"]), int(msg["lines"]))
            except (KeyError, ValueError, TypeError):
                reply = reply_error(req_id, errno.EINVAL, "resize needs columns and lines "
                                                          "between 2 and 1000")
            else:
                reply = reply_ok(req_id, columns=self.columns, lines=self.lines)
        else:
            reply = reply_error(req_id, errno.EINVAL, f"unknown controller request {op!r}")
        return reply

    async def _mount_op(self, req_id: Any, op: str, msg: Message) -> Message:
        """Live mounts: kernel.mounts forks, from this (the loop's) thread, a helper that
        joins the container's mount namespace; the loop goes on until it reports."""
        try:
            if op == "mounts":
                present = await trio.to_thread.run_sync(kmounts.mounted_targets, self.pid)
                return reply_ok(req_id, lines=[m.line() for m in self.mounts if m.target in present])
            if op == "mount_add":
                spec = MountSpec(str(msg["source"]), str(msg["target"]),
                                 tuple(o for o in str(msg.get("options", "")).split(",") if o))
                await _await_helper(kmounts.start_inject(self.pid, spec, self.idmap))
                self.mounts.append(spec)
            else:
                target = str(msg["target"])
                await _await_helper(kmounts.start_eject(self.pid, target))
                self.mounts = [m for m in self.mounts if m.target != target]
            self.record_mounts()
        except OSError as exc:
            return reply_error(req_id, exc.errno or errno.EIO, exc.strerror or str(exc))
        except (KeyError, TypeError, ValueError) as exc:
            return reply_error(req_id, errno.EINVAL, f"bad mount request: {exc}")
        return reply_ok(req_id)

    # -- pause, resume, suspend ------------------------------------------------
    async def _freeze_op(self, req_id: Any, op: str) -> Message:
        want = "running" if op == "pause" else "paused"
        if self.state != want or self.suspending:
            return reply_error(req_id, errno.EBUSY, f"it is {self.state}")
        try:
            if op == "pause":
                await trio.to_thread.run_sync(self.cgroup.freeze)
                self.state = "paused"
            else:
                await trio.to_thread.run_sync(self.cgroup.thaw)
                self.state = "running"
        except OSError as exc:
            return reply_error(req_id, exc.errno or errno.EIO,
                               f"the cgroup freezer refused: {exc.strerror or exc}")
        return reply_ok(req_id, state=self.state)

    async def _suspend(self, req_id: Any) -> Message:
        """Checkpoint the domain to disk and end it; on failure it runs on as it was.

        CRIU stops a running tree itself (ptrace: a millisecond, where its cgroup
        freezer path waits 100 ms before it first looks); a paused domain's frozen
        cgroup is handed to it as it is. The screen is saved on the root before the
        dump and, once CRIU has ended the tree and its last output is read, again:
        the screen after the resume is the screen at the checkpoint."""
        if self.state not in ("running", "paused") or self.suspending:
            return reply_error(req_id, errno.EBUSY, f"it is {self.state}")
        if not self.criu:
            code, _, why = self.criu_error.partition(" ")
            return reply_error(req_id, int(code) if code.isdigit() else errno.ENOENT,
                               why or "no CRIU was found (set VZFS_CRIU or run ./bootstrap)")
        self.suspending = True
        self.suspend_done = trio.Event()
        started = time.monotonic()
        try:
            try:
                self._save_screen()
                meta = checkpoint.Meta(
                    console_key=checkpoint.tty_key(os.fstat(self.slave)),
                    devtty_key=self._devtty_key(),
                    mounts=tuple(self.mounts), columns=self.columns, lines=self.lines,
                    vnc_prefer=dict(self.vnc_prefer), dumped_at=time.time(),
                    host_binds=checkpoint.host_binds(self.pid))
                freezer = self.cgroup.freezer_dir() if self.state == "paused" else None
                figures = await trio.to_thread.run_sync(
                    checkpoint.dump, self.criu, self.domain_dir, self.pid, self.rootfs,
                    freezer, meta)
                await self._settle_console()
                try:
                    self._save_screen()
                except OSError:
                    traceback.print_exc()      # the one saved before the dump stays
                checkpoint.commit(self.domain_dir, meta)
            except OSError as exc:
                return reply_error(req_id, exc.errno or errno.EIO, exc.strerror or str(exc))
            figures["suspend_ms"] = (time.monotonic() - started) * 1000
            figures["dumped_at"] = meta.dumped_at
            try:
                checkpoint.record(self.domain_dir, figures, fresh=True)
            except OSError:
                traceback.print_exc()
            self.suspended = True
        finally:
            self.suspending = False
            self.suspend_done.set()
        await self.ended.wait()
        return reply_ok(req_id, state=self.exit_state, reason=self.exit_reason,
                        screen=self.term.text(), **figures)

    async def _migrate(self, req_id: Any, msg: Message) -> Message:
        """Move the running domain to another vzfs (vzfs.migrate.source): reply once the
        preflight passed (or failed), go on with the move in the background, and tell
        the daemon its phases as events."""
        from ..migrate import source
        from ..migrate import target as targetmod
        if self.state != "running" or self.suspending or self.migration is not None:
            return reply_error(req_id, errno.EBUSY, f"it is {self.state}"
                               + (" and being migrated" if self.migration is not None else ""))
        if not self.criu:
            code, _, why = self.criu_error.partition(" ")
            return reply_error(req_id, int(code) if code.isdigit() else errno.ENOENT,
                               why or "no CRIU was found (set VZFS_CRIU or run ./bootstrap)")
        try:
            target_text = msg.get("target", "")
            if not isinstance(target_text, str):
                raise VzfsError(errno.EINVAL, "a migration's target is a string")
            target = targetmod.parse(target_text)
        except VzfsError as exc:
            return reply_error(req_id, exc.errno, exc.sentence)
        ssh = msg.get("ssh")
        mig = source.Migration(self, target, self._broadcast,
                               [str(w) for w in ssh] if isinstance(ssh, list) and ssh else None)
        self.migration = mig
        try:
            await mig.preflight(self.nursery)
        except VzfsError as exc:
            await mig.close()
            self.migration = None
            return reply_error(req_id, exc.errno, exc.sentence)
        if msg.get("dry_run"):
            mig.record["status"] = "checked"
            await mig.close()
            self.migration = None
            return reply_ok(req_id, record=mig.public_record())
        self.migration_target = str(target)
        # The preflight's outcome as the first phase event, ahead of the reply (which
        # the daemon may take after the next phase's event).
        await self._broadcast({"event": "migrate", "record": mig.public_record()})
        self.nursery.start_soon(self._migrate_on, mig)
        return reply_ok(req_id, record=mig.public_record())

    async def _migrate_cancel(self, req_id: Any) -> Message:
        mig = self.migration
        if mig is None or not self.migrating:
            return reply_error(req_id, errno.EINVAL, "no migration is under way")
        done = self.migrate_done
        if not mig.cancel():
            return reply_error(req_id, errno.EBUSY, "it is too late: the target has all of it")
        await done.wait()
        return reply_ok(req_id)

    async def _migrate_on(self, mig: Any) -> None:
        try:
            self.migrating = True
            ok = await mig.move()
        finally:
            self.migrating = False
        if ok:
            self.migrated = True
        else:
            self.migration = None
        done = self.migrate_done
        if not ok:
            self.migrate_done = trio.Event()     # for the next attempt
        done.set()

    def _devtty_key(self) -> str:
        """The key of the container's /dev/tty (the node in its own /dev, seen through
        init); empty when the container removed it (then no process can hold one)."""
        try:
            st = os.stat(f"/proc/{self.pid}/root/dev/tty")
        except FileNotFoundError:
            return ""
        return checkpoint.tty_key(st) if stat.S_ISCHR(st.st_mode) else ""

    async def _settle_console(self) -> None:
        """Read what is left in the pty and let the emulator take it all."""
        self._read_console(SCROLLBACK)
        with trio.move_on_after(1):
            while self.fed < self.ring.end:
                await trio.sleep(0.001)

    def _begin_stop(self, timeout: float, sig: int) -> None:
        if self.stop_requested or self.exited.is_set():
            return
        self.stop_requested = True
        if self.state == "paused":
            self.cgroup.thaw()           # a frozen init cannot hear the stop signal
        self.state = "stopping"
        self._signal_init(sig)
        self.nursery.start_soon(self._stop_escalation, timeout, sig)

    async def _stop_escalation(self, timeout: float, sig: int) -> None:
        # INTERFACE.md: the stop signal, then SIGTERM, then SIGKILL at the timeout.
        if sig != signal.SIGTERM:
            await trio.sleep(timeout / 2)
            self._signal_init(signal.SIGTERM)
            await trio.sleep(timeout / 2)
        else:
            await trio.sleep(timeout)
        self._kill()

    def _kill(self) -> None:
        self.stop_requested = True
        paused = self.state == "paused"
        self.state = "stopping"
        self._signal_init(signal.SIGKILL)
        self.cgroup.kill_all()
        if paused:
            # The v1 freezer holds even a SIGKILLed task until it is thawed.
            self.cgroup.thaw()

    def _signal_init(self, sig: int) -> None:
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    # -- the console ------------------------------------------------------------
    def _set_winsize(self) -> None:
        fcntl.ioctl(self.master, termios.TIOCSWINSZ,
                    struct.pack("HHHH", self.lines, self.columns, 0, 0))

    def _resize(self, columns: int, lines: int) -> None:
        if not (2 <= columns <= 1000 and 2 <= lines <= 1000):
            raise ValueError("size out of range")
        self.columns, self.lines = columns, lines
        self.term.resize(columns, lines)
        # TIOCSWINSZ makes the kernel send SIGWINCH to the tty's foreground group.
        self._set_winsize()
        self._resync_vnc()

    async def _drain_console(self) -> None:
        """Read the pty master as fast as the container writes, into the ring.

        Reads are batched (everything available, up to READ_BATCH) so that the
        container never waits on a full pty buffer while subscribers catch up.
        """
        while True:
            await trio.lowlevel.wait_readable(self.master)
            got = self._read_console(READ_BATCH)
            if not got:
                await trio.sleep(0.01)
                continue
            if got < SMALL_BATCH:
                # A writer making many small writes (a line each) would have us
                # wake per line; a millisecond lets its output gather (at most
                # a millisecond more on a typed character's echo).
                await trio.sleep(GATHER_S)

    def _read_console(self, limit: int) -> int:
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
            changed, self.console_changed = self.console_changed, trio.Event()
            changed.set()
        return len(batch)

    async def _feed_terminal(self) -> None:
        """Keep the emulator up with the ring, in its own task.

        The drain never waits for the emulator, so the container writes at the
        pty's pace whatever the emulator's; if the emulator falls more than the
        ring behind it continues from the ring's start (the screen then shows
        the latest output, which is what a screen is for).
        """
        while True:
            changed = self.console_changed
            if self.fed < self.ring.end:
                data, self.fed, _ = self.ring.read(self.fed, FEED_CHUNK)
                update = self.term.feed(data)
                if update.replies:
                    # DA/DSR/CPR answers go back to the application, as typed input.
                    self.nursery.start_soon(self.write_console, update.replies)
                if update.dirty or update.scrolls:
                    screen, self.screen_changed = self.screen_changed, trio.Event()
                    screen.set()
                await trio.lowlevel.checkpoint()
            else:
                await changed.wait()

    async def _console(self, stream: trio.SocketStream, rest: bytes) -> None:
        """Serve one console connection: the ring from its start, then live; input back."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._console_input, stream, rest, nursery.cancel_scope)
            cursor = self.ring.start
            try:
                while True:
                    changed = self.console_changed
                    if cursor < self.ring.end:
                        data, new, _ = self.ring.read(cursor, 1 << 16)
                        await stream.send_all(data_frame(new - len(data), data))
                        cursor = new
                    else:
                        await changed.wait()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                nursery.cancel_scope.cancel()

    async def _console_input(self, stream: trio.SocketStream, rest: bytes,
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
                        await self.write_console(payload)
        except (trio.BrokenResourceError, trio.ClosedResourceError, FrameError):
            pass
        scope.cancel()

    async def write_console(self, data: bytes) -> None:
        """Type *data* into the console (the pty master), in order, waiting when it is full."""
        async with self.input_lock:
            view = memoryview(data)
            while view:
                try:
                    n = os.write(self.master, view)
                    view = view[n:]
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(self.master)

    # -- the VNC server ---------------------------------------------------------
    async def _supervise_vnc(self) -> None:
        """Keep a VNC server running for the domain's life; count and announce restarts."""
        backoff = VNC_FAST_RESTART
        while True:
            started = trio.current_time()
            await self._run_vnc()
            if self.vnc_address:
                self.vnc_address = self.vnc_websocket = ""
                await self._vnc_changed()
            self.vnc_settled.set()     # (a server that died before it said anything)
            if self.vnc_spawner is None or self.exited.is_set():
                return             # ended on purpose (_stop_vnc): the domain is gone
            if trio.current_time() - started > VNC_STABLE_S:
                backoff = VNC_FAST_RESTART
            await trio.sleep(backoff)
            backoff = min(VNC_MAX_BACKOFF, backoff * 4)
            self.vnc_restarts += 1
            print(f"vzfs: restarting the VNC server of {self.name} "
                  f"(restart {self.vnc_restarts})", file=sys.stderr, flush=True)
            await self._broadcast({"event": "vnc_restarted", "restarts": self.vnc_restarts})

    async def _vnc_changed(self) -> None:
        """Tell the daemon where the VNC server listens now, or why none does."""
        await self._broadcast({"event": "vnc", "vnc": self.vnc_address,
                               "vnc_websocket": self.vnc_websocket,
                               "vnc_error": self.vnc_error, "vnc_errno": self.vnc_errno})

    async def _run_vnc(self) -> None:
        """Start one VNC server and serve its link until it ends."""
        assert self.vnc_spawner is not None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            vncspawn.request(self.vnc_spawner, self.name, theirs.fileno(),
                             os.path.join(paths.domain_dir(self.state_dir, self.name),
                                          "controller.log"),
                             tuple(sock.fileno() for sock in self.vnc_sockets))
        except OSError as exc:
            # The spawner was killed. Another cannot be forked from inside trio (see
            # vncspawn), so the domain runs on without VNC until its next start.
            self.vnc_error = f"the VNC spawner is gone ({exc.strerror or exc})"
            self.vnc_errno = exc.errno or errno.EIO
            print(f"vzfs: {self.name}: {self.vnc_error}", file=sys.stderr, flush=True)
            await self._vnc_changed()
            self.vnc_spawner.close()
            self.vnc_spawner = None
            ours.close()
            return
        finally:
            theirs.close()
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
        self.vnc_pidfd = -1
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._vnc_feed, stream)
                await self._vnc_read(stream)
                nursery.cancel_scope.cancel()
        except* (trio.BrokenResourceError, trio.ClosedResourceError):
            pass                           # the server died: restart it
        except* Exception:
            # Whatever goes wrong with a VNC server must never end the domain's controller.
            traceback.print_exc()
        finally:
            await stream.aclose()
            self.vnc_pid = 0
            if self.vnc_pidfd >= 0:
                # A server that broke the link but lives on would hold its ports.
                try:
                    signal.pidfd_send_signal(self.vnc_pidfd, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                os.close(self.vnc_pidfd)
                self.vnc_pidfd = -1

    async def _stop_vnc(self) -> None:
        """End the VNC server before the domain is reported stopped, so its ports are
        free again for the next start (a restart keeps its address)."""
        if self.vnc_pidfd < 0:
            return
        # Our own copy: the link's task closes its pidfd when the server dies.
        pidfd = os.dup(self.vnc_pidfd)
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            with trio.move_on_after(0.5):
                await trio.lowlevel.wait_readable(pidfd)
        except ProcessLookupError:
            pass
        finally:
            os.close(pidfd)

    def _resync_vnc(self) -> None:
        """Have the VNC server take our emulator's state (after a resize)."""
        self.vnc_resync = True
        changed, self.console_changed = self.console_changed, trio.Event()
        changed.set()

    async def _vnc_feed(self, stream: trio.SocketStream) -> None:
        """The console to the VNC server: a snapshot of our emulator, then the bytes
        after it; a new snapshot when it fell behind the ring or was resized."""
        c = self.cfg.vnc
        # The snapshot and the offset it stands for are taken together: the emulator
        # moves on while we send.
        self.vnc_resync = False
        snapshot, cursor = self.term.snapshot(), self.fed
        await stream.send_all(json_frame({
            "op": "init", "snapshot": snapshot, "emulator": self.cfg.console.emulator,
            "vnc": {"listen": c.listen, "port": c.port, "password": c.password,
                    "websocket": c.websocket, "websocket_port": c.websocket_port},
            "prefer": self.vnc_prefer}))
        while True:
            changed = self.console_changed
            if self.vnc_resync or cursor < self.ring.start:
                self.vnc_resync = False
                snapshot, cursor = self.term.snapshot(), self.fed
                await stream.send_all(json_frame({"op": "snapshot", "snapshot": snapshot}))
            elif cursor < self.ring.end:
                data, new, _ = self.ring.read(cursor, VNC_CHUNK)
                await stream.send_all(data_frame(new - len(data), data))
                cursor = new
            else:
                await changed.wait()

    async def _vnc_read(self, stream: trio.SocketStream) -> None:
        frames = FrameDecoder()
        async for data in stream:
            for kind, _, payload in frames.feed(data):
                if kind == "I":
                    await self.write_console(payload)
                    continue
                if kind != "J":
                    continue
                msg = parse_json_frame(payload)
                if msg.get("event") == "listening":
                    self.vnc_pid = int(msg["pid"])
                    try:
                        self.vnc_pidfd = os.pidfd_open(self.vnc_pid)
                    except ProcessLookupError:
                        pass
                    self.vnc_address = str(msg["rfb"])
                    self.vnc_websocket = str(msg.get("websocket", ""))
                    self.vnc_error = ""
                    self.vnc_errno = 0
                    self.vnc_prefer = {"rfb": _port(self.vnc_address),
                                       "websocket": _port(self.vnc_websocket)}
                    await self._vnc_changed()
                    self.vnc_settled.set()
                elif msg.get("event") == "error":
                    self.vnc_error = str(msg.get("error", ""))
                    self.vnc_errno = int(msg.get("errno") or errno.EIO)
                    print(f"vzfs: the VNC server of {self.name} cannot start: {self.vnc_error}",
                          file=sys.stderr, flush=True)
                    await self._vnc_changed()
                    self.vnc_settled.set()
                elif msg.get("op") == "resize":
                    try:
                        self._resize(int(msg["columns"]), int(msg["lines"]))
                    except ValueError:
                        self._resync_vnc()

    async def _from_keeper(self) -> keepermod.ToController | None:
        """The keeper's next message; None once it is gone."""
        assert self.keeper is not None
        while True:
            try:
                return keepermod.decode_for_controller(self.keeper.recv(keepermod.MAX_MESSAGE,
                                                                        socket.MSG_DONTWAIT))
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self.keeper)
            except (OSError, Malformed):
                return None

    async def _keeper_gone(self) -> None:
        """Wait (a little) for the keeper to exit once told the end: it holds the VNC
        ports and the pty, which the next start should find free."""
        with trio.move_on_after(KEEPER_EXIT_WAIT):
            while await self._from_keeper() is not None:
                pass

    async def _init_status(self) -> int | None:
        """Init's wait(2) status, from the keeper (its parent); None if the keeper died."""
        while (msg := await self._from_keeper()) is not None:
            if isinstance(msg, keepermod.InitExit):
                return msg.status
        return None

    async def _respawn(self) -> None:
        """A reboot inside: the keeper makes init again, as its child."""
        assert self.keeper is not None
        keepermod.send(self.keeper, keepermod.Spawn(tuple(self.mounts)))
        msg = await self._from_keeper()
        if msg is None:
            raise OSError(errno.EIO, "its keeper process died")
        if isinstance(msg, keepermod.SpawnFailed):
            raise OSError(msg.errno or errno.EIO, msg.error)
        if not isinstance(msg, keepermod.Spawned):
            raise OSError(errno.EIO, f"its keeper said {msg} to a spawn")
        self.pid = msg.pid
        self.started_at = msg.started_at
        self.state = "running"

    async def _wait_init(self) -> None:
        while True:
            status = await self._init_status()
            if status is None:
                # Init asked for SIGKILL when its parent dies (container.py).
                kind, reason = "crashed", "its keeper process died"
            else:
                kind, reason = describe_exit(status)
            if self.suspending:
                # CRIU ends the tree once its images are written: wait for its verdict.
                await self.suspend_done.wait()
            if self.suspended:
                self._finish("suspended", "suspended to disk")
                return
            if self.migrating:
                # The same for a migration's dump, once the target has every page.
                await self.migrate_done.wait()
            if self.migrated:
                self._finish("migrated", f"migrated to {self.migration_target}")
                return
            if kind == "rebooted" and not self.stop_requested:
                self._cleanup_processes()
                try:
                    await self._respawn()
                except OSError as exc:
                    kind, reason = "crashed", f"reboot failed: {exc.strerror or exc}"
                else:
                    await self._broadcast({"event": "rebooted", "pid": self.pid,
                                           "started_at": self.started_at})
                    continue
            if kind == "rebooted":
                kind = "stopped"
            if self.stop_requested:
                kind = "stopped"
            self._finish(kind, reason)
            return

    def _cleanup_processes(self) -> None:
        # Init is gone, so the kernel has killed its pid namespace; make sure
        # nothing lingers in the cgroup either.
        self.cgroup.kill_all()

    def _finish(self, kind: str, reason: str) -> None:
        print(f"vzfs: {self.name}: init {self.pid} ended: {kind}, {reason}",
              file=sys.stderr, flush=True)
        self.record_end(kind, reason)
        self.exit_state, self.exit_reason = kind, reason
        self.state = kind
        if self.keeper is not None:
            try:
                keepermod.send(self.keeper, keepermod.Done())
            except OSError:
                pass                     # it is gone already
        self.exited.set()

    def record_end(self, kind: str, reason: str) -> None:
        """The domain ended: nothing of it left running, its cgroup and ports gone, the
        outcome in last_exit.json (by the controller, or by a keeper whose controllers
        kept dying)."""
        self._teardown()
        record = {"state": kind, "reason": reason, "time": time.time(), "pid": self.pid}
        atomic_write(paths.last_exit_file(self.state_dir, self.name), json.dumps(record))

    def _teardown(self) -> None:
        """Nothing of the domain left running, its cgroup, VNC ports (free for the next
        start) and socket gone."""
        self._close_vnc_sockets()
        try:
            self._cleanup_processes()
            self.cgroup.remove()
        except OSError:
            pass
        try:
            os.unlink(paths.socket_path_via(self.dir_fd))
        except FileNotFoundError:
            pass


async def _await_helper(pending: kmounts.Pending) -> None:
    # Shielded: the helper only makes a few syscalls, and must be reaped whatever happens.
    with trio.CancelScope(shield=True):
        await trio.lowlevel.wait_readable(pending.fd)
    pending.finish()


def _number(msg: Message, key: str, default: float) -> float:
    """A request's numeric field: a finite JSON number (not a truth value, not a string)."""
    value = msg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{key} must be a number, not {str(value)[:40]!r}")
    return float(value)


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1]) if address else 0


def bound_log(fd: int, path: str, limit: int = LOG_BYTES) -> bool:
    """Keep the log *fd* (opened O_APPEND at *path*) under *limit*: once past it, its
    content moves to PATH.1 and it starts again empty. Every writer (the controller,
    the VNC servers it spawned) appends, so each one's next line lands at the new
    start, and no process needs to reopen anything."""
    if os.fstat(fd).st_size <= limit:
        return False
    with open(path, "rb") as src, open(f"{path}.1", "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.ftruncate(fd, 0)
    os.write(fd, f"vzfs: this log passed {limit} bytes; the older lines are in "
                 f"{os.path.basename(path)}.1\n".encode())
    return True


def _log_to(path: str) -> None:
    """Send the controller's stderr (tracebacks) to a bounded per-domain log."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
    try:
        if os.path.getsize(path) > LOG_BYTES:
            flags |= os.O_TRUNC
    except FileNotFoundError:
        pass
    fd = os.open(path, flags, 0o600)
    os.dup2(fd, 2)
    os.close(fd)


def rehearse() -> None:
    """The pure part of a controller's set-up, once, on a made-up domain: the spare
    runs it while it waits for a request.

    A spare shares the zygote's memory copy-on-write, and the first write to each
    shared page (a reference count, an allocator pool) copies it: about 5 µs a page
    on these VMs, some 130 pages for this part. Copied here, they are not copied
    while `echo start` waits (0.6-0.9 ms). Nothing outside this process changes.
    """
    layout = cgroups.Layout(mode="v1", unified=None, v1={"memory": "/", "pids": "/"})
    request = json.loads(json.dumps({
        "config": configmod.to_dict(configmod.default("rehearsal", 1)),
        "layout": dataclasses.asdict(layout)}))
    configmod.from_dict(request["config"], name="rehearsal", default_id=None)
    cgroups.Cgroup(cgroups.Layout(**request["layout"]), "vzfs/rehearsal/1")


def _controller_main(ctl: Controller, link: socket.socket, daemon_fd: int | None,
                     listener: socket.socket | None) -> NoReturn:
    """The controller proper, in the process the keeper forked (keeper.py): the first,
    which serves the daemon's first connection and the listener bound before the start
    was reported, or one that takes over from a dead one (*daemon_fd* None)."""
    code = 0
    try:
        ctl.keeper = link
        link.setblocking(False)
        proctitle.name(f"vzfs: controller {ctl.name}", f"vzfs:{ctl.name}")
        if listener is None:
            ctl.reattach()
            listener = ctl.listen()

        async def _main() -> None:
            assert listener is not None
            await ctl.main(daemon_fd, trio.socket.from_stdlib_socket(listener))

        trio.run(_main)
    except BaseException:       # the process's last boundary: never return into the keeper
        code = 1
        traceback.print_exc()
    finally:
        os._exit(code)


def run(request: dict[str, Any], daemon_fd: int) -> NoReturn:
    """The controller's life, in the process the zygote forked. Never returns."""
    code = 0
    try:
        os.setsid()
        # The keeper-to-be (keeper.py): it forks the controller once the domain runs.
        proctitle.name(f"vzfs: keeper {request['name']}", f"vzfs-keep:{request['name']}")
        _log_to(os.path.join(paths.domain_dir(request["state_dir"], request["name"]),
                             "controller.log"))
        ctl = Controller(request)
        try:
            try:
                os.unlink(paths.last_exit_file(ctl.state_dir, ctl.name))
            except FileNotFoundError:
                pass
            ctl.start()
        except OSError as exc:
            ctl.undo()
            reason = exc.strerror or str(exc)
            os.write(daemon_fd, encode({"event": "start_failed",
                                        "errno": exc.errno or errno.EIO, "error": reason}))
            os._exit(0)
        listener = ctl.listen()
        if ctl.restoring:
            try:
                ctl.record_restore()
            except OSError:
                traceback.print_exc()
        ctl.keeper_pid = os.getpid()
        # Init runs: say so before trio starts (its start-up costs milliseconds
        # the user's `echo start` need not wait for).
        try:
            os.write(daemon_fd, encode(ctl._status()))
        except OSError:
            # The daemon that asked died before it could hear: its write failed, so the
            # start must not run on unknown to the next daemon (which may have looked
            # for the domain before our socket was there).
            ctl.undo()
            os._exit(0)
        ctl.abandon_prepared()          # the other kind's, off the start's path
        try:
            ctl.record_mounts()
            if ctl.restoring:
                checkpoint.discard(ctl.domain_dir)     # the spent images
        except OSError:
            traceback.print_exc()       # the domain runs; the checkpoint will say what is missing
        # The zygote's spare forked our spawner before the request came; if it could
        # not, fork one now, while we are single-threaded and have no loop (vncspawn's
        # docstring), and after "started": a start does not wait for it.
        ctl.vnc_spawner = request.get("vnc_spawner")
        if ctl.vnc_spawner is None:
            try:
                ctl.vnc_spawner = vncspawn.start()
            except OSError:
                traceback.print_exc()
        keep = keepermod.Keeper(ctl, lambda link, first: _controller_main(
            ctl, link, daemon_fd if first else None, listener if first else None),
            ctl.record_end)
        keep.start_controller(first=True)
        # What the controller serves is its alone.
        os.close(daemon_fd)
        listener.close()
        if ctl.vnc_spawner is not None:
            ctl.vnc_spawner.close()      # it ends when its controller's end closes
            ctl.vnc_spawner = None
        keep.run()
    except BaseException:       # the process's last boundary: never return into the zygote
        code = 1
        traceback.print_exc()
    finally:
        os._exit(code)

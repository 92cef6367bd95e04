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

This module holds the controller's life: the start (init made, or restored from a
checkpoint), the take-over, the wait for init's end and the record of it. The rest
is cut by concept: the console (console.py), the VNC server's supervision
(vncsupervisor.py), the request server and its handlers (server.py), the operations
the daemon asks for (operations.py), and the state the controller is in, whose
transitions are data (states.py).
"""

import dataclasses
import errno
import json
import os
import shutil
import signal
import socket
import stat
import sys
import time
import traceback
from typing import Any, NoReturn

import trio

from ..base.atomicfile import atomic_write
from ..kernel import cgroups, idshift, proctitle
from ..model import config as configmod
from ..model.idmap import IdMap
from ..model.mountspec import MountSpec
from ..wire import messages as m
from ..wire.framing import encode
from . import checkpoint, container, paths, screenstate, states, vncspawn
from . import keeper as keepermod
from .console import Console
from .operations import Operations
from .server import RequestServer, handlers
from .states import State
from .vncsupervisor import VncSupervisor

LOG_BYTES = 1 << 20
LOG_CHECK_S = 30.0          # how often a running controller bounds its log
KEEPER_EXIT_WAIT = 2.0     # for the keeper to go once the end is recorded
EXIT_LINGER_S = 0.5        # for replies queued on the end to leave
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
    """One domain's controller: what the start request said, the domain's state
    (states.py), its parts (console, vnc, server, ops), the start and the wait for init."""

    def __init__(self, request: dict[str, Any]) -> None:
        self.name: str = request["name"]
        self.state_dir: str = request["state_dir"]
        self.cfg = configmod.from_dict(request["config"], name=self.name, default_id=None)
        self.rootfs: str = request["rootfs"]
        # What the spare prepared while it waited: one of each kind (container.prepare).
        self.prepared: list[container.PreparedInit] = list(request.get("prepared") or ())
        # The mounts vzfs made in the container (configured, then added and removed live):
        # a reboot inside re-applies them, a checkpoint names them to CRIU (mounts.json).
        self.mounts: list[MountSpec] = list(self.cfg.mounts)
        self.layout = cgroups.Layout(**request["layout"])
        self.cgroup = cgroups.Cgroup(self.layout, request["cgroup"])
        self.pid = 0
        self.started_at = 0.0
        self.state = State.STARTING
        # Suspend and resume (checkpoint.py): the CRIU command the daemon found, and
        # whether this controller restores the domain's checkpoint instead of booting.
        self.criu: str = request.get("criu", "")
        self.criu_error: str = request.get("criu_error", "")    # "errno sentence" when none
        self.restoring = bool(request.get("restore"))
        # A migration's restore: the images it brought, the memory coming lazily.
        self.images: str | None = request.get("images")
        self.lazy = bool(request.get("lazy"))
        self.restore_figures: dict[str, float] = {}
        self.exited = trio.Event()
        self.ended = trio.Event()        # exited, and the VNC server gone: its ports are free
        self.exit_reason = ""
        self.domain_dir = paths.domain_dir(self.state_dir, self.name)
        self.dir_fd = os.open(self.domain_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        # The parts (module docstring), and the nursery their tasks run in (main).
        self.console = Console(self.cfg.console.emulator, request.get("terminal"))
        self.ops = Operations(self)
        self.server = RequestServer(handlers(self), self.console)
        self.vnc = VncSupervisor(self.name, self.cfg.vnc, self.console,
                                 os.path.join(self.domain_dir, "controller.log"),
                                 self.server.broadcast, self.exited)
        self.nursery: trio.Nursery
        # The keeper (keeper.py): init's parent, which holds the domain while we run.
        self.keeper_pid = 0
        self.keeper: socket.socket | None = None
        self.rootfs_shifted = False      # its ids shifted on disk (kernel.idshift), not idmapped

    # -- the state (states.py) -----------------------------------------------------------
    def begin(self, verb: str) -> State:
        """Take *verb* on (or VzfsError: not now); the state it was taken in."""
        before = self.state
        self.state = states.begin(before, verb)
        return before

    def outcome(self, event: str) -> None:
        self.state = states.outcome(self.state, event)

    # -- start (synchronous: runs before trio.run, in a single-threaded process) --
    def start(self) -> None:
        self.console.load_saved(self.rootfs, consume=not self.restoring, name=self.name)
        self.console.open_pty()
        if self.restoring:
            self._restore()
        else:
            self._spawn()
        # Which way the root's ids are seen, for `stats`: told once, not looked up on
        # the root at every read.
        self.rootfs_shifted = (self.idmap is not None
                               and idshift.shifted_as(self.rootfs) is not None)
        self.vnc.listen()

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

    def _spawn(self) -> None:
        self.console.own(self.idmap)
        spec = container.ContainerSpec(
            name=self.name, rootfs=self.rootfs, hostname=self.cfg.hostname,
            init=self.cfg.init, console=os.ttyname(self.console.slave), cgroup=self.cgroup,
            mounts=tuple(self.mounts), idmap=self.idmap)
        kind = self.idmap is not None
        prepared = next((p for p in self.prepared if p.userns == kind), None)
        if prepared is not None:
            self.prepared.remove(prepared)
        else:
            prepared = container.prepare(userns=kind)
        self.pid = container.launch(prepared, spec, self._place)
        self.started_at = time.time()
        self.outcome("started")

    def _restore(self) -> None:
        """Bring the domain back from its checkpoint, as our child, in its cgroup."""
        started = time.monotonic()
        self.abandon_prepared()            # the restored tree brings its own init
        meta = checkpoint.read_meta(self.domain_dir, self.images)
        # No saved screen (or a damaged one): at least the size the tree had.
        self.console.take_size(meta.columns, meta.lines)
        self.mounts = list(meta.mounts)
        self.vnc.prefer = dict(meta.vnc_prefer)
        self._make_cgroup()
        self.console.own(self.idmap)
        try:
            self.pid, figures = checkpoint.restore(self.criu, self.domain_dir, self.rootfs,
                                                   meta, self.console.slave,
                                                   self.cgroup.join_self,
                                                   self.images, self.lazy, self.idmap)
        except OSError:
            self.cgroup.kill_all()         # whatever CRIU got as far as creating
            raise
        self.started_at = time.time()
        self.outcome("started")
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
            if self.cgroup.frozen():
                self.outcome("frozen")
        except OSError:
            pass
        try:
            with open(os.path.join(self.domain_dir, "mounts.json")) as f:
                self.mounts = [MountSpec.from_json(mnt) for mnt in json.load(f)]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"vzfs: {self.name}: keeping the mounts of the start: {exc}",
                  file=sys.stderr, flush=True)
        print(f"vzfs: {self.name}: controller {os.getpid()} takes init {self.pid} over",
              file=sys.stderr, flush=True)
        self.console.take_over()
        try:
            self.vnc.spawner = vncspawn.start()
        except OSError:
            traceback.print_exc()
            self.vnc.spawner = None

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
        atomic_write("mounts.json", json.dumps([mnt.to_json() for mnt in self.mounts]),
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

    # -- what others ask of the running domain ------------------------------------------
    def status(self) -> m.StatusEvent:
        """The running domain as the daemon learns it (its start's report, `status`)."""
        v = self.vnc
        return m.StatusEvent(states.SHOWN[self.state], self.pid, self.started_at, os.getpid(),
                             self.keeper_pid, self.rootfs_shifted, v.address, v.websocket,
                             v.pid, v.restarts, v.error, v.errno)

    def resize(self, columns: int, lines: int) -> None:
        """The console's size (ValueError out of range), and the VNC server's with it."""
        self.console.resize(columns, lines)
        self.vnc.resync()

    def save_screen(self) -> str:
        """Save what the console shows on the root (for the next start); its path inside."""
        return self.console.save(self.rootfs)

    async def settle_console(self) -> None:
        """Let the screen take every byte the pty holds (before it is saved)."""
        await self.console.settle()

    def checkpoint_meta(self, netns: str = "") -> checkpoint.Meta:
        """What a restore of a dump made now needs besides CRIU's images (a suspend's,
        a migration's with *netns*)."""
        return checkpoint.Meta(
            console_key=checkpoint.tty_key(os.fstat(self.console.slave)),
            devtty_key=self._devtty_key(), mounts=tuple(self.mounts),
            columns=self.console.columns, lines=self.console.lines,
            vnc_prefer=dict(self.vnc.prefer), dumped_at=time.time(), netns=netns,
            host_binds=checkpoint.host_binds(self.pid))

    def _devtty_key(self) -> str:
        """The key of the container's /dev/tty (the node in its own /dev, seen through
        init); empty when the container removed it (then no process can hold one)."""
        try:
            st = os.stat(f"/proc/{self.pid}/root/dev/tty")
        except FileNotFoundError:
            return ""
        return checkpoint.tty_key(st) if stat.S_ISCHR(st.st_mode) else ""

    def signal_init(self, sig: int) -> None:
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

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
            first = None
            if daemon_fd is not None:
                first = trio.SocketStream(trio.socket.from_stdlib_socket(
                    socket.socket(fileno=daemon_fd)))
            self.server.start(nursery, listener, first)
            nursery.start_soon(self.console.drain)
            nursery.start_soon(self.console.feed_terminal, nursery)
            nursery.start_soon(self._wait_init)
            if self.vnc.spawner is not None:
                nursery.start_soon(self.vnc.supervise)
            nursery.start_soon(self._bound_log)
            await self.exited.wait()
            await self.vnc.stop()
            await self._keeper_gone()
            self.ended.set()
            await self.server.broadcast(m.Exited(self.state.value, self.exit_reason,
                                                 self.console.term.text()))
            # Give replies queued on the exit a moment to leave, then end.
            with trio.move_on_after(EXIT_LINGER_S):
                await trio.sleep(0.05)
            nursery.cancel_scope.cancel()

    # -- the keeper's link (keeper.py) ----------------------------------------------------
    async def _from_keeper(self) -> keepermod.ToController | None:
        """The keeper's next message; None once it is gone."""
        assert self.keeper is not None
        while True:
            try:
                return keepermod.decode_for_controller(self.keeper.recv(keepermod.MAX_MESSAGE,
                                                                        socket.MSG_DONTWAIT))
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self.keeper)
            except (OSError, m.Malformed):
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

    async def _wait_init(self) -> None:
        """Until init ends for good: say how (states.OUTCOMES), record it, and end; a
        reboot inside has the keeper make init again."""
        while True:
            status = await self._init_status()
            if status is None:
                # Init asked for SIGKILL when its parent dies (container.py).
                how, reason = "crashed", "its keeper process died"
            else:
                how, reason = describe_exit(status)
            # A dump under way ended the tree (operations.py): its verdict first.
            await self.ops.dump_settled.wait()
            nxt = states.outcome(self.state, f"init_{how}")
            if nxt not in states.ENDED:         # a reboot inside
                self.state = nxt
                # Init is gone, so the kernel has killed its pid namespace; make sure
                # nothing lingers in the cgroup either.
                self.cgroup.kill_all()
                try:
                    await self._respawn()
                except OSError as exc:
                    reason = f"reboot failed: {exc.strerror or exc}"
                    nxt = states.outcome(self.state, "init_crashed")
                else:
                    if self.state is State.STOPPING:
                        self.ops.kill_now()     # a kill came while init was made again
                    await self.server.broadcast(m.Rebooted(self.pid, self.started_at))
                    continue
            if nxt is State.SUSPENDED:
                reason = "suspended to disk"
            elif nxt is State.MIGRATED:
                reason = f"migrated to {self.ops.migration_target}"
            self._finish(nxt, reason)
            return

    def _finish(self, end: State, reason: str) -> None:
        print(f"vzfs: {self.name}: init {self.pid} ended: {end.value}, {reason}",
              file=sys.stderr, flush=True)
        self.record_end(end.value, reason)
        self.state, self.exit_reason = end, reason
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
        self.vnc.close_sockets()
        try:
            self.cgroup.kill_all()
            self.cgroup.remove()
        except OSError:
            pass
        try:
            os.unlink(paths.socket_path_via(self.dir_fd))
        except FileNotFoundError:
            pass


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
    while `echo start` waits (0.6-0.9 ms): the config's parse, the cgroup's set-up,
    the start's report. Nothing outside this process changes.
    """
    layout = cgroups.Layout(mode="v1", unified=None, v1={"memory": "/", "pids": "/"})
    request = json.loads(json.dumps({
        "config": configmod.to_dict(configmod.default("rehearsal", 1)),
        "layout": dataclasses.asdict(layout)}))
    configmod.from_dict(request["config"], name="rehearsal", default_id=None)
    cgroups.Cgroup(cgroups.Layout(**request["layout"]), "vzfs/rehearsal/1")
    encode(m.to_wire(m.StatusEvent("running", 1, 0.0, 1, 1, False, "", "", 0, 0, "", 0)))


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
            os.write(daemon_fd, encode(m.to_wire(m.StartFailed(exc.errno or errno.EIO, reason))))
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
            os.write(daemon_fd, encode(m.to_wire(ctl.status())))
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
        ctl.vnc.spawner = request.get("vnc_spawner")
        if ctl.vnc.spawner is None:
            try:
                ctl.vnc.spawner = vncspawn.start()
            except OSError:
                traceback.print_exc()
        keep = keepermod.Keeper(ctl, lambda link, first: _controller_main(
            ctl, link, daemon_fd if first else None, listener if first else None),
            ctl.record_end)
        keep.start_controller(first=True)
        # What the controller serves is its alone.
        os.close(daemon_fd)
        listener.close()
        if ctl.vnc.spawner is not None:
            ctl.vnc.spawner.close()      # it ends when its controller's end closes
            ctl.vnc.spawner = None
        keep.run()
    except BaseException:       # the process's last boundary: never return into the zygote
        code = 1
        traceback.print_exc()
    finally:
        os._exit(code)

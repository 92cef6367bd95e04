"""The daemon: mounts the control filesystem, owns the registry, forks the zygote.

Start order matters: the zygote is forked before trio runs and before /dev/fuse
is opened, so controllers inherit neither; running controllers are re-attached
before the first request is served, so nobody sees a running domain as stopped.
"""

import errno
import fcntl
import logging
import logging.handlers
import os
import signal
import socket
import subprocess
import sys

import pyfuse3
import trio

from ..base.errors import VzfsError
from ..controller import paths, zygote
from ..fs import files
from ..fs.operations import Operations
from ..kernel import cgroups, mountinfo, proctitle
from ..migrate import incoming
from . import hooks
from .registry import Registry
from .sdnotify import Notifier

log = logging.getLogger("vzfs")

DEFAULT_MOUNTPOINT = "/run/vzfs"
DEFAULT_STATE_DIR = "/var/lib/vzfs"
LOG_BYTES = 1 << 20
MAX_FUSE_TASKS = 100_000


def is_vzfs_mount(mountpoint: str) -> bool:
    real = os.path.realpath(mountpoint)
    return any(entry.mount_point == real and entry.fstype == "fuse.vzfs"
               for entry in mountinfo.read())


def _setup_logging(state_dir: str, foreground: bool) -> None:
    # Bounded logs: one file of LOG_BYTES and one rotated copy, no logrotate needed.
    handler: logging.Handler = logging.handlers.RotatingFileHandler(
        os.path.join(state_dir, "vzfs.log"), maxBytes=LOG_BYTES, backupCount=1)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    if foreground:
        root.addHandler(logging.StreamHandler(sys.stderr))
    root.setLevel(logging.INFO)


def _lock_state_dir(state_dir: str) -> int:
    fd = os.open(os.path.join(state_dir, "daemon.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise VzfsError(errno.EBUSY, f"cannot serve state dir {state_dir}: another vzfs daemon "
                                     "is serving it") from None
    return fd


def prepare(mountpoint: str, state_dir: str) -> None:
    """Checks that can fail before the daemon detaches, so `vzfs mount` reports them."""
    if is_vzfs_mount(mountpoint):
        try:
            os.statvfs(mountpoint)     # a request the kernel never answers from its cache
        except OSError as exc:
            if exc.errno == errno.ENOTCONN:
                raise VzfsError(errno.EBUSY, f"cannot mount on {mountpoint}: the vzfs daemon "
                                             "that served it died and left its mount behind "
                                             f"(`vzfs umount {mountpoint}` clears it)") from None
            raise
        raise VzfsError(errno.EBUSY, f"cannot mount on {mountpoint}: vzfs is already mounted there")
    if not os.path.isdir(mountpoint):
        if mountpoint == DEFAULT_MOUNTPOINT:
            os.makedirs(mountpoint, mode=0o755, exist_ok=True)
        else:
            raise VzfsError(errno.ENOENT, f"cannot mount on {mountpoint}: no such directory")
    if not os.path.exists("/dev/fuse"):
        raise VzfsError(errno.ENODEV, "cannot mount: /dev/fuse is missing (modprobe fuse)")
    os.makedirs(state_dir, mode=0o700, exist_ok=True)


def serve(mountpoint: str, state_dir: str, foreground: bool, ready_fd: int | None,
          tune_cgroups: bool = True, hooks_dir: str | None = hooks.DEFAULT_DIR,
          hook_timeout: float = hooks.DEFAULT_TIMEOUT) -> None:
    """Run the daemon until unmounted or signalled; write b"ok" to *ready_fd* once serving."""
    # First, before anything is forked: no child may inherit NOTIFY_SOCKET (sdnotify).
    notifier = Notifier.take_from_environment()
    proctitle.name(f"vzfs: daemon {mountpoint}", "vzfs-daemon")
    state_dir = os.path.abspath(state_dir)
    _setup_logging(state_dir, foreground)
    lock_fd = _lock_state_dir(state_dir)
    layout = cgroups.detect()
    if tune_cgroups:
        try:
            if not cgroups.favordynmods(layout):
                cgroups.set_favordynmods(layout, True)
                log.info("cgroup: turned on favordynmods on %s for fast starts",
                         cgroups.favordynmods_target(layout))
        except OSError as exc:
            log.warning("cgroup: cannot turn on favordynmods (%s); starts will be slower", exc)
    for name in incoming.leftovers(state_dir):
        log.warning("removing domain %s: its migration to here never completed", name)
        incoming.remove_leftover(state_dir, name)
    registry = Registry(state_dir, layout, None, hooks.Hooks(hooks_dir, hook_timeout))
    registry.mountpoint = mountpoint
    registry.load()
    log.info("checkpoint: %s", files.checkpoint_engine())
    keep = {lock_fd} | ({ready_fd} if ready_fd is not None else set())
    registry.controllers.zygote, zygote_pid = zygote.start(mountpoint, close_fds=keep)
    ops = Operations(registry)
    options = set(pyfuse3.default_options)
    # The mount's source names the state dir, as sshfs names host:path.
    options |= {f"fsname={state_dir}", "subtype=vzfs"}
    pyfuse3.init(ops, mountpoint, options)
    log.info("serving %s from state dir %s (cgroup %s)", mountpoint, state_dir, layout.mode)
    try:
        trio.run(_main, registry, ops, ready_fd, notifier, zygote_pid)
    finally:
        pyfuse3.close(unmount=True)
        _remove_instance_cgroup(layout, state_dir)
        log.info("stopped serving %s", mountpoint)


def _remove_instance_cgroup(layout: cgroups.Layout, state_dir: str) -> None:
    """The instance's cgroup directory (vzfs/TAG), when no domain of it runs any more:
    a domain that runs keeps its own directory in it, and rmdir leaves it alone."""
    for path in cgroups.Cgroup(layout, f"vzfs/{paths.instance_tag(state_dir)}").distinct_dirs():
        try:
            os.rmdir(path)
        except OSError:
            pass        # gone already, or a running domain's directory is in it


async def _main(registry: Registry, ops: Operations, ready_fd: int | None,
                notifier: Notifier, zygote_pid: int) -> None:
    mountpoint = registry.mountpoint
    async with trio.open_nursery() as nursery:
        registry.nursery = nursery
        nursery.start_soon(_keep_zygote, registry, zygote_pid)
        nursery.start_soon(ops.notifier.run)
        # The first line of `events`: it is never empty, which tail -f needs (events.py).
        registry.emit("", "daemon", f"serving {mountpoint} from state dir {registry.state_dir} "
                                    f"(pid {os.getpid()})")
        await registry.attach_all()
        await nursery.start(incoming.Incoming(registry).serve)
        nursery.start_soon(_stop_on_signal, nursery.cancel_scope, notifier)

        async def fuse_loop() -> None:
            # Readers of `console` block in read(); each holds a worker task,
            # so the pool must be far larger than pyfuse3's default of 99.
            await pyfuse3.main(max_tasks=MAX_FUSE_TASKS)
            nursery.cancel_scope.cancel()

        nursery.start_soon(fuse_loop)
        if ready_fd is not None:
            os.write(ready_fd, b"ok")
            os.close(ready_fd)
        notifier.ready(f"serving {mountpoint} from state dir {registry.state_dir}")
        # After `vzfs mount` has returned: a slow start must not hold the mount up.
        nursery.start_soon(registry.autostart)


ZYGOTE_RESPAWN_DELAY = 0.1


async def _keep_zygote(registry: Registry, pid: int) -> None:
    """Start another zygote whenever the one serving dies; a start that raced with its
    death is retried on the new one (Controllers.spawn)."""
    # The first was forked before trio: our child, reaped here.
    pidfd = os.pidfd_open(pid)
    try:
        await trio.lowlevel.wait_readable(pidfd)
    finally:
        os.close(pidfd)
    os.waitpid(pid, os.WNOHANG)         # it has ended (pidfd readable): no wait
    while True:
        log.warning("the zygote (pid %d) died; starting another", pid)
        proc = await _new_zygote(registry)
        await proc.wait()
        pid = proc.pid


async def _new_zygote(registry: Registry) -> trio.Process:
    while True:
        await trio.sleep(ZYGOTE_RESPAWN_DELAY)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            proc = await trio.lowlevel.open_process(
                zygote.command(registry.mountpoint, theirs.fileno()),
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
        except OSError:
            ours.close()
            log.exception("cannot start a zygote; trying again in a second")
            await trio.sleep(1)
            continue
        finally:
            theirs.close()
        registry.controllers.new_zygote(ours)
        return proc


async def _stop_on_signal(scope: trio.CancelScope, notifier: Notifier) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for sig in signals:
            log.info("signal %s: unmounting; running domains keep running", sig)
            notifier.stopping("unmounting; running domains keep running")
            pyfuse3.terminate()
            # Handlers still waiting (console readers) would keep pyfuse3.main()
            # from returning: cancel them. Unmounting fails their requests.
            scope.cancel()
            return

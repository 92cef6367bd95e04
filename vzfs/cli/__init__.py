"""The `vzfs` command: mount, umount, enter. The CLI's error boundary prints a sentence and exits non-zero."""

import argparse
import errno
import math
import os
import signal
import sys
import time

from ..base.errors import VzfsError

DEFAULT_MOUNTPOINT = "/run/vzfs"
DEFAULT_STATE_DIR = "/var/lib/vzfs"
# hooks.DEFAULT_DIR and DEFAULT_TIMEOUT: the CLI imports no trio (a test holds them equal).
DEFAULT_HOOKS_DIR = "/etc/vzfs/hooks.d"
DEFAULT_HOOK_TIMEOUT = 30.0


def cmd_mount(args: argparse.Namespace) -> int:
    from ..daemon import main as daemon
    mountpoint = os.path.abspath(args.mountpoint)
    state_dir = os.path.abspath(args.state_dir)
    daemon.prepare(mountpoint, state_dir)
    tune = not args.no_favordynmods
    hooks_dir = os.path.abspath(args.hooks_dir) if args.hooks_dir else None
    if not 0 < args.hook_timeout < math.inf:
        raise VzfsError(errno.EINVAL, f"cannot mount: --hook-timeout {args.hook_timeout:g} is "
                                      "not a positive number of seconds")
    if args.foreground:
        daemon.serve(mountpoint, state_dir, True, None, tune, hooks_dir, args.hook_timeout)
        return 0
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rfd)
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.close(devnull)
        code = 0
        try:
            daemon.serve(mountpoint, state_dir, False, wfd, tune, hooks_dir, args.hook_timeout)
        except VzfsError as exc:
            os.write(wfd, exc.sentence.encode())
            code = 1
        except BaseException as exc:      # the detached daemon's last boundary
            try:
                os.write(wfd, f"the daemon failed: {exc!r}".encode())
            except OSError:
                pass
            code = 1
        os._exit(code)
    os.close(wfd)
    report = b""
    while chunk := os.read(rfd, 4096):
        report += chunk
    os.close(rfd)
    if report != b"ok":
        os.waitpid(pid, 0)
        raise VzfsError(errno.EIO, report.decode(errors="replace") or
                        "the daemon exited before it was serving (see STATE_DIR/vzfs.log)")
    return 0


def _daemon_pid(mountpoint: str) -> int | None:
    try:
        with open(os.path.join(mountpoint, "version")) as f:
            for line in f:
                key, _, value = line.partition(" ")
                if key == "daemon_pid":
                    return int(value)
    except OSError:
        return None
    return None


def _alive(pid: int) -> bool:
    """Whether *pid* still runs: a zombie has ended (its reaper, init, may take a while)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in (b"Z", b"X")


def cmd_umount(args: argparse.Namespace) -> int:
    from ..daemon import main as daemon
    from ..kernel import syscalls
    mountpoint = os.path.abspath(args.mountpoint)
    if not daemon.is_vzfs_mount(mountpoint):
        raise VzfsError(errno.EINVAL, f"cannot unmount {mountpoint}: vzfs is not mounted there")
    pid = _daemon_pid(mountpoint)
    if pid is None:
        # The daemon is gone and left its mount behind ("Transport endpoint is
        # not connected"): detach it.
        syscalls.umount(mountpoint, 2)
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if not daemon.is_vzfs_mount(mountpoint) and not _alive(pid):
            return 0
        time.sleep(0.02)
    raise VzfsError(errno.EBUSY, f"cannot unmount {mountpoint}: the daemon (pid {pid}) "
                                 "did not stop in 15 s")


def cmd_enter(args: argparse.Namespace) -> int:
    from . import enter
    argv = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    try:
        return enter.run(os.path.abspath(args.mount), args.name, argv)
    except enter.EnterError as exc:
        print(f"vzfs: {exc.sentence}", file=sys.stderr)
        return exc.code


def cmd_migrate_receive(args: argparse.Namespace) -> int:
    from ..migrate import receiver
    return receiver.run(os.path.abspath(args.mountpoint))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vzfs", description="Containers managed through a filesystem.")
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("mount", help="serve the control filesystem")
    m.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
    m.add_argument("--foreground", action="store_true")
    m.add_argument("--no-favordynmods", action="store_true",
                   help="leave the host's cgroup mount options alone (starts are slower)")
    m.add_argument("--hooks-dir", default=DEFAULT_HOOKS_DIR, metavar="DIR",
                   help=f"executables run at each domain's lifecycle phases (default "
                        f"{DEFAULT_HOOKS_DIR}; an empty value: none)")
    m.add_argument("--hook-timeout", type=float, default=DEFAULT_HOOK_TIMEOUT, metavar="SECONDS",
                   help=f"a hook still running after this long is killed (default "
                        f"{DEFAULT_HOOK_TIMEOUT:g})")
    m.add_argument("mountpoint", nargs="?", default=DEFAULT_MOUNTPOINT)
    m.set_defaults(func=cmd_mount)
    u = sub.add_parser("umount", help="stop serving; running domains keep running")
    u.add_argument("mountpoint", nargs="?", default=DEFAULT_MOUNTPOINT)
    u.set_defaults(func=cmd_umount)
    e = sub.add_parser("enter", help="run a command inside a running domain (default: a shell)")
    e.add_argument("--mount", default=os.environ.get("VZFS_MOUNT", DEFAULT_MOUNTPOINT),
                   help="the vzfs mountpoint (default $VZFS_MOUNT or /run/vzfs)")
    e.add_argument("name")
    e.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND")
    e.set_defaults(func=cmd_enter)
    r = sub.add_parser("migrate-receive", help="the receiving end of a migration (run by the "
                                               "source over ssh, speaking on stdin and stdout)")
    r.add_argument("mountpoint", nargs="?", default=DEFAULT_MOUNTPOINT)
    r.set_defaults(func=cmd_migrate_receive)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except VzfsError as exc:
        print(f"vzfs: {exc.sentence}", file=sys.stderr)
        return 125 if args.command == "enter" else 1
    except OSError as exc:
        print(f"vzfs: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

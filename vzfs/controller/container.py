"""Creating a container: fork its init into fresh namespaces, a cgroup and a new root.

Theory of operation, in two halves so that the slow half can be done ahead:

1. `prepare()`: the controller unshares a new pid namespace for its *children*,
   forks, and at once rejoins its own pid namespace for children (setns(2) into
   the caller's active pid namespace is allowed), so the child is pid 1 of the
   new namespace and is the controller's own child. The child unshares the
   mount, UTS, IPC and network namespaces and waits for its spec on a pipe.
   Forking a large Python process and creating namespaces cost milliseconds, so
   a spare controller does this before any start is asked for.
2. `launch()`: the spec goes down the pipe; the child builds the root
   (`kernel.rootfs`), pivots into it and drops dangerous capabilities from the
   bounding set while the controller, at the same time, creates the cgroup and
   moves the child into it (each side costs a millisecond or two; in parallel
   they cost one). On the controller's "go" the child unshares its cgroup
   namespace (rooted at the domain's cgroup), opens /dev/console *from inside*
   as stdin/stdout/stderr (so CRIU finds no fd that comes from outside the
   container), closes every other fd and execs init. Nothing of the container
   runs before it is in its cgroup.
3. A close-on-exec pipe reports the outcome: EOF means exec succeeded (init is
   running); otherwise the child writes "errno step message" and exits.
"""

import dataclasses
import errno
import json
import os
import signal
from collections.abc import Callable

from ..kernel import mounts as kmounts
from ..kernel import namespaces, rootfs, syscalls
from ..mountspec import MountSpec
from ..kernel._cdefs import CLONE_NEWCGROUP, PR_SET_PDEATHSIG
from ..kernel.cgroups import Cgroup

# Bounding-set drops (capabilities(7)): kernel modules, raw I/O, host clock,
# open_by_handle_at escapes (DAC_READ_SEARCH), device nodes, MAC/audit policy,
# syslog, alarms, BPF/perf and checkpoint/restore of other processes.
DROPPED_CAPS = [
    2,   # CAP_DAC_READ_SEARCH
    16,  # CAP_SYS_MODULE
    17,  # CAP_SYS_RAWIO
    20,  # CAP_SYS_PACCT
    25,  # CAP_SYS_TIME
    27,  # CAP_MKNOD
    30,  # CAP_AUDIT_CONTROL
    32,  # CAP_MAC_OVERRIDE
    33,  # CAP_MAC_ADMIN
    34,  # CAP_SYSLOG
    35,  # CAP_WAKE_ALARM
    36,  # CAP_BLOCK_SUSPEND
    38,  # CAP_PERFMON
    39,  # CAP_BPF
    40,  # CAP_CHECKPOINT_RESTORE
]

INIT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "TERM": "linux",
    "HOME": "/root",
    "container": "vzfs",
}


@dataclasses.dataclass
class ContainerSpec:
    name: str
    rootfs: str
    hostname: str
    init: tuple[str, ...]
    console: str | None = None       # host path of the pty slave to bind as /dev/console
    cgroup: Cgroup | None = None
    mounts: tuple[MountSpec, ...] = ()   # applied in order before init runs


@dataclasses.dataclass
class PreparedInit:
    """A child waiting, as pid 1 of its own namespaces, to become a container's init."""
    pid: int
    spec_w: int       # the spec goes here
    report_r: int     # EOF: exec'd; else "errno step: message"

    def abandon(self) -> None:
        """Let it go (closing the spec pipe unread makes it exit) and reap it."""
        for fd in (self.spec_w, self.report_r):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


def prepare() -> PreparedInit:
    """Fork the future init into a new pid namespace and let it create the others."""
    own_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    spec_r, spec_w = os.pipe2(os.O_CLOEXEC)
    report_r, report_w = os.pipe2(os.O_CLOEXEC)
    try:
        syscalls.unshare(namespaces.CLONE_NEWPID)
        try:
            pid = os.fork()
            if pid == 0:
                os.close(spec_w)
                os.close(report_r)
                _child(spec_r, report_w)       # never returns
        finally:
            syscalls.setns(own_pidns, namespaces.CLONE_NEWPID)
    except BaseException:
        for fd in (spec_w, report_r):
            os.close(fd)
        raise
    finally:
        os.close(own_pidns)
        os.close(spec_r)
        os.close(report_w)
    return PreparedInit(pid, spec_w, report_r)


GO = b"g"


def launch(prepared: PreparedInit, spec: ContainerSpec,
           place: Callable[[int], None] | None = None) -> int:
    """Give a prepared init its spec; return its host pid once it has exec'd init.

    *place(pid)* puts the child in its cgroup (creating it first as needed); it
    runs while the child builds its root. If it raises, the child is let go.
    """
    message = json.dumps({
        "rootfs": spec.rootfs, "hostname": spec.hostname, "init": list(spec.init),
        "console": spec.console,
        "mounts": [[m.source, m.target, list(m.options)] for m in spec.mounts],
    }).encode() + b"\n"
    try:
        view = memoryview(message)
        while view:
            view = view[os.write(prepared.spec_w, view):]
        if place is not None:
            place(prepared.pid)
        elif spec.cgroup is not None:
            spec.cgroup.join_pid(prepared.pid)
        os.write(prepared.spec_w, GO)
    except BrokenPipeError:
        pass                # the child died early: its report (or EOF + exit) tells
    except BaseException:
        prepared.abandon()
        raise
    finally:
        try:
            os.close(prepared.spec_w)
        except OSError:
            pass
    report = b""
    try:
        while chunk := os.read(prepared.report_r, 4096):
            report += chunk
    finally:
        os.close(prepared.report_r)
    if report:
        os.waitpid(prepared.pid, 0)
        code, _, words = report.decode(errors="replace").partition(" ")
        raise OSError(int(code) if code.isdigit() else errno.EIO, words)
    return prepared.pid


def spawn(spec: ContainerSpec) -> int:
    """Both halves at once (a reboot inside the container, tests)."""
    return launch(prepare(), spec)


def _read_spec(fd: int) -> tuple[dict[str, object] | None, bytes]:
    """The spec line (None when the controller let us go without one), and any
    bytes that came after it in the same read (the "go" may have, already)."""
    data = b""
    while b"\n" not in data:
        chunk = os.read(fd, 65536)
        if not chunk:
            return None, b""
        data += chunk
    line, _, rest = data.partition(b"\n")
    return json.loads(line), rest


def _wait_go(fd: int, early: bytes) -> bool:
    go = (early or os.read(fd, 1))[:1] == GO
    os.close(fd)
    return go


def _child(spec_r: int, wfd: int) -> None:
    step = "prepare"
    try:
        os.setsid()
        syscalls.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE,
                    signal.SIGCHLD, signal.SIGPWR, signal.SIGUSR1, signal.SIGUSR2,
                    signal.SIGXFSZ, signal.SIGQUIT):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        step = "unshare namespaces"
        syscalls.unshare(namespaces.CONTAINER_FLAGS & ~CLONE_NEWCGROUP)
        step = "prepare mounts"
        rootfs.make_private()
        spec, early = _read_spec(spec_r)
        if spec is None:
            os._exit(0)          # abandoned: nobody will start this one
        root = str(spec["rootfs"])
        console = spec["console"]
        init = [str(a) for a in spec["init"]]  # type: ignore[attr-defined]
        step = "prepare mounts"
        rootfs.bind_self(root)
        step = "mount /proc and /sys"
        rootfs.mount_proc_sys(root)
        step = "populate /dev"
        rootfs.populate_dev(root, str(console) if console else None)
        step = "mount the configured mounts"
        kmounts.apply_at_start(root, [MountSpec(src, target, tuple(options))
                                      for src, target, options in spec.get("mounts", [])])  # type: ignore[attr-defined]
        step = "set hostname"
        syscalls.sethostname(str(spec["hostname"]))
        step = "bring up lo"
        rootfs.loopback_up()
        step = "pivot_root"
        rootfs.pivot(root)
        step = "drop capabilities"
        syscalls.drop_bounding_caps(DROPPED_CAPS)
        step = "wait for the cgroup"
        if not _wait_go(spec_r, early):
            os._exit(0)          # the controller could not place us: it says why
        # Now in the domain's cgroup: the cgroup namespace's root is that cgroup.
        step = "unshare the cgroup namespace"
        syscalls.unshare(CLONE_NEWCGROUP)
        step = "open the console"
        if console:
            # No TIOCSCTTY: init must not own the console as its controlling
            # tty, or the shell init starts there cannot take it (job control).
            fd = os.open("/dev/console", os.O_RDWR | os.O_NOCTTY)
        else:
            fd = os.open("/dev/null", os.O_RDWR)
        for target in (0, 1, 2):
            os.dup2(fd, target, inheritable=True)
        if fd > 2:
            os.close(fd)
        # Nothing from the controller may leak into the container: close every
        # fd but stdio and the close-on-exec report pipe.
        os.closerange(3, wfd)
        os.closerange(wfd + 1, 1 << 20)
        step = f"exec init {init[0]}"
        os.execve(init[0], init, INIT_ENV)
    except BaseException as exc:      # the child's only boundary: report, then die
        code = getattr(exc, "errno", None) or errno.EIO
        detail = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        try:
            os.write(wfd, f"{code} {step}: {detail}".encode())
        finally:
            os._exit(127)

"""Creating a container: fork its init into fresh namespaces, a cgroup and a new root.

The controller calls `spawn()`. Theory of operation:

1. The controller unshares a new pid namespace for its *children*, forks, and at
   once rejoins its own pid namespace for children (setns(2) into the caller's
   active pid namespace is allowed), so the child is pid 1 of the new namespace
   and is the controller's own child — no intermediate process, one fork.
2. The child (future init) joins the cgroup, unshares the other namespaces, builds
   the root (`kernel.rootfs`), pivots into it, drops dangerous capabilities from
   the bounding set, opens /dev/console *from inside* as stdin/stdout/stderr
   (so CRIU finds no fd that comes from outside the container), closes every
   other fd and execs init.
3. A close-on-exec pipe reports the outcome: EOF means exec succeeded (init is
   running); otherwise the child writes "errno step message" and exits.
"""

import dataclasses
import errno
import os
import signal

from ..kernel import namespaces, rootfs, syscalls
from ..kernel._cdefs import PR_SET_PDEATHSIG
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


def spawn(spec: ContainerSpec) -> int:
    """Start the container; return the host pid of its init once init has exec'd."""
    own_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    rfd, wfd = os.pipe2(os.O_CLOEXEC)
    try:
        syscalls.unshare(namespaces.CLONE_NEWPID)
        try:
            pid = os.fork()
            if pid == 0:
                os.close(rfd)
                _child(spec, wfd)       # never returns
        finally:
            # Both parent and (on a failed fork) controller come back here.
            syscalls.setns(own_pidns, namespaces.CLONE_NEWPID)
        os.close(wfd)
        wfd = -1
        report = b""
        while chunk := os.read(rfd, 4096):
            report += chunk
    finally:
        os.close(own_pidns)
        os.close(rfd)
        if wfd >= 0:
            os.close(wfd)
    if report:
        os.waitpid(pid, 0)
        code, _, message = report.decode(errors="replace").partition(" ")
        raise OSError(int(code) if code.isdigit() else errno.EIO, message)
    return pid


def _child(spec: ContainerSpec, wfd: int) -> None:
    step = "prepare"
    try:
        os.setsid()
        syscalls.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE,
                    signal.SIGCHLD, signal.SIGPWR, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        if spec.cgroup is not None:
            step = "join cgroup"
            spec.cgroup.join_self()
        step = "unshare namespaces"
        syscalls.unshare(namespaces.CONTAINER_FLAGS)
        root = spec.rootfs
        step = "prepare mounts"
        rootfs.make_private()
        rootfs.bind_self(root)
        step = "mount /proc and /sys"
        rootfs.mount_proc_sys(root)
        step = "populate /dev"
        rootfs.populate_dev(root, spec.console)
        step = "set hostname"
        syscalls.sethostname(spec.hostname)
        step = "bring up lo"
        rootfs.loopback_up()
        step = "pivot_root"
        rootfs.pivot(root)
        step = "drop capabilities"
        syscalls.drop_bounding_caps(DROPPED_CAPS)
        step = "open the console"
        if spec.console is not None:
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
        step = f"exec init {spec.init[0]}"
        os.execve(spec.init[0], list(spec.init), INIT_ENV)
    except BaseException as exc:      # the child's only boundary: report, then die
        code = getattr(exc, "errno", None) or errno.EIO
        detail = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        try:
            os.write(wfd, f"{code} {step}: {detail}".encode())
        finally:
            os._exit(127)

"""Creating a container: its namespaces, its root and its init, in three processes.

Theory of operation. A user namespace must exist before the namespaces it is to
own (user_namespaces(7) "Interaction with other types of namespaces"): a pid
namespace owned by the host's would not let root inside mount its own /proc nor
reboot, a network namespace owned by it would not let it configure its links. And
only host root can build what the container must not be able to undo. So:

1. `prepare()` (done ahead, by a spare controller, once for each kind): the
   controller forks the *builder*, which unshares a mount namespace of its own
   (still the host's user namespace) and forks the *member*. The member unshares
   the user namespace (unless the domain is privileged) and, inside it, the UTS,
   IPC, network and pid namespaces, forks the container's *init child* — pid 1
   there — says its pid, and exits: the init child is reparented to the
   controller, a child subreaper (PR_SET_CHILD_SUBREAPER), which supervises it as
   its own. A domain's id map is not known yet: a user namespace takes its map
   once, later, from a privileged process outside it.
2. `launch()`: the spec goes to the builder, and the controller creates the
   cgroup and puts the init child in it meanwhile (nothing of the container runs
   before it is there). The builder writes the id map, then, as host root, builds
   the root in its mount namespace from clones of the root and the mount sources
   it makes in the host's namespace (the host's mounts as they are now, not as they
   were when the spare was forked), attached on a stage (kernel.rootfs: /dev on
   the root's filesystem with the host's device nodes bound in, sysfs of the
   container's network namespace, read-only, with its masked paths, the console,
   the configured mounts), attaches the root itself through an idmapped mount of
   the domain's map (kernel.userns), hands the spec on to the init child and
   exits.
3. The init child enters the root while it still has the host's root's ids (the
   path may lead through directories only they may search), takes its map's root
   as its ids, and unshares its own copy of the builder's mount namespace — from
   inside the user namespace, so the kernel locks every mount the builder made:
   /sys and `ro` mounts cannot be remounted, nothing can be unmounted to reveal
   what is below. It covers the root with a clone of itself (pivot_root(2)
   refuses a locked new root), mounts its /proc with the OCI read-only and
   masked paths, devpts and /dev/shm, sets its hostname, brings up `lo`, pivots,
   and drops capabilities from its bounding set. On the controller's "go" (it is
   in its cgroup) it asks for SIGKILL when the controller dies, unshares its
   cgroup namespace, opens /dev/console from inside as stdin/stdout/stderr (so
   CRIU finds no fd that comes from outside the container), closes every other
   fd, loads the seccomp filter (kernel.syscallfilter) and execs init.
4. One close-on-exec pipe reports: "pid N" from the member, "E errno step:
   message" from whichever process fails, and EOF once init has exec'd.
"""

import dataclasses
import errno
import json
import os
import select
import signal
from collections.abc import Callable

from ..kernel import idshift, namespaces, rootfs, syscallfilter, syscalls
from ..kernel import mounts as kmounts
from ..kernel import userns as userns_mod
from ..kernel.cdefs import (
    AT_FDCWD,
    AT_RECURSIVE,
    CLONE_NEWCGROUP,
    MOVE_MOUNT_F_EMPTY_PATH,
    OPEN_TREE_CLOEXEC,
    OPEN_TREE_CLONE,
    PR_SET_CHILD_SUBREAPER,
    PR_SET_PDEATHSIG,
)
from ..kernel.cgroups import Cgroup
from ..model.idmap import IdMap
from ..model.mountspec import MountSpec

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


GO = b"g"


@dataclasses.dataclass
class ContainerSpec:
    name: str
    rootfs: str
    hostname: str
    init: tuple[str, ...]
    console: str | None = None       # host path of the pty slave to bind as /dev/console
    cgroup: Cgroup | None = None
    mounts: tuple[MountSpec, ...] = ()   # applied in order before init runs
    idmap: IdMap | None = None       # None: privileged, no user namespace


@dataclasses.dataclass
class PreparedInit:
    """A builder and an init child waiting (see the module's docstring) to become a container."""
    pid: int          # the builder, our child
    userns: bool      # whether the member made a user namespace
    spec_w: int       # the spec goes here
    report_r: int     # "pid N", "E errno step: message", then EOF once init exec'd
    go_w: int         # the init child's "go"

    def abandon(self) -> None:
        """Let it go: closing the spec pipe unread ends the builder, whose end of the
        init child's pipe then closes, which ends the init child (ours to reap)."""
        for fd in (self.spec_w, self.go_w):
            _close_quietly(fd)
        init = 0
        try:
            init = _Report(self.report_r).wait_pid()
        except (OSError, ValueError):
            pass
        _close_quietly(self.report_r)
        for pid in (self.pid, init):
            if pid:
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass


def _close_all_but(*keep: int) -> None:
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 20)


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def prepare(userns: bool = True) -> PreparedInit:
    """Fork the builder and let it make the namespaces and the init child (module docstring)."""
    # The init child becomes ours when the member that forked it exits.
    syscalls.prctl(PR_SET_CHILD_SUBREAPER, 1)
    spec_r, spec_w = os.pipe2(os.O_CLOEXEC)
    report_r, report_w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.fork()
        if pid == 0:
            os.close(spec_w)
            os.close(report_r)
            os.close(go_w)
            _builder(spec_r, report_w, go_r, userns)      # never returns
    except BaseException:
        for fd in (spec_w, report_r, go_w):
            os.close(fd)
        raise
    finally:
        for fd in (spec_r, report_w, go_r):
            os.close(fd)
    return PreparedInit(pid, userns, spec_w, report_r, go_w)


def launch(prepared: PreparedInit, spec: ContainerSpec,
           place: Callable[[int], None] | None = None) -> int:
    """Give a prepared builder its spec; return the init's host pid once it has exec'd.

    *place(pid)* puts the init child in its cgroup (creating it first as needed); it
    runs while the builder builds the root. If it raises, the child is let go.
    """
    if (spec.idmap is not None) != prepared.userns:
        prepared.abandon()
        prepared = prepare(userns=spec.idmap is not None)
    message = json.dumps({
        "rootfs": spec.rootfs, "hostname": spec.hostname, "init": list(spec.init),
        "console": spec.console,
        "mounts": [m.to_json() for m in spec.mounts],
        "idmap": dataclasses.asdict(spec.idmap) if spec.idmap is not None else None,
    }).encode() + b"\n"
    reader = _Report(prepared.report_r)
    init_pid = 0
    try:
        try:
            view = memoryview(message)
            while view:
                view = view[os.write(prepared.spec_w, view):]
        except BrokenPipeError:
            pass            # the builder died early: its report (or EOF) tells
        finally:
            os.close(prepared.spec_w)
        # Told while the spare waited: the init child is ours already, and goes in
        # its cgroup while the builder builds its root.
        init_pid = reader.wait_pid()
        if place is not None:
            place(init_pid)
        elif spec.cgroup is not None:
            spec.cgroup.join_pid(init_pid)
        try:
            os.write(prepared.go_w, GO)
        except BrokenPipeError:
            pass            # the init child died: its report says why
        reader.wait_exec()
    except BaseException:
        if init_pid:
            _kill_and_reap(init_pid)
        raise
    finally:
        os.close(prepared.report_r)
        os.close(prepared.go_w)
        try:
            os.waitpid(prepared.pid, 0)
        except ChildProcessError:
            pass
    return init_pid


def spawn(spec: ContainerSpec) -> int:
    """Both halves at once (a reboot inside the container, tests)."""
    return launch(prepare(userns=spec.idmap is not None), spec)


class _Report:
    """The report pipe's lines: "pid N", "E errno step: message"; EOF when all is done."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""
        self.eof = False

    def _line(self) -> bytes | None:
        while b"\n" not in self.buf:
            if self.eof:
                return None
            chunk = os.read(self.fd, 4096)
            if not chunk:
                self.eof = True
                if self.buf:
                    self.buf += b"\n"
                continue
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line

    def _fail(self, line: bytes) -> OSError:
        code, _, words = line[2:].decode(errors="replace").partition(" ")
        return OSError(int(code) if code.isdigit() else errno.EIO, words)

    def wait_pid(self) -> int:
        while (line := self._line()) is not None:
            if line.startswith(b"pid "):
                return int(line[4:])
            if line.startswith(b"E "):
                raise self._fail(line)
        raise OSError(errno.EIO, "the container's builder ended without a word")

    def wait_exec(self) -> None:
        while (line := self._line()) is not None:
            if line.startswith(b"E "):
                raise self._fail(line)


def _kill_and_reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def _report_failure(fd: int, step: str, exc: BaseException) -> None:
    code = getattr(exc, "errno", None) or errno.EIO
    detail = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    filename = getattr(exc, "filename", None)
    if filename and str(filename) not in detail and str(filename) not in step:
        detail = f"{filename}: {detail}"
    os.write(fd, f"E {code} {step}: {detail}\n".encode(errors="replace")[:4000])


def _default_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE,
                signal.SIGCHLD, signal.SIGPWR, signal.SIGUSR1, signal.SIGUSR2,
                signal.SIGXFSZ, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def _read_spec(fd: int) -> dict[str, object] | None:
    """The spec line, or None when the controller let us go without one."""
    data = b""
    while b"\n" not in data:
        chunk = os.read(fd, 65536)
        if not chunk:
            return None
        data += chunk
    spec: dict[str, object] = json.loads(data.partition(b"\n")[0])
    return spec


def _builder(spec_r: int, report_w: int, go_r: int, userns: bool) -> None:
    """The builder (module docstring, 1 and 2): host root in a mount namespace of its own."""
    step = "prepare"
    init = 0
    try:
        syscalls.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        _default_signals()
        # Nothing of the spare's but our three pipes: an end of another prepared
        # init's pipe held here would keep that one from ever seeing its EOF.
        _close_all_but(spec_r, report_w, go_r)
        # The host's mount namespace, to look the root and the mount sources up in as
        # they are when the start comes, not as they were when the spare was made.
        host_mnt = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        step = "unshare the mount namespace"
        syscalls.unshare(namespaces.CLONE_NEWNS)
        rootfs.make_private()
        own_mnt = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        mapped_r, mapped_w = os.pipe2(os.O_CLOEXEC)
        member = os.fork()
        if member == 0:
            os.close(ready_r)
            os.close(mapped_w)
            os.close(spec_r)
            _member(ready_w, mapped_r, report_w, go_r, userns)   # never returns
        os.close(ready_w)
        os.close(mapped_r)
        os.close(go_r)
        step = "create the namespaces"
        said = os.read(ready_r, 32)
        os.close(ready_r)
        os.waitpid(member, 0)
        if not said:
            os._exit(0)          # the member reported why
        init = int(said)
        spec = _read_spec(spec_r)
        if spec is None:
            os._exit(0)          # abandoned: closing mapped_w lets the init child go
        raw_map = spec.get("idmap")
        idmap = IdMap(**raw_map) if isinstance(raw_map, dict) else None
        console = spec["console"]
        mounts = [MountSpec.from_json(m) for m in spec["mounts"]]  # type: ignore[attr-defined]
        step = "prepare the root"
        syscalls.setns(host_mnt, namespaces.CLONE_NEWNS)
        tree = syscalls.open_tree(AT_FDCWD, str(spec["rootfs"]),
                                  OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE)
        step = "mount the configured mounts"
        sources = kmounts.prepare_sources(mounts, idmap)
        syscalls.setns(own_mnt, namespaces.CLONE_NEWNS)
        step = "prepare the root"
        root = rootfs.stage_root(tree)
        os.close(tree)
        spec["rootfs"] = root
        if idmap is not None:
            step = "write the id map"
            userns_mod.write_maps(init, *userns_mod.domain_maps(idmap))
        ns = userns_mod.ns_fd(init) if idmap is not None else -1
        try:
            step = "idmap the root"
            shifted = idmap is not None and _shifted_instead(root, idmap, ns)
            step = "prepare the root"
            root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            rootfs.make_skeleton(root_fd, bool(console),
                                 (idmap.uid, idmap.gid) if shifted and idmap else None)
            step = "mount /sys"
            net = os.open(f"/proc/{init}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            syscalls.setns(net, namespaces.CLONE_NEWNET)
            os.close(net)
            rootfs.mount_sysfs(root_fd)
            step = "populate /dev"
            rootfs.mount_dev(root_fd, str(console) if console else None, -1 if shifted else ns)
            step = "mount the configured mounts"
            kmounts.attach_at_start(root, mounts, sources)
            if idmap is not None and not shifted:
                step = "idmap the root"
                tree = userns_mod.idmapped_tree(root, ns)
                syscalls.move_mount(tree, "", AT_FDCWD, root, MOVE_MOUNT_F_EMPTY_PATH)
                os.close(tree)
        finally:
            if ns >= 0:
                os.close(ns)
        os.close(root_fd)
        step = "start the container"
        os.write(mapped_w, json.dumps(spec).encode() + b"\n")
        os._exit(0)
    except BaseException as exc:      # the builder's only boundary: report, then die
        try:
            _report_failure(report_w, step, exc)
        finally:
            os._exit(127)            # the init child reads EOF where "mapped" should be


def _shifted_instead(root: str, idmap: IdMap, ns: int) -> bool:
    """Whether the root is seen through its ownership shifted on disk (kernel.idshift)
    rather than through an idmapped mount: it was shifted before, or its filesystem
    cannot be idmapped (then it is shifted now, once)."""
    if idshift.shifted_as(root) is None:
        try:
            os.close(userns_mod.idmapped_tree(root, ns, recursive=False))
            return False
        except OSError as exc:
            if exc.errno != errno.EIO:
                raise
    idshift.shift(root, idmap)
    return True


def _member(ready_w: int, mapped_r: int, report_w: int, go_r: int, userns: bool) -> None:
    """The member (module docstring, 1): makes the namespaces, forks the init child, exits."""
    step = "create the namespaces"
    try:
        if userns:
            step = "create the user namespace"
            syscalls.unshare(namespaces.CLONE_NEWUSER)
        step = "create the namespaces"
        syscalls.unshare(namespaces.CLONE_NEWUTS | namespaces.CLONE_NEWIPC
                         | namespaces.CLONE_NEWNET | namespaces.CLONE_NEWPID)
        init = os.fork()
        if init == 0:
            os.close(ready_w)
            _init_child(mapped_r, report_w, go_r, userns)    # never returns
        os.write(report_w, f"pid {init}\n".encode())
        os.write(ready_w, str(init).encode())
        os._exit(0)
    except BaseException as exc:       # the member's only boundary
        try:
            _report_failure(report_w, step, exc)
        finally:
            os._exit(127)


def _init_child(mapped_r: int, report_w: int, go_r: int, userns: bool) -> None:
    """Pid 1 of the container (module docstring, 3)."""
    step = "start"
    try:
        os.setsid()
        spec = _read_spec(mapped_r)
        if spec is None:
            os._exit(0)          # let go: the builder reported why, or nobody asked
        os.close(mapped_r)
        console = spec["console"]
        init = [str(a) for a in spec["init"]]  # type: ignore[attr-defined]
        # Into the root while we still have the host's root's ids: its path may
        # lead through directories only the host's root may search (a 0700 state
        # dir). From here on we work from here, never from that path.
        step = "enter the root"
        os.chdir(str(spec["rootfs"]))
        if userns:
            step = "become root in the user namespace"
            userns_mod.become_root()
        step = "unshare the mount namespace"
        syscalls.unshare(namespaces.CLONE_NEWNS)
        step = "prepare mounts"
        rootfs.enter_own_root()
        step = "mount /proc"
        rootfs.mount_proc(".")
        step = "mount devpts and /dev/shm"
        rootfs.mount_dev_inside(".")
        step = "set hostname"
        syscalls.sethostname(str(spec["hostname"]))
        step = "bring up lo"
        rootfs.loopback_up()
        step = "pivot_root"
        rootfs.pivot(".")
        step = "drop capabilities"
        syscalls.drop_bounding_caps(DROPPED_CAPS)
        step = "wait for the cgroup"
        if os.read(go_r, 1) != GO:
            os._exit(0)          # the controller could not place us: it says why
        # Our parent is now the controller: die with it, as a container without its
        # controller would have no supervisor. If it died already, its end of the
        # "go" pipe is closed.
        syscalls.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if select.select([go_r], [], [], 0)[0] and not os.read(go_r, 1):
            os._exit(0)
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
        os.closerange(3, report_w)
        os.closerange(report_w + 1, 1 << 20)
        step = "load the seccomp filter"
        syscallfilter.load(privileged=not userns)
        step = f"exec init {init[0]}"
        os.execve(init[0], init, INIT_ENV)
    except BaseException as exc:      # the child's only boundary: report, then die
        try:
            _report_failure(report_w, step, exc)
        finally:
            os._exit(127)

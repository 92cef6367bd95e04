"""Control groups for domains, on cgroup v2 or on v1 (and the hybrid layout), through their files.

Layout detection reads /proc/self/mountinfo once. On a pure cgroup-v2 host a
domain gets one directory (`ROOT/vzfs/TAG/ID`) with the cpu, memory and pids
controllers enabled in every ancestor's `cgroup.subtree_control` (cgroup-v2
"Top-down constraint"). On v1 and hybrid hosts it gets one directory per
controller hierarchy, plus one in the (controller-less) unified hierarchy of a
hybrid host, which still gives `cgroup.events` and `cgroup.kill`.
"""

import dataclasses
import errno
import os
import time

from . import syscalls
from .cdefs import MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, MS_REMOUNT
from .mountinfo import parse as parse_mountinfo
from .mountinfo import read as read_mountinfo

V1_CONTROLLERS = ("cpu", "cpuacct", "memory", "pids", "freezer", "devices")
V2_CONTROLLERS = ("cpu", "memory", "pids")

# devices.allow lines (cgroup-v1 devices.txt): the nodes vzfs creates in a
# container's /dev plus ptys. Everything else is denied, mknod included.
DEVICE_ALLOW = (
    "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm",   # null zero full random urandom
    "c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm",                             # tty console ptmx
    "c 136:* rwm",                                                     # pty slaves
)
CFS_PERIOD_US = 100_000


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where the hierarchies are mounted on this host."""
    mode: str                         # "v2", "hybrid" or "v1"
    unified: str | None               # the cgroup2 mount, if any
    v1: dict[str, str]                # controller -> mount point

    @property
    def description(self) -> str:
        return {"v2": "v2", "hybrid": "hybrid (v1 controllers, empty v2)", "v1": "v1"}[self.mode]


def detect(mountinfo: str | None = None) -> Layout:
    """The layout from *mountinfo* text, or from this process's mountinfo."""
    entries = read_mountinfo() if mountinfo is None else parse_mountinfo(mountinfo)
    unified = None
    v1: dict[str, str] = {}
    for entry in entries:
        if entry.fstype == "cgroup2" and unified is None:
            unified = entry.mount_point
        elif entry.fstype == "cgroup":
            for opt in entry.super_options:
                if opt in V1_CONTROLLERS and opt not in v1:
                    v1[opt] = entry.mount_point
    if unified and not v1:
        return Layout("v2", unified, {})
    return Layout("hybrid" if unified else "v1", unified, v1)


def _write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


class Cgroup:
    """One domain's cgroup across every hierarchy of the layout."""

    def __init__(self, layout: Layout, relpath: str) -> None:
        self.layout = layout
        self.relpath = relpath.strip("/")
        self.dirs: dict[str, str] = {}       # controller (or "unified") -> directory
        if layout.mode == "v2":
            assert layout.unified
            for ctl in V2_CONTROLLERS:
                self.dirs[ctl] = os.path.join(layout.unified, self.relpath)
            self.dirs["unified"] = os.path.join(layout.unified, self.relpath)
        else:
            for ctl, point in layout.v1.items():
                self.dirs[ctl] = os.path.join(point, self.relpath)
            if layout.unified:
                self.dirs["unified"] = os.path.join(layout.unified, self.relpath)

    def distinct_dirs(self) -> list[str]:
        return list(dict.fromkeys(self.dirs.values()))

    # -- creation ---------------------------------------------------------
    def create(self) -> None:
        if self.layout.mode == "v2":
            self._create_v2()
        else:
            for ctl, path in self.dirs.items():
                os.makedirs(path, exist_ok=True)
        if "devices" in self.dirs and self.layout.mode != "v2":
            dev = self.dirs["devices"]
            _write(os.path.join(dev, "devices.deny"), "a")
            for rule in DEVICE_ALLOW:
                _write(os.path.join(dev, "devices.allow"), rule)

    # cgroups(7) "Cgroups delegation": the directory and the files that let the
    # delegatee make and populate sub-cgroups; the limit files stay root's.
    DELEGATED = ("", "cgroup.procs", "cgroup.threads", "cgroup.subtree_control", "tasks")

    def delegate(self, uid: int, gid: int) -> None:
        """Give the domain's root the cgroup to manage below its limits."""
        for path in self.distinct_dirs():
            for name in self.DELEGATED:
                try:
                    os.chown(os.path.join(path, name), uid, gid)
                except FileNotFoundError:
                    pass        # tasks is v1's, cgroup.threads v2's

    def _create_v2(self) -> None:
        assert self.layout.unified
        root = self.layout.unified
        with open(os.path.join(root, "cgroup.controllers")) as f:
            available = set(f.read().split())
        wanted = [c for c in V2_CONTROLLERS if c in available]
        parts = self.relpath.split("/")
        path = root
        for part in parts:
            enable = " ".join("+" + c for c in wanted)
            if enable:
                try:
                    _write(os.path.join(path, "cgroup.subtree_control"), enable)
                except OSError as exc:
                    raise OSError(exc.errno, f"enable controllers {enable}: {exc.strerror}",
                                  os.path.join(path, "cgroup.subtree_control")) from exc
            path = os.path.join(path, part)
            os.makedirs(path, exist_ok=True)

    # -- limits -------------------------------------------------------------
    def set_limits(self, memory: int | None, cpus: float | None, pids: int | None) -> None:
        v2 = self.layout.mode == "v2"
        if "memory" in self.dirs:
            d = self.dirs["memory"]
            if v2:
                _write(os.path.join(d, "memory.max"), str(memory) if memory else "max")
            else:
                _write(os.path.join(d, "memory.limit_in_bytes"), str(memory) if memory else "-1")
        if "cpu" in self.dirs:
            d = self.dirs["cpu"]
            quota = int(cpus * CFS_PERIOD_US) if cpus else None
            if v2:
                _write(os.path.join(d, "cpu.max"), f"{quota or 'max'} {CFS_PERIOD_US}")
            else:
                _write(os.path.join(d, "cpu.cfs_period_us"), str(CFS_PERIOD_US))
                _write(os.path.join(d, "cpu.cfs_quota_us"), str(quota or -1))
        if "pids" in self.dirs:
            _write(os.path.join(self.dirs["pids"], "pids.max"), str(pids) if pids else "max")

    # -- membership -----------------------------------------------------------
    def join_self(self) -> None:
        """Move the calling process into every hierarchy ("0" means the writer, cgroups(7))."""
        for path in self.distinct_dirs():
            _write(os.path.join(path, "cgroup.procs"), "0")

    def join_pid(self, pid: int) -> None:
        """Move process *pid* (host pid) into every hierarchy."""
        for path in self.distinct_dirs():
            _write(os.path.join(path, "cgroup.procs"), str(pid))

    def procs(self) -> list[int]:
        path = self.dirs.get("pids") or self.dirs.get("unified") or self.distinct_dirs()[0]
        try:
            return [int(p) for p in _read(os.path.join(path, "cgroup.procs")).split()]
        except FileNotFoundError:
            return []

    def exists(self) -> bool:
        return any(os.path.isdir(d) for d in self.distinct_dirs())

    # -- statistics -------------------------------------------------------------
    def stats(self) -> dict[str, int]:
        out = {"cpu_ns": 0, "memory_bytes": 0, "pids": 0}
        v2 = self.layout.mode == "v2"
        try:
            if v2:
                for line in _read(os.path.join(self.dirs["cpu"], "cpu.stat")).splitlines():
                    key, _, value = line.partition(" ")
                    if key == "usage_usec":
                        out["cpu_ns"] = int(value) * 1000
                out["memory_bytes"] = int(_read(os.path.join(self.dirs["memory"], "memory.current")))
            else:
                if "cpuacct" in self.dirs:
                    out["cpu_ns"] = int(_read(os.path.join(self.dirs["cpuacct"], "cpuacct.usage")))
                if "memory" in self.dirs:
                    out["memory_bytes"] = int(_read(os.path.join(self.dirs["memory"],
                                                                 "memory.usage_in_bytes")))
            if "pids" in self.dirs:
                out["pids"] = int(_read(os.path.join(self.dirs["pids"], "pids.current")))
        except FileNotFoundError:
            pass
        return out

    # -- the freezer ------------------------------------------------------------
    def freezer(self) -> tuple[str, str, str, str]:
        """(file, freeze value, thaw value, "v1"|"v2"): the v1 freezer controller where the
        host has one (v1 and hybrid hosts), else the v2 core freezer (`cgroup.freeze`)."""
        if "freezer" in self.dirs:
            return os.path.join(self.dirs["freezer"], "freezer.state"), "FROZEN", "THAWED", "v1"
        unified = self.dirs.get("unified")
        if unified is None:
            raise OSError(errno.ENOTSUP, "this host has no cgroup freezer")
        return os.path.join(unified, "cgroup.freeze"), "1", "0", "v2"

    def freezer_dir(self) -> str:
        """The directory CRIU's --freeze-cgroup wants."""
        return os.path.dirname(self.freezer()[0])

    def frozen(self) -> bool:
        path, _, _, kind = self.freezer()
        if kind == "v1":
            return _read(path).strip() == "FROZEN"
        # cgroup.freeze says what was asked; cgroup.events says what is (cgroup-v2.rst).
        events = _read(os.path.join(os.path.dirname(path), "cgroup.events"))
        return "frozen 1" in events.splitlines()

    def freeze(self, timeout: float = 5.0) -> None:
        """Freeze every process of the cgroup; return once all are frozen.

        A task in an uninterruptible sleep (D state) holds the freeze up; past
        *timeout* the cgroup is thawed again and EBUSY raised, so a failed freeze
        leaves the domain running as it was."""
        path, freeze, _, _ = self.freezer()
        _write(path, freeze)
        deadline = time.monotonic() + timeout
        delay = 0.0005
        while not self.frozen():
            if time.monotonic() > deadline:
                self.thaw()
                raise OSError(errno.EBUSY, f"its processes did not freeze within {timeout:g} s "
                                           "(one is probably stuck in the kernel)")
            time.sleep(delay)
            delay = min(delay * 2, 0.01)

    def thaw(self) -> None:
        path, _, thaw, kind = self.freezer()
        _write(path, thaw)
        if kind == "v1":
            # v1 thaws at once: THAWED is read back as soon as it is written.
            return
        deadline = time.monotonic() + 5.0
        while self.frozen() and time.monotonic() < deadline:
            time.sleep(0.0005)

    # -- teardown -----------------------------------------------------------------
    def kill_all(self) -> None:
        """SIGKILL every process (cgroup.kill where the kernel has it, else one by one)."""
        unified = self.dirs.get("unified")
        if unified and os.path.exists(os.path.join(unified, "cgroup.kill")):
            try:
                _write(os.path.join(unified, "cgroup.kill"), "1")
                return
            except FileNotFoundError:
                return
        for pid in self.procs():
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass

    def remove(self, timeout: float = 2.0) -> None:
        """rmdir every directory; the kernel refuses (EBUSY) while tasks remain, so retry briefly."""
        deadline = time.monotonic() + timeout
        for path in self.distinct_dirs():
            while True:
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                        raise
                    time.sleep(0.005)


def cgroup_dirs_of(pid: int, layout: Layout) -> list[str]:
    """The directories of every cgroup *pid* is in, from /proc/PID/cgroup (cgroups(7))."""
    dirs: list[str] = []
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if controllers == "":
                if layout.unified:
                    dirs.append(layout.unified + path)
                continue
            for ctl in controllers.split(","):
                if ctl in layout.v1:
                    dirs.append(layout.v1[ctl] + path)
                    break
    return list(dict.fromkeys(dirs))


def join_dirs(dirs: list[str]) -> None:
    for path in dirs:
        _write(os.path.join(path, "cgroup.procs"), "0")


# Per-mount options as mount(2) flags, so a remount keeps them (mount(2): a
# remount sets the mount's flags to exactly those given).
_MOUNT_FLAGS = {"ro": MS_RDONLY, "nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC,
                "noatime": 1 << 10, "nodiratime": 1 << 11, "relatime": 1 << 21,
                "strictatime": 1 << 24}


def _mount_options(point: str) -> tuple[list[str], list[str]]:
    """(per-mount options, superblock options) of the mount at *point* (proc(5) mountinfo)."""
    found = None
    for entry in read_mountinfo():
        if entry.mount_point == point:          # a later line covers an earlier one
            found = (list(entry.mount_options), list(entry.super_options))
    if found is None:
        raise OSError(errno.ENOENT, "no such mount", point)
    return found


def favordynmods_target(layout: Layout) -> str | None:
    """The hierarchy whose `favordynmods` option governs migrations (one is enough:
    the rwsem migrations take, cgroup_threadgroup_rwsem, is global)."""
    return layout.unified or next(iter(layout.v1.values()), None)


def favordynmods(layout: Layout) -> bool:
    target = favordynmods_target(layout)
    return target is not None and "favordynmods" in _mount_options(target)[1]


def set_favordynmods(layout: Layout, enabled: bool) -> None:
    """Turn the kernel's `favordynmods` cgroup option on or off (cgroup-v2.rst).

    Moving a task into a cgroup makes the kernel wait for an RCU grace period
    unless this is on — tens of milliseconds on a quiet VM, on every start. With
    it, forks and exits cost a little more, migrations almost nothing. All other
    options of the mount and its superblock are kept.
    """
    target = favordynmods_target(layout)
    if target is None:
        raise OSError(errno.ENOENT, "no cgroup hierarchy is mounted")
    mount_opts, super_opts = _mount_options(target)
    keep = [o for o in super_opts if o not in ("rw", "ro", "favordynmods")]
    if enabled:
        keep.append("favordynmods")
    flags = MS_REMOUNT
    for opt in mount_opts:
        flags |= _MOUNT_FLAGS.get(opt, 0)
    syscalls.mount(None, target, None, flags, ",".join(keep))

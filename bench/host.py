"""What the suite reads from the host: mounts, process trees, PSS — and removing the cgroups it made."""

import os
import platform
import signal
import subprocess
import time


def mounts() -> list[tuple[str, str]]:
    """(mount point, fstype) of every mount this process sees, from /proc/self/mountinfo."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            if len(fields) > 4 and rfields:
                # mountinfo octal-escapes space, tab, newline and backslash (proc(5)).
                point = fields[4].encode().decode("unicode_escape") if "\\" in fields[4] \
                    else fields[4]
                out.append((point, rfields[0]))
    return out


def is_mounted(path: str) -> bool:
    real = os.path.realpath(path)
    return any(point == real for point, _ in mounts())


def detach_dead_mount(path: str) -> None:
    """A FUSE mount whose server is gone ("Transport endpoint is not connected"):
    detach it (util-linux umount, lazily), so its directory can be removed."""
    if is_mounted(path):
        subprocess.run(["umount", "-l", path], capture_output=True)


def cgroup_mounts() -> list[str]:
    """Every cgroup hierarchy's mount point (v1 controllers, named v1 hierarchies, cgroup2)."""
    return list(dict.fromkeys(point for point, fstype in mounts()
                              if fstype in ("cgroup", "cgroup2")))


def tmpfs_dir() -> str | None:
    """A directory on tmpfs to hold the floor's file, preferring the usual ones."""
    tmpfs = {point for point, fstype in mounts() if fstype == "tmpfs"}
    for candidate in ("/dev/shm", "/run", "/tmp"):
        if candidate in tmpfs and os.access(candidate, os.W_OK):
            return candidate
    return None


def _cgroup_procs(path: str) -> list[int]:
    try:
        with open(os.path.join(path, "cgroup.procs")) as f:
            return [int(p) for p in f.read().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []


def remove_cgroups(relpath: str, timeout: float = 5.0) -> list[str]:
    """Kill every process under *relpath* in every hierarchy and rmdir it, deepest first.

    Returns the directories that could not be removed (empty when all went).
    """
    left: list[str] = []
    deadline = time.monotonic() + timeout
    for point in cgroup_mounts():
        top = os.path.join(point, relpath.strip("/"))
        if not os.path.isdir(top):
            continue
        dirs = [root for root, _, _ in os.walk(top)]
        for path in sorted(dirs, key=lambda p: p.count("/"), reverse=True):
            while True:
                for pid in _cgroup_procs(path):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    # EBUSY until the killed tasks are gone (cgroups(7)).
                    if time.monotonic() > deadline:
                        left.append(path)
                        break
                    time.sleep(0.01)
    return left


def parent_pid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        # comm (field 2) may hold spaces and parentheses: split after the last ')'.
        return int(f.read().rpartition(")")[2].split()[1])


def children(pid: int) -> list[int]:
    """The direct children of *pid*, by scanning /proc (CONFIG_PROC_CHILDREN may be off)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if parent_pid(int(entry)) == pid:
                    out.append(int(entry))
            except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
                continue
    return out


def pss_kib(pid: int) -> int:
    """Proportional set size of *pid* (proc(5) /proc/PID/smaps_rollup, `Pss:` in KiB)."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    raise ValueError(f"no Pss line in /proc/{pid}/smaps_rollup")


def machine() -> dict[str, str | int]:
    try:
        with open("/etc/debian_version") as f:
            debian = f.read().strip()
    except FileNotFoundError:
        debian = "not Debian"
    return {"nproc": os.cpu_count() or 0, "kernel": platform.release(), "debian": debian,
            "python": platform.python_version()}

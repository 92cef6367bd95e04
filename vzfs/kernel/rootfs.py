"""Turning a directory into a container's root: /dev, /sys, /proc, the hardening, pivot_root.

Two processes build it (controller/container.py says when):

* The *builder*, host root in the container's (still private, host-owned) mount
  namespace: `stage_root` attaches the root on a stage, `make_skeleton` makes the
  directories and the /dev entries on the root's own filesystem, `mount_sysfs` and
  `mount_dev` mount what only host root may mount (sysfs of the container's network
  namespace and its masks, /dev's nodes, the console) —
  every target resolved beneath the root (openat2(2) RESOLVE_BENEATH) and
  attached fd to fd (kernel.mounts: `open_beneath`, `new_fs`, `attach_beneath`), so
  no symlink in the root can send a mount elsewhere. When
  the container then unshares its mount namespace from inside its user namespace,
  the kernel locks these mounts (mount_namespaces(7) "Restrictions on mount
  namespaces"): /sys stays read-only and none can be unmounted to reveal what is
  below.
* The container's *init child*, in its own namespaces: `enter_own_root`, then
  `mount_proc` (a procfs of its pid namespace, with the OCI runtime's read-only and
  masked /proc paths), `mount_dev_inside` (devpts and /dev/shm), then `pivot`.

/dev is not a tmpfs but the directory `/.vzfs/dev` on the root's own filesystem,
emptied and filled anew at each start: its device nodes are binds of the host's
(a user namespace may not mknod, and CRIU, restoring a tmpfs as the container's
root, could not recreate them), so a checkpoint holds no device node, and what
the domain writes in /dev (/dev/log…) is kept across a suspend.
"""

import fcntl
import os
import shutil
import socket
import stat
import struct

from . import mounts, syscalls
from .cdefs import (
    AT_FDCWD,
    AT_RECURSIVE,
    AT_SYMLINK_NOFOLLOW,
    MNT_DETACH,
    MOUNT_ATTR_NODEV,
    MOUNT_ATTR_NOEXEC,
    MOUNT_ATTR_NOSUID,
    MOUNT_ATTR_RDONLY,
    MOVE_MOUNT_F_EMPTY_PATH,
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    OPEN_TREE_CLOEXEC,
    OPEN_TREE_CLONE,
    RESOLVE_BENEATH,
    RESOLVE_NO_SYMLINKS,
)

# The character devices every container gets (devices.txt), bound from the host's /dev.
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_SYMLINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"),
                ("ptmx", "pts/ptmx"))
DEV_DIRS = ("pts", "shm", "mqueue")
CONSOLES = ("console", "tty1")
DEV_DIR = ".vzfs/dev"        # on the root's filesystem, bound on /dev

# The OCI runtime spec's defaults (config-linux.md, runc's and crun's lists), plus
# kallsyms: what a container may read but not write, and what it may not read.
PROC_READONLY = ("bus", "fs", "irq", "sys", "sysrq-trigger")
PROC_MASKED = ("acpi", "asound", "kcore", "keys", "latency_stats", "timer_list",
               "timer_stats", "sched_debug", "scsi", "kallsyms")
SYS_MASKED = ("firmware", "devices/virtual/powercap", "kernel/security", "kernel/debug",
              "fs/fuse/connections")

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1

_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_API_FLAGS = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC


def _mkdir(path: str, mode: int = 0o755) -> None:
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        pass


def make_private() -> None:
    """Stop mount events propagating back to the host (mount_namespaces(7))."""
    syscalls.mount(None, "/", None, MS_REC | MS_PRIVATE)


def bind_self(root: str) -> None:
    """pivot_root(2) needs new_root to be a mount point, and one not locked."""
    syscalls.mount(root, root, None, MS_BIND | MS_REC)


def enter_own_root() -> None:
    """Cover the working directory (the root) with a clone of itself and move onto it:
    the clone is ours, not locked, so pivot_root(2) takes it; the path that led
    here is never walked again (a user namespace's root may not search it)."""
    tree = syscalls.open_tree(AT_FDCWD, ".", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE)
    try:
        syscalls.move_mount(tree, "", AT_FDCWD, ".", MOVE_MOUNT_F_EMPTY_PATH)
        os.fchdir(tree)
    finally:
        os.close(tree)


# -- the builder's part (host root, before the container's mount namespace) ---------

STAGE = "/tmp"       # covered by a tmpfs in the builder's own mount namespace only


def stage_root(tree: int) -> str:
    """Attach *tree* (a detached clone of the domain's root) on a stage of this mount
    namespace; return the stage's path."""
    syscalls.mount("tmpfs", STAGE, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=16k")
    staged = os.path.join(STAGE, "root")
    os.mkdir(staged, 0o755)
    syscalls.move_mount(tree, "", AT_FDCWD, staged, MOVE_MOUNT_F_EMPTY_PATH)
    return staged


def _mkdirat(dir_fd: int, name: str, mode: int = 0o755) -> None:
    try:
        os.mkdir(name, mode, dir_fd=dir_fd)
    except FileExistsError:
        pass


def _open_dir_beneath(root_fd: int, path: str) -> int:
    """A directory fd of *path* beneath the root, no symlink followed on the way."""
    return syscalls.openat2(root_fd, path, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC,
                            RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)


def make_skeleton(root_fd: int, console: bool, owner: tuple[int, int] | None = None) -> None:
    """The mount points the container needs, and a fresh /.vzfs/dev, on the root's own
    filesystem, owned by its root: on-disk id 0, or *owner* for a root whose ownership
    is shifted on disk (kernel.idshift)."""
    made = []
    for name in ("proc", "sys", "dev", ".vzfs"):
        _mkdirat(root_fd, name, 0o555 if name in ("proc", "sys") else 0o755)
        made.append((root_fd, name))
    vz = _open_dir_beneath(root_fd, ".vzfs")
    try:
        # rmtree with a dir_fd never follows a symlink the container planted there.
        try:
            shutil.rmtree("dev", dir_fd=vz)
        except FileNotFoundError:
            pass
        except NotADirectoryError:
            os.unlink("dev", dir_fd=vz)
        os.mkdir("dev", 0o755, dir_fd=vz)
        if owner is not None:
            os.chown("dev", *owner, dir_fd=vz, follow_symlinks=False)
        dev = _open_dir_beneath(vz, "dev")
    finally:
        os.close(vz)
    old = os.umask(0)
    try:
        for name in DEVICES + (CONSOLES if console else ()):
            os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o666 if name in DEVICES else 0o600, dir_fd=dev))
        for name, target in DEV_SYMLINKS:
            os.symlink(target, name, dir_fd=dev)
        for name in DEV_DIRS:
            os.mkdir(name, 0o1777 if name == "shm" else 0o755, dir_fd=dev)
        if owner is not None:
            for name in os.listdir(dev):
                _chown_entry(dev, name, owner)
            for fd, name in made:
                _chown_entry(fd, name, owner)
    finally:
        os.umask(old)
        os.close(dev)


def _chown_entry(dir_fd: int, name: str, owner: tuple[int, int]) -> None:
    try:
        os.chown(name, *owner, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        # Some filesystems (sftp's SETSTAT) follow a symlink even so: a symlink's own
        # owner matters to nothing here.
        if not stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            raise


def bind_beneath(root_fd: int, source: str, path: str, recursive: bool = False) -> None:
    """Bind the host's *source* on *path* beneath the root."""
    flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (AT_RECURSIVE if recursive else 0)
    mounts.attach_beneath(syscalls.open_tree(AT_FDCWD, source, flags), root_fd, path)


def _exists_beneath(root_fd: int, path: str) -> bool:
    try:
        os.close(mounts.open_beneath(root_fd, path))
        return True
    except OSError:
        return False


def mount_sysfs(root_fd: int) -> None:
    """A read-only sysfs of the calling process's network namespace (the builder has
    joined the container's), with the OCI masked paths covered by empty read-only
    tmpfs: firmware tables, power capping, securityfs, debugfs, fusectl."""
    mounts.attach_beneath(mounts.new_fs("sysfs", MOUNT_ATTR_RDONLY | _API_FLAGS), root_fd, "sys")
    for path in SYS_MASKED:
        if _exists_beneath(root_fd, f"sys/{path}"):
            masked = mounts.new_fs("tmpfs", MOUNT_ATTR_RDONLY | _API_FLAGS,
                                   {"size": "0", "mode": "0555"})
            mounts.attach_beneath(masked, root_fd, f"sys/{path}")


def mount_dev(root_fd: int, console: str | None, userns_fd: int = -1) -> None:
    """/.vzfs/dev on /dev (idmapped like the root when *userns_fd* names the domain's
    user namespace), the host's device nodes on its files, the console pty."""
    if userns_fd >= 0:
        from .userns import idmapped_tree
        tree = idmapped_tree(DEV_DIR, userns_fd, recursive=False, dir_fd=root_fd)
    else:
        tree = syscalls.open_tree(root_fd, DEV_DIR, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC
                                  | AT_SYMLINK_NOFOLLOW)
    mounts.attach_beneath(tree, root_fd, "dev")
    for name in DEVICES:
        bind_beneath(root_fd, f"/dev/{name}", f"dev/{name}")
    if console is not None:
        for name in CONSOLES:
            bind_beneath(root_fd, console, f"dev/{name}")


# -- the init child's part (in the container's namespaces) --------------------------

def mount_proc(root: str) -> None:
    """A procfs of the container's pid namespace, with the OCI read-only and masked paths."""
    proc = os.path.join(root, "proc")
    syscalls.mount("proc", proc, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for name in PROC_READONLY:
        path = os.path.join(proc, name)
        if os.path.lexists(path):
            syscalls.mount(path, path, None, MS_BIND)
            syscalls.mount(None, path, None,
                           MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for name in PROC_MASKED:
        path = os.path.join(proc, name)
        if not os.path.lexists(path):
            continue
        if stat.S_ISDIR(os.lstat(path).st_mode):
            syscalls.mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                           "size=0,mode=0555")
        else:
            syscalls.mount("/dev/null", path, None, MS_BIND)


def mount_dev_inside(root: str) -> None:
    """devpts and /dev/shm, made by the container itself (so they are its own)."""
    dev = os.path.join(root, "dev")
    syscalls.mount("devpts", os.path.join(dev, "pts"), "devpts", MS_NOSUID | MS_NOEXEC,
                   "newinstance,ptmxmode=0666,mode=0620,gid=5")
    syscalls.mount("tmpfs", os.path.join(dev, "shm"), "tmpfs", MS_NOSUID | MS_NODEV,
                   "mode=1777,size=65536k")


def loopback_up() -> None:
    """Bring `lo` up in the current network namespace (netdevice(7) SIOCSIFFLAGS)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, ifreq))[1]
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def pivot(root: str) -> None:
    """Make *root* the root and detach the old one (the pivot_root(".", ".") idiom, pivot_root(2))."""
    os.chdir(root)
    syscalls.pivot_root(".", ".")
    syscalls.umount(".", MNT_DETACH)
    os.chdir("/")


def remount_ro(path: str, flags: int = 0) -> None:
    syscalls.mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags)


def mount_proc_sys(root: str) -> None:
    """/proc and a read-only /sys in one step, for a process that is host root in its own
    namespaces (tests of the kernel layer)."""
    for name in ("proc", "sys"):
        _mkdir(os.path.join(root, name), 0o555)
    syscalls.mount("proc", os.path.join(root, "proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    syscalls.mount("sysfs", os.path.join(root, "sys"), "sysfs",
                   MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY)


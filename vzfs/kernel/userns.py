"""User namespaces and idmapped mounts: a domain's root as root inside, nobody outside.

Theory of operation (user_namespaces(7), mount_setattr(2) "Idmapped mounts"):

* A user namespace is made without a map; a process of the parent namespace with
  CAP_SETUID/CAP_SETGID there (the controller's builder, host root) writes its
  `uid_map` and `gid_map` once (`write_maps`). Root's supplementary groups stay
  unless the member drops them, which it does before anything else.
* The domain's root filesystem stays owned by ids 0..65535 on disk, so templates
  and images are shared and move between hosts unchanged. It is attached into the
  container through an *idmapped* mount: a clone of the tree (open_tree(2)
  OPEN_TREE_CLONE) whose on-disk ids are seen through a user namespace's map
  (MOUNT_ATTR_IDMAP). Only host root can make one, and only on a filesystem that
  supports it (ext4, xfs, btrfs, tmpfs…; not FUSE): `idmapped_tree` says which.
* A map needs a namespace that holds it. For the root the domain's own namespace
  serves; for anything else (a live mount's map, CRIU's restore) `make` creates a
  throwaway namespace in a forked child, writes the map and keeps only an fd: since
  Linux 6.3 a mount copies the map, and on older kernels the fd keeps it alive.
* Host directories mounted into a domain (`mounts`) are shifted by `shift_map`:
  host uid/gid N (1..size-1) appear as N inside, the domain's own host root as 0 —
  and the host's root is *not* mapped, so its files show as nobody and root inside
  cannot create files owned by host root, unless the mount asks for `idmap=host`.
"""

import contextlib
import errno
import fcntl
import os
import signal
from collections.abc import Iterator

from ..model.idmap import IdMap
from . import syscalls
from .cdefs import (
    AT_EMPTY_PATH,
    AT_FDCWD,
    AT_RECURSIVE,
    AT_SYMLINK_NOFOLLOW,
    CLONE_NEWUSER,
    MOUNT_ATTR_IDMAP,
    OPEN_TREE_CLOEXEC,
    OPEN_TREE_CLONE,
)


def write_maps(pid: int, uid_lines: str, gid_lines: str) -> None:
    """Write *pid*'s user namespace maps (once; the kernel refuses a second write)."""
    for kind, lines in (("uid", uid_lines), ("gid", gid_lines)):
        try:
            with open(f"/proc/{pid}/{kind}_map", "w") as f:
                f.write(lines)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot write the {kind} map {lines.strip()!r}: "
                                     f"{os.strerror(exc.errno or errno.EIO)}") from exc


def domain_maps(m: IdMap) -> tuple[str, str]:
    """The domain's namespace: its ids 0..size-1 are the host's block."""
    return m.lines("uid"), m.lines("gid")


def shift_map(m: IdMap, host_root: bool = False) -> tuple[str, str]:
    """The map of a host directory mounted into the domain (see the module's docstring).

    A mount's map reads "on-disk id, id as the host sees it through the mount, count";
    the domain's namespace then turns the latter into its own ids."""
    if host_root:
        return domain_maps(m)
    def lines(base: int) -> str:
        return f"1 {base + 1} {m.size - 1}\n{base} {base} 1\n"
    return lines(m.uid), lines(m.gid)


def ns_fd(pid: int) -> int:
    return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)


def make(uid_lines: str, gid_lines: str) -> int:
    """An fd of a new user namespace with these maps (held by no process)."""
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    hold_r, hold_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:                      # the holder: unshare, say so, wait to be let go
        try:
            os.close(ready_r)
            os.close(hold_w)
            syscalls.unshare(CLONE_NEWUSER)
            os.write(ready_w, b"u")
            os.read(hold_r, 1)
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(hold_r)
    try:
        if os.read(ready_r, 1) != b"u":
            raise OSError(errno.EIO, "the process that was to hold a user namespace died")
        write_maps(pid, uid_lines, gid_lines)
        return ns_fd(pid)
    finally:
        os.close(ready_r)
        os.close(hold_w)              # EOF: the holder exits
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def fstype(path: str) -> str:
    """The filesystem type mounted at or above *path* (for sentences)."""
    from .mounts import fstype_of
    try:
        return fstype_of(path)
    except OSError:
        return "unknown"


def idmapped_tree(path: str, userns: int, recursive: bool = True, dir_fd: int = AT_FDCWD) -> int:
    """A detached clone of the tree at *path* (with the mounts below it if *recursive*),
    its top mount's ids seen through *userns*'s map (the mounts below keep their own)."""
    flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (AT_RECURSIVE if recursive else 0)
    tree = syscalls.open_tree(dir_fd, path, flags | AT_SYMLINK_NOFOLLOW)
    try:
        syscalls.mount_setattr(tree, "", AT_EMPTY_PATH, MOUNT_ATTR_IDMAP, userns_fd=userns)
    except OSError as exc:
        os.close(tree)
        if exc.errno in (errno.EINVAL, errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS):
            raise OSError(errno.EIO, f"{path} is on a {fstype(path)} filesystem, which cannot be "
                                     f"idmapped ({os.strerror(exc.errno or errno.EIO)}); use a directory on "
                                     "ext4, xfs, btrfs or tmpfs, or privileged = true") from exc
        raise OSError(exc.errno, f"cannot idmap {path}: {os.strerror(exc.errno or errno.EIO)}") from exc
    return tree


def become_root() -> None:
    """In a (just joined or mapped) user namespace: be its root, with no host groups."""
    os.setresgid(0, 0, 0)
    os.setgroups([])
    os.setresuid(0, 0, 0)


def kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


UFFD_SYSCTL = "/proc/sys/vm/unprivileged_userfaultfd"
UFFD_LOCK = "/run/lock/vzfs-userfaultfd.lock"


@contextlib.contextmanager
def userfaultfd_window() -> Iterator[None]:
    """While inside: processes without CAP_SYS_PTRACE in the host's user namespace may
    make userfaultfds that handle kernel faults (userfaultfd(2), vm.unprivileged_userfaultfd).

    CRIU's lazy restore makes one in each restored task, from inside the domain's user
    namespace (CRIU itself suggests the sysctl). The window is held only while CRIU
    restores — a userfaultfd's rights are checked when it is made — under a host-wide
    lock so that overlapping restores cannot close it on each other, and the host's
    value is put back after. A host that set the sysctl to 1 itself is left alone."""
    os.makedirs(os.path.dirname(UFFD_LOCK), exist_ok=True)
    lock = os.open(UFFD_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with open(UFFD_SYSCTL) as f:
            before = f.read().strip()
        if before != "1":
            with open(UFFD_SYSCTL, "w") as f:
                f.write("1")
        try:
            yield
        finally:
            if before != "1":
                with open(UFFD_SYSCTL, "w") as f:
                    f.write(before)
    finally:
        os.close(lock)

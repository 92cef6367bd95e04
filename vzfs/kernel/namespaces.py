"""Namespaces: the flags vzfs unshares, and joining a running container's namespaces (setns(2))."""

import os

from . import syscalls
from .cdefs import (
    CLONE_NEWCGROUP,
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWUSER,
    CLONE_NEWUTS,
)

# Everything but the pid namespace, which the controller unshares before it forks
# init (a pid namespace only applies to children, pid_namespaces(7)).
CONTAINER_FLAGS = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET | CLONE_NEWCGROUP

# setns(2) order matters: the user namespace last — host root may join any
# namespace, the domain's root only those its namespace owns, and a CRIU restore
# does not keep every owner (its cgroup namespace) —, pid affects only children.
ENTER_ORDER = ("cgroup", "ipc", "uts", "net", "pid", "mnt", "user")
KINDS = ("cgroup", "ipc", "mnt", "net", "pid", "uts")


def ns_inode(pid: int | str, kind: str) -> int:
    """The namespace's identity: the inode number of /proc/PID/ns/KIND."""
    return os.stat(f"/proc/{pid}/ns/{kind}").st_ino


def open_namespaces(pid: int) -> dict[str, int]:
    """O_RDONLY fds of every namespace of *pid*, opened together so they match."""
    fds: dict[str, int] = {}
    try:
        for kind in ENTER_ORDER:
            if kind == "user" and ns_inode(pid, "user") == ns_inode("self", "user"):
                continue          # a privileged domain: joining our own would fail
            fds[kind] = os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        for fd in fds.values():
            os.close(fd)
        raise
    return fds


def fresh_netns() -> int:
    """An fd of a new network namespace with `lo` up, made without leaving ours (the
    caller must be single-threaded: unshare and setns act on the calling thread)."""
    from . import rootfs
    ours = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        syscalls.unshare(CLONE_NEWNET)
        try:
            rootfs.loopback_up()
            return os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        finally:
            syscalls.setns(ours, CLONE_NEWNET)
    finally:
        os.close(ours)


def enter(fds: dict[str, int]) -> None:
    """Join the namespaces in *fds* (from open_namespaces) — single-threaded callers only.
    In a domain's user namespace the caller becomes its root (host root is unmapped there)."""
    for kind in ENTER_ORDER:
        if kind in fds:
            syscalls.setns(fds[kind], 0)
            os.close(fds[kind])
            if kind == "user":
                from .userns import become_root
                become_root()


__all__ = ["CONTAINER_FLAGS", "CLONE_NEWPID", "CLONE_NEWUSER", "CLONE_NEWNS", "CLONE_NEWUTS",
           "CLONE_NEWIPC", "CLONE_NEWNET", "ns_inode", "open_namespaces", "enter", "KINDS"]

"""Turning a directory into a container's root: /proc, /sys, a fresh /dev, the console, pivot_root."""

import fcntl
import os
import socket
import stat
import struct

from . import syscalls
from ._cdefs import (MNT_DETACH, MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE,
                     MS_RDONLY, MS_REC, MS_REMOUNT)

# (name, major, minor): the character devices every container gets (devices.txt).
DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
           ("urandom", 1, 9), ("tty", 5, 0))
DEV_SYMLINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"),
                ("ptmx", "pts/ptmx"))

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def _mkdir(path: str, mode: int = 0o755) -> None:
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        pass


def make_private() -> None:
    """Stop mount events propagating back to the host (mount_namespaces(7))."""
    syscalls.mount(None, "/", None, MS_REC | MS_PRIVATE)


def bind_self(root: str) -> None:
    """pivot_root(2) needs new_root to be a mount point."""
    syscalls.mount(root, root, None, MS_BIND | MS_REC)


def mount_proc_sys(root: str) -> None:
    for name in ("proc", "sys"):
        _mkdir(os.path.join(root, name), 0o555)
    syscalls.mount("proc", os.path.join(root, "proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    sys_dir = os.path.join(root, "sys")
    syscalls.mount("sysfs", sys_dir, "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY)


def populate_dev(root: str, console: str | None) -> None:
    """A fresh tmpfs /dev with the basic nodes, a private devpts, and the console bound in."""
    dev = os.path.join(root, "dev")
    _mkdir(dev)
    syscalls.mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755,size=1024k")
    old = os.umask(0)
    try:
        for name, major, minor in DEVICES:
            os.mknod(os.path.join(dev, name), stat.S_IFCHR | 0o666, os.makedev(major, minor))
        for name, target in DEV_SYMLINKS:
            os.symlink(target, os.path.join(dev, name))
        for name, mode in (("pts", 0o755), ("shm", 0o1777), ("mqueue", 0o755)):
            os.mkdir(os.path.join(dev, name), mode)
    finally:
        os.umask(old)
    syscalls.mount("devpts", os.path.join(dev, "pts"), "devpts", MS_NOSUID | MS_NOEXEC,
                   "newinstance,ptmxmode=0666,mode=0620,gid=5")
    syscalls.mount("tmpfs", os.path.join(dev, "shm"), "tmpfs", MS_NOSUID | MS_NODEV,
                   "mode=1777,size=65536k")
    if console is not None:
        for name in ("console", "tty1"):
            node = os.path.join(dev, name)
            os.close(os.open(node, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
            syscalls.mount(console, node, None, MS_BIND)


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

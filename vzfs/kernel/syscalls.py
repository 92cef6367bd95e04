"""Typed wrappers around the raw syscalls vzfs needs, each checked through one `check()`.

Modelled on pyca/cryptography's binding: the declarations live in `cdefs`, the
library is opened once, and every call that can fail goes through `check()`,
which reads errno at once and raises `OSError(errno, "ACTION: strerror", path)`.
Nothing here logs, and nothing returns -1.
"""

import os
from typing import NoReturn

import cffi

from . import cdefs
from .cdefs import SYSCALLS

_ffi = cffi.FFI()
_ffi.cdef(cdefs.CDEFS)
_libc = _ffi.dlopen(None)


def _raise(action: str, path: str | None) -> NoReturn:
    err = _ffi.errno
    raise OSError(err, f"{action}: {os.strerror(err)}", path)


def check(result: int, action: str, path: str | None = None) -> int:
    """Return *result*, or raise the errno of a failed call as OSError."""
    if result == -1:
        _raise(action, path)
    return result


def _cstr(value: str | None) -> object:
    return _ffi.NULL if value is None else os.fsencode(value)


def unshare(flags: int) -> None:
    check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    check(_libc.setns(fd, nstype), "setns")


def mount(source: str | None, target: str, fstype: str | None = None,
          flags: int = 0, data: str | None = None) -> None:
    check(_libc.mount(_cstr(source), _cstr(target), _cstr(fstype), flags,
                      _cstr(data)), "mount", target)


def umount(target: str, flags: int = 0) -> None:
    check(_libc.umount2(_cstr(target), flags), "umount", target)


def pivot_root(new_root: str, put_old: str) -> None:
    check(_libc.syscall(SYSCALLS["pivot_root"], _ffi.new("char[]", os.fsencode(new_root)),
                        _ffi.new("char[]", os.fsencode(put_old))), "pivot_root", new_root)


def sethostname(name: str) -> None:
    raw = name.encode()
    check(_libc.sethostname(raw, len(raw)), "sethostname", name)


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return check(_libc.prctl(option, arg2, arg3, arg4, arg5), "prctl")


def drop_bounding_caps(caps: list[int]) -> None:
    """Remove capabilities from the bounding set (capabilities(7)); unknown ones are skipped."""
    for cap in caps:
        if _libc.prctl(cdefs.PR_CAPBSET_DROP, cap, 0, 0, 0) == -1:
            if _ffi.errno != 22:   # EINVAL: the running kernel doesn't know this cap
                _raise(f"drop capability {cap}", None)


def set_controlling_tty(fd: int) -> None:
    check(_libc.ioctl(fd, cdefs.TIOCSCTTY, _ffi.cast("int", 0)), "TIOCSCTTY")


def set_comm(name: str) -> None:
    """Name the calling thread as ps and top show it (proc(5) /proc/self/comm, 15 bytes)."""
    with open("/proc/self/comm", "w") as f:
        f.write(name[:15])


# The new mount API and openat2(2): glibc has no wrappers, so syscall(2). Its
# arguments are variadic, and cffi passes variadic arguments only as typed cdata.

def _long(value: int) -> object:
    return _ffi.cast("long", value)


def _path(value: str) -> object:
    return _ffi.new("char[]", os.fsencode(value))


def openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    """openat2(2): open *path* relative to *dirfd*, its resolution restricted by *resolve*."""
    how = _ffi.new("struct open_how *", {"flags": flags, "mode": mode, "resolve": resolve})
    return check(_libc.syscall(SYSCALLS["openat2"], _long(dirfd), _path(path), how,
                               _long(_ffi.sizeof("struct open_how"))), "openat2", path)


def open_tree(dirfd: int, path: str, flags: int) -> int:
    """open_tree(2): with OPEN_TREE_CLONE, a detached copy of the mount at *path*."""
    return check(_libc.syscall(SYSCALLS["open_tree"], _long(dirfd), _path(path),
                               _long(flags)), "open_tree", path)


def move_mount(from_dirfd: int, from_path: str, to_dirfd: int, to_path: str,
               flags: int) -> None:
    """move_mount(2): attach (or move) a mount; with *_EMPTY_PATH the fds name both ends."""
    check(_libc.syscall(SYSCALLS["move_mount"], _long(from_dirfd), _path(from_path),
                        _long(to_dirfd), _path(to_path), _long(flags)), "move_mount")


def fsopen(fstype: str, flags: int) -> int:
    """fsopen(2): a filesystem context for *fstype*, to configure with fsconfig(2)."""
    return check(_libc.syscall(SYSCALLS["fsopen"], _path(fstype), _long(flags)),
                 "fsopen", fstype)


def fsconfig(fs_fd: int, cmd: int, key: str | None = None, value: str | None = None,
             aux: int = 0) -> None:
    """fsconfig(2): set one parameter of a filesystem context, or run a command on it."""
    action = f"fsconfig {key}={value}" if key is not None else "fsconfig"
    check(_libc.syscall(SYSCALLS["fsconfig"], _long(fs_fd), _long(cmd),
                        _ffi.NULL if key is None else _path(key),
                        _ffi.NULL if value is None else _path(value), _long(aux)), action)


def fsmount(fs_fd: int, flags: int, attr_flags: int = 0) -> int:
    """fsmount(2): a detached mount of a created filesystem context."""
    return check(_libc.syscall(SYSCALLS["fsmount"], _long(fs_fd), _long(flags),
                               _long(attr_flags)), "fsmount")


def mount_setattr(dirfd: int, path: str, flags: int, attr_set: int, attr_clr: int = 0,
                  propagation: int = 0, userns_fd: int = 0) -> None:
    """mount_setattr(2): change mount properties (MOUNT_ATTR_*, propagation) of a mount;
    with MOUNT_ATTR_IDMAP, *userns_fd* names the user namespace whose map it takes."""
    attr = _ffi.new("struct mount_attr *", {"attr_set": attr_set, "attr_clr": attr_clr,
                                            "propagation": propagation,
                                            "userns_fd": userns_fd})
    check(_libc.syscall(SYSCALLS["mount_setattr"], _long(dirfd), _path(path), _long(flags),
                        attr, _long(_ffi.sizeof("struct mount_attr"))), "mount_setattr", path)


def warm() -> None:
    """Build cffi's call objects now, in the process that forks the others.

    cffi builds a function's call object on its first use, and for syscall(2),
    whose arguments are variadic, one for each list of argument types: 0.1 ms
    each, 0.7 ms for pivot_root's. A fork inherits what its parent built, so
    the zygote builds them once and a container's start pays for none. Each
    call below fails at once (an empty path, fd -1) and changes nothing.
    """
    for name in ("unshare", "setns", "mount", "umount2", "sethostname", "prctl", "statx"):
        getattr(_libc, name)
    for call in (lambda: pivot_root("", ""),
                 lambda: open_tree(-1, "", 0),
                 lambda: move_mount(-1, "", -1, "", 0),
                 lambda: fsopen("", 0),
                 lambda: fsconfig(-1, 0),
                 lambda: fsconfig(-1, 0, "", ""),
                 lambda: fsmount(-1, 0),
                 lambda: mount_setattr(-1, "", 0, 0),
                 lambda: openat2(-1, "", 0, 0),
                 lambda: set_controlling_tty(-1)):
        try:
            call()
        except OSError:
            pass


def statx_mnt_id(dirfd: int, path: str, flags: int) -> tuple[int, int]:
    """(mount id, inode) of *path* relative to *dirfd* (statx(2) STATX_MNT_ID)."""
    buf = _ffi.new("struct statx *")
    check(_libc.statx(dirfd, os.fsencode(path), flags, cdefs.STATX_MNT_ID | cdefs.STATX_INO,
                      buf), "statx", path)
    if not buf.stx_mask & cdefs.STATX_MNT_ID:
        raise OSError(95, "statx: this kernel reports no mount ids (STATX_MNT_ID, Linux 5.8)", path)
    return int(buf.stx_mnt_id), int(buf.stx_ino)

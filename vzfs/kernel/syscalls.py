"""Typed wrappers around the raw syscalls vzfs needs, each checked through one `check()`.

Modelled on pyca/cryptography's binding: the declarations live in `_cdefs`, the
library is opened once, and every call that can fail goes through `check()`,
which reads errno at once and raises `OSError(errno, "ACTION: strerror", path)`.
Nothing here logs, and nothing returns -1.
"""

import os
from typing import NoReturn

import cffi

from . import _cdefs
from ._cdefs import SYSCALLS

_ffi = cffi.FFI()
_ffi.cdef(_cdefs.CDEFS)
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
        if _libc.prctl(_cdefs.PR_CAPBSET_DROP, cap, 0, 0, 0) == -1:
            if _ffi.errno != 22:   # EINVAL: the running kernel doesn't know this cap
                _raise(f"drop capability {cap}", None)


def set_controlling_tty(fd: int) -> None:
    check(_libc.ioctl(fd, _cdefs.TIOCSCTTY, _ffi.cast("int", 0)), "TIOCSCTTY")


def set_comm(name: str) -> None:
    """Name the calling thread as ps and top show it (proc(5) /proc/self/comm, 15 bytes)."""
    with open("/proc/self/comm", "w") as f:
        f.write(name[:15])

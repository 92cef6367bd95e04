"""The seccomp filter every domain runs under, built by libseccomp (seccomp(2)).

In the spirit of the OCI/Docker default profile and LXC's, for *system* containers:
a domain keeps what a distribution's init needs (mount, unshare, setns, pivot_root,
reboot of its own pid namespace, ptrace of its own processes) and loses what reaches
the host's kernel as a whole: kexec, modules, open_by_handle_at (the "shocker"
escape), the kernel keyring (ENOSYS, so systemd and others fall back quietly),
perf_event_open, bpf, userfaultfd, swap, accounting, I/O ports, the clock and
quotas. A privileged domain has no user namespace to stop it, so it also may not
remount anything read-write (a `ro` mount, /sys) and may not use the new mount
API, whose arguments seccomp cannot inspect (ENOSYS: tools fall back to mount(2)).

The filters are built once in the zygote (`warm`) and loaded by each container's
init right before it execs (and by `vzfs enter` before its command), without
no_new_privs: loading then asks for CAP_SYS_ADMIN in the caller's own user
namespace, which both have, and set-user-ID programs inside keep working.
"""

import errno

try:
    # pyseccomp: libseccomp's Python API (the same names as the bindings libseccomp
    # ships) over ctypes, so it runs on any Python beside the system's libseccomp.
    import pyseccomp as _libseccomp
except (ImportError, OSError) as exc:     # no package, or no libseccomp.so.2
    _libseccomp = None
    _IMPORT_ERROR = str(exc)
else:
    _IMPORT_ERROR = ""

MS_RDONLY = 1
MS_REMOUNT = 32

DENIED_EPERM = (
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "create_module", "query_module", "get_kernel_syms", "open_by_handle_at",
    "perf_event_open", "bpf", "userfaultfd", "swapon", "swapoff", "acct", "iopl",
    "ioperm", "lookup_dcookie", "nfsservctl", "uselib", "vm86", "vm86old", "_sysctl",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "quotactl",
    "quotactl_fd",
)
DENIED_ENOSYS = ("add_key", "request_key", "keyctl")
NEW_MOUNT_API = ("fsopen", "fsconfig", "fsmount", "fspick", "open_tree", "move_mount",
                 "mount_setattr")

_built: dict[bool, object] = {}


def available() -> str:
    """"" when the filter can be built, else why not (for `version`)."""
    return "" if _libseccomp is not None else f"no libseccomp bindings ({_IMPORT_ERROR})"


def build(privileged: bool) -> object:
    """The filter for a domain of this kind (libseccomp's SyscallFilter), made once."""
    if privileged in _built:
        return _built[privileged]
    if _libseccomp is None:
        raise OSError(errno.ENOSYS, f"cannot build the seccomp filter: {available()}")
    f = _libseccomp.SyscallFilter(defaction=_libseccomp.ALLOW)
    # libseccomp sets no_new_privs by default, which would make every set-user-ID
    # program inside (su, sudo, ping) run without its privileges; loading asks for
    # CAP_SYS_ADMIN in the caller's user namespace instead, which init and enter have.
    f.set_attr(_libseccomp.Attr.CTL_NNP, 0)
    for name in DENIED_EPERM:
        _deny(f, name, errno.EPERM)
    for name in DENIED_ENOSYS:
        _deny(f, name, errno.ENOSYS)
    if privileged:
        for name in NEW_MOUNT_API:
            _deny(f, name, errno.ENOSYS)
        # mount(2) flags are its fourth argument: a remount that does not ask for
        # MS_RDONLY would make something writable (mount(8) -o remount,rw).
        f.add_rule(_libseccomp.ERRNO(errno.EPERM), "mount",
                   _libseccomp.Arg(3, _libseccomp.MASKED_EQ, MS_REMOUNT | MS_RDONLY, MS_REMOUNT))
    _built[privileged] = f
    return f


def _deny(f: object, name: str, err: int) -> None:
    try:
        f.add_rule(_libseccomp.ERRNO(err), name)          # type: ignore[attr-defined]
    except (OSError, RuntimeError, ValueError):
        pass         # a syscall this architecture or libseccomp does not know (EINVAL)


def load(privileged: bool) -> None:
    """Install the filter on the calling process (inherited by everything it execs)."""
    try:
        build(privileged).load()                           # type: ignore[attr-defined]
    except (RuntimeError, ValueError) as exc:
        raise OSError(errno.EPERM, f"cannot load the seccomp filter: {exc}") from exc
    except OSError as exc:
        raise OSError(exc.errno, f"cannot load the seccomp filter: {exc.strerror}") from exc


def warm() -> None:
    """Build both filters now, in the process that forks the others."""
    if _libseccomp is not None:
        build(False)
        build(True)

"""A container's extra mounts (binds and tmpfs), made with the kernel's fd-based mount API.

Theory of operation. A mount is built *detached* first (`prepare_source`: open_tree(2)
clones a host tree, or fsopen(2)/fsconfig(2)/fsmount(2) create a tmpfs; then
mount_setattr(2) sets ro/nosuid/nodev/noexec and propagation on the still-private
copy), and only then attached with move_mount(2) onto an fd of its target. The
target is resolved and created one component at a time with openat2(2)
RESOLVE_BENEATH relative to an fd of the container's root, so neither `..`, nor an
absolute or climbing symlink, nor a magic link can lead outside that root — and
since move_mount(2) takes the fd, not a path, a symlink swapped in by the container
after the check changes nothing. There is no string check of paths anywhere here.

At start this runs in the container's builder before the container's own mount
namespace exists: `prepare_sources` makes the detached mounts while the builder is
in the host's mount namespace, `attach_at_start` attaches them in its own
(`apply_at_start` is both at once, where the two namespaces are one). For a running container (`inject`, `eject`)
it runs in a forked child, because setns(2) into a mount namespace needs a
single-threaded caller (and changes the caller's root): the child builds the mount
in the host's namespace, where the source path means what the user meant, then
joins the container's and attaches it there.

In an unprivileged domain (a user namespace) a host directory is idmapped
(kernel.userns `shift_map`, the `idmap=` option) and its flags must stay as vzfs
set them: root inside owns its mount namespace and could otherwise remount a `ro`
mount read-write. The kernel locks a mount's flags when it is copied into a mount
namespace of a less privileged user namespace (mount_namespaces(7)), so `inject`
stages the mount in a private namespace of its own, joins the domain's user
namespace, unshares a copy there (now locked), clones the locked mount and attaches
that clone: its MNT_LOCK_READONLY travels with it.
"""

import errno
import os
import stat
from collections.abc import Callable, Sequence

from ..model.idmap import IdMap
from ..model.mountspec import MountSpec
from . import mountinfo, syscalls, userns
from .cdefs import (
    AT_EMPTY_PATH,
    AT_FDCWD,
    AT_RECURSIVE,
    CLONE_NEWNS,
    CLONE_NEWUSER,
    FSCONFIG_CMD_CREATE,
    FSCONFIG_SET_STRING,
    FSMOUNT_CLOEXEC,
    FSOPEN_CLOEXEC,
    MOUNT_ATTR_IDMAP,
    MOVE_MOUNT_F_EMPTY_PATH,
    MOVE_MOUNT_T_EMPTY_PATH,
    MS_PRIVATE,
    MS_REC,
    OPEN_TREE_CLOEXEC,
    OPEN_TREE_CLONE,
    RESOLVE_BENEATH,
    RESOLVE_NO_MAGICLINKS,
    UMOUNT_NOFOLLOW,
)

_RESOLVE = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS
_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_PIPE_BUF = 4096          # one write of at most PIPE_BUF bytes is atomic (pipe(7))
STAGE = "/tmp"            # covered, in a helper's private mount namespace only


def _relative(path: str) -> str:
    return path.lstrip("/") or "."


def _close(*fds: int) -> None:
    for fd in fds:
        if fd >= 0:
            os.close(fd)


def _escapes(path: str) -> OSError:
    return OSError(errno.EPERM, f"{path} resolves outside the container's root", path)


def open_beneath(root_fd: int, path: str, flags: int = os.O_PATH) -> int:
    """An fd of *path* (a container path) resolved strictly beneath *root_fd* (openat2(2))."""
    rel = _relative(path)
    try:
        return syscalls.openat2(root_fd, rel, flags | os.O_CLOEXEC, _RESOLVE)
    except OSError as exc:
        if exc.errno == errno.EXDEV:      # `..` above the root, or an absolute symlink
            raise _escapes(path) from exc
        if exc.errno == errno.ELOOP:
            # A magic link (/proc/self/root…), or a genuine symlink loop? Without
            # RESOLVE_NO_MAGICLINKS, RESOLVE_BENEATH still refuses a magic link that
            # jumps out (EXDEV) while a loop stays ELOOP.
            try:
                _close(syscalls.openat2(root_fd, rel, flags | os.O_CLOEXEC, RESOLVE_BENEATH))
            except OSError as again:
                if again.errno == errno.ELOOP:
                    raise OSError(errno.ELOOP, f"{path}: too many levels of symbolic links "
                                  "(a loop, or a symlink as the last component)", path) from exc
            raise _escapes(path) from exc
        raise OSError(exc.errno, f"{path}: {os.strerror(exc.errno or errno.EIO)}", path) from exc


def _is_dir(fd: int) -> bool:
    return stat.S_ISDIR(os.fstat(fd).st_mode)


def _make_one(parent_fd: int, name: str, directory: bool, path: str) -> None:
    """Create *name* in *parent_fd* (never following a symlink there); EEXIST is a race won by
    someone else, which the caller's next open_beneath sorts out."""
    try:
        if directory:
            os.mkdir(name, 0o755, dir_fd=parent_fd)
        else:
            _close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                           | os.O_CLOEXEC, 0o644, dir_fd=parent_fd))
    except FileExistsError:
        pass
    except OSError as exc:
        kind = "directory" if directory else "file"
        raise OSError(exc.errno, f"cannot create {kind} {path}: {os.strerror(exc.errno or errno.EIO)}",
                      path) from exc


def _open_or_make(root_fd: int, parent_fd: int, name: str, path: str, directory: bool) -> int:
    try:
        return open_beneath(root_fd, path)
    except FileNotFoundError:
        _make_one(parent_fd, name, directory, path)
    return open_beneath(root_fd, path)


def make_target(root_fd: int, target: str, directory: bool) -> int:
    """An O_PATH fd of *target* beneath *root_fd*, creating what is missing: parents as
    directories (0755), the last one as a directory or an empty file (0644)."""
    parts = [p for p in target.split("/") if p not in ("", ".")]
    if not parts:
        raise OSError(errno.EINVAL, "the container's root itself is no mount target", target)
    parent = open_beneath(root_fd, ".", _DIR)
    try:
        for i, name in enumerate(parts[:-1]):
            path = "/" + "/".join(parts[:i + 1])
            fd = _open_or_make(root_fd, parent, name, path, True)
            os.close(parent)
            parent = fd
            if not _is_dir(parent):
                raise OSError(errno.ENOTDIR, f"{path} is not a directory", path)
        path = "/" + "/".join(parts)
        fd = _open_or_make(root_fd, parent, parts[-1], path, directory)
    finally:
        os.close(parent)
    is_dir = _is_dir(fd)
    if is_dir != directory:
        os.close(fd)
        if directory:
            raise OSError(errno.ENOTDIR, f"{path} is a file, the source a directory", path)
        raise OSError(errno.EISDIR, f"{path} is a directory, the source a file", path)
    return fd


def _fs_log(fs_fd: int) -> str:
    """The filesystem context's own error message, if it left one (fsopen(2) "Message
    retrieval interface": each read(2) returns one "e …" line, ENODATA at the end)."""
    try:
        line = os.read(fs_fd, 1024).decode(errors="replace").strip()
    except OSError:
        return ""
    return line[2:] if line[:2] in ("e ", "w ", "i ") else line


def _mount_userns(spec: MountSpec, idmap: IdMap | None) -> int:
    """A user namespace fd holding the map *spec* is seen through, or -1 for none."""
    if idmap is None or (spec.idmap == "none" and not spec.is_tmpfs):
        return -1
    host_root = spec.is_tmpfs or spec.idmap == "host"   # a tmpfs is the domain's own
    return userns.make(*userns.shift_map(idmap, host_root))


def prepare_source(spec: MountSpec, idmap: IdMap | None = None) -> int:
    """A detached mount for *spec*, its flags and propagation already set (close-on-exec);
    with *idmap* (an unprivileged domain's), its ids shifted as `idmap=` says."""
    recursive = AT_RECURSIVE if spec.recursive else 0
    if spec.is_tmpfs:
        mnt_fd = new_fs("tmpfs", 0, spec.tmpfs_options)
    else:
        try:
            mnt_fd = syscalls.open_tree(AT_FDCWD, spec.source,
                                        OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | recursive)
        except FileNotFoundError as exc:
            raise OSError(errno.ENOENT, f"mount source {spec.source} does not exist",
                          spec.source) from exc
        except OSError as exc:
            raise OSError(exc.errno, f"cannot clone mount source {spec.source}: "
                          f"{os.strerror(exc.errno or errno.EIO)}", spec.source) from exc
    ns_fd = -1
    try:
        ns_fd = _mount_userns(spec, idmap)
        # On the detached copy, before anyone inside can see it: `ro` is a per-mount
        # flag (MOUNT_ATTR_RDONLY), so it holds for root inside too (EROFS).
        syscalls.mount_setattr(mnt_fd, "", AT_EMPTY_PATH | recursive,
                               spec.attr_set | (MOUNT_ATTR_IDMAP if ns_fd >= 0 else 0), 0,
                               spec.propagation, userns_fd=max(ns_fd, 0))
    except OSError as exc:
        os.close(mnt_fd)
        if ns_fd >= 0 and exc.errno in (errno.EINVAL, errno.EPERM, errno.EOPNOTSUPP):
            raise OSError(errno.EIO, f"{spec.source} is on a {userns.fstype(spec.source)} "
                          "filesystem, which cannot be idmapped: mount it with idmap=none "
                          f"({os.strerror(exc.errno or errno.EIO)})") from exc
        raise OSError(exc.errno, f"cannot set options {spec.options_text}: "
                      f"{os.strerror(exc.errno or errno.EIO)}") from exc
    finally:
        _close(ns_fd)
    return mnt_fd


def new_fs(fstype: str, attrs: int, options: dict[str, str] | None = None) -> int:
    """A detached mount of a new *fstype* filesystem (fsopen(2), fsconfig(2), fsmount(2)
    with the MOUNT_ATTR_* *attrs*); a refused option or creation says why, from the
    filesystem's own log where it wrote one."""
    fs_fd = syscalls.fsopen(fstype, FSOPEN_CLOEXEC)
    try:
        for key, value in (options or {}).items():
            try:
                syscalls.fsconfig(fs_fd, FSCONFIG_SET_STRING, key, value)
            except OSError as exc:
                why = _fs_log(fs_fd) or os.strerror(exc.errno or errno.EIO)
                raise OSError(exc.errno, f"{fstype} option {key}={value}: {why}") from exc
        try:
            syscalls.fsconfig(fs_fd, FSCONFIG_CMD_CREATE)
        except OSError as exc:
            why = _fs_log(fs_fd) or os.strerror(exc.errno or errno.EIO)
            raise OSError(exc.errno, f"cannot create a {fstype}: {why}") from exc
        return syscalls.fsmount(fs_fd, FSMOUNT_CLOEXEC, attrs)
    finally:
        os.close(fs_fd)


def attach_beneath(mnt_fd: int, root_fd: int, path: str) -> None:
    """Attach the detached *mnt_fd* on *path* beneath *root_fd* (never outside it), and
    close it."""
    try:
        target = open_beneath(root_fd, path)
        try:
            attach(mnt_fd, target)
        finally:
            os.close(target)
    finally:
        os.close(mnt_fd)


def attach(mnt_fd: int, target_fd: int) -> None:
    """Attach a detached mount onto the target fd (move_mount(2), fds at both ends)."""
    syscalls.move_mount(mnt_fd, "", target_fd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH)


def _detach(root_fd: int, target: str, fd_dir: str) -> None:
    """detach(), reaching our own fds through *fd_dir* (a path of /proc/self/fd)."""
    parts = [p for p in target.split("/") if p not in ("", ".")]
    if not parts or parts[-1] == "..":
        raise OSError(errno.EINVAL, f"{target} is not a mount point", target)
    name = parts[-1]
    try:
        parent = open_beneath(root_fd, "/" + "/".join(parts[:-1]), _DIR)
    except FileNotFoundError as exc:
        raise OSError(errno.EINVAL, f"{target} is not a mount point (it does not exist)",
                      target) from exc
    try:
        # The mount point itself (a symlink there is not followed: name the mount point).
        fd = syscalls.openat2(parent, name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, _RESOLVE)
        try:
            parent_id, _ = syscalls.statx_mnt_id(parent, "", AT_EMPTY_PATH)
            mnt_id, _ = syscalls.statx_mnt_id(fd, "", AT_EMPTY_PATH)
        finally:
            # An open fd of the mount would itself make it busy.
            os.close(fd)
        if mnt_id == parent_id:
            raise OSError(errno.EINVAL, f"{target} is not a mount point", target)
        # umount2(2) takes only a path: our parent fd's magic link plus one component,
        # not followed if a symlink — never a path string walked from a root. No
        # MNT_DETACH: a mount in use must stay and say so.
        try:
            syscalls.umount(f"{fd_dir}/{parent}/{name}", UMOUNT_NOFOLLOW)
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                raise OSError(errno.EBUSY, f"{target} is busy: a process inside uses it",
                              target) from exc
            raise OSError(exc.errno, f"cannot unmount {target}: {os.strerror(exc.errno or errno.EIO)}",
                          target) from exc
    except FileNotFoundError as exc:
        raise OSError(errno.EINVAL, f"{target} is not a mount point (it does not exist)",
                      target) from exc
    finally:
        os.close(parent)


def detach(root_fd: int, target: str) -> None:
    """Unmount the mount at *target* beneath *root_fd*: EINVAL if none is there, EBUSY
    (and the mount stays) if a process uses it."""
    _detach(root_fd, target, "/proc/self/fd")


def prepare_sources(specs: Sequence[MountSpec], idmap: IdMap | None = None) -> list[int]:
    """`prepare_source` for each of *specs*, in the caller's mount namespace (where the
    sources are the host's); errors name the mount."""
    fds: list[int] = []
    try:
        for spec in specs:
            try:
                fds.append(prepare_source(spec, idmap))
            except OSError as exc:
                raise OSError(exc.errno, f"mount {spec.source} on {spec.target}: "
                              f"{exc.strerror}", spec.target) from exc
    except BaseException:
        _close(*fds)
        raise
    return fds


def attach_at_start(root: str, specs: Sequence[MountSpec], fds: Sequence[int]) -> None:
    """Attach the prepared *fds* of *specs* in order under *root* (and close them): in the
    container's mount namespace while it is still host-owned (the builder's)."""
    root_fd = os.open(root, _DIR)
    try:
        for spec, mnt_fd in zip(specs, fds):
            target_fd = -1
            try:
                target_fd = make_target(root_fd, spec.target, _is_dir(mnt_fd))
                attach(mnt_fd, target_fd)
            except OSError as exc:
                raise OSError(exc.errno, f"mount {spec.source} on {spec.target}: "
                              f"{exc.strerror}", spec.target) from exc
            finally:
                _close(target_fd)
    finally:
        _close(*fds)
        os.close(root_fd)


def apply_at_start(root: str, specs: Sequence[MountSpec], idmap: IdMap | None = None) -> None:
    """Mount *specs* in order under *root*, sources as this mount namespace sees them."""
    attach_at_start(root, specs, prepare_sources(specs, idmap))


def _report(exc: BaseException) -> bytes:
    code = getattr(exc, "errno", None) or errno.EIO
    sentence = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return f"{code} {sentence}".encode(errors="replace")[:_PIPE_BUF]


class Pending:
    """A forked helper at work: wait until `fd` is readable (or just call `finish`)."""

    def __init__(self, pid: int, fd: int) -> None:
        self.pid = pid
        self.fd = fd

    def finish(self) -> None:
        """Collect the helper's outcome; re-raise its failure as OSError(errno, sentence)."""
        try:
            reply = os.read(self.fd, _PIPE_BUF)
        finally:
            os.close(self.fd)
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:     # someone reaps children for us (SIGCHLD ignored)
                pass
        if reply == b"OK":
            return
        if not reply:
            raise OSError(errno.EIO, "the mount helper process died without a word")
        code, _, sentence = reply.decode(errors="replace").partition(" ")
        raise OSError(int(code) if code.isdigit() else errno.EIO, sentence)


def _fork(work: Callable[[], None]) -> Pending:
    """Run *work* in a forked child that reports "OK" or "errno sentence" on a pipe.

    fork, not a thread: setns(CLONE_NEWNS) refuses a multi-threaded caller and would
    change the caller's root. The parent uses no signals. An event loop calls this
    from its own thread (not a worker's), so that no other thread of ours is in the
    middle of anything when the child is made, and waits for `Pending.fd`.
    """
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.fork()
    except BaseException:
        _close(read_fd, write_fd)
        raise
    if pid == 0:                                          # the child: never returns
        try:
            os.close(read_fd)
            work()
            message = b"OK"
        except BaseException as exc:   # the child's only boundary: report, then exit
            message = _report(exc)
        try:
            os.write(write_fd, message)
        finally:
            os._exit(0)
    os.close(write_fd)
    return Pending(pid, read_fd)


def _join_mount_ns(pid: int) -> None:
    try:
        ns_fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot open the mount namespace of pid {pid}: "
                      f"{os.strerror(exc.errno or errno.EIO)}") from exc
    try:
        syscalls.setns(ns_fd, CLONE_NEWNS)
    finally:
        os.close(ns_fd)


def inject(pid: int, spec: MountSpec, idmap: IdMap | None = None) -> None:
    """Mount *spec* into the running container whose init is host pid *pid*."""
    start_inject(pid, spec, idmap).finish()


def _locked_copy(mnt_fd: int, pid: int) -> int:
    """*mnt_fd* as the domain's user namespace gets it: flags locked (module docstring).
    Leaves the calling process in that user namespace, as its root."""
    syscalls.unshare(CLONE_NEWNS)
    syscalls.mount(None, "/", None, MS_REC | MS_PRIVATE)
    # A stage of our own, on a fresh tmpfs any id may search: the domain's root
    # cannot walk the host's paths to the source (a 0700 directory on the way).
    syscalls.mount("tmpfs", STAGE, "tmpfs", 0, "mode=0755,size=16k")
    os.chdir(STAGE)
    _make_one(AT_FDCWD, "stage", _is_dir(mnt_fd), STAGE + "/stage")
    syscalls.move_mount(mnt_fd, "", AT_FDCWD, "stage", MOVE_MOUNT_F_EMPTY_PATH)
    os.close(mnt_fd)
    ns = userns.ns_fd(pid)
    try:
        syscalls.setns(ns, CLONE_NEWUSER)
    finally:
        os.close(ns)
    userns.become_root()
    syscalls.unshare(CLONE_NEWNS)        # the working directory follows into the copy
    return syscalls.open_tree(AT_FDCWD, "stage", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC)


def start_inject(pid: int, spec: MountSpec, idmap: IdMap | None = None) -> Pending:
    """`inject`, returning once the helper is forked (for an event loop to wait on).
    *idmap* is the domain's when it runs in a user namespace."""
    def work() -> None:
        try:
            # The source resolves in the host's namespace; the detached mount then
            # travels into the container's as an fd.
            mnt_fd = prepare_source(spec, idmap)
            if idmap is not None:
                # Staged on its own source: any path of ours that it fits would do.
                mnt_fd = _locked_copy(mnt_fd, pid)
            _join_mount_ns(pid)           # now "/" is the container's root
            root_fd = os.open("/", _DIR)
            # Resolution beneath root_fd and an fd-to-fd move_mount: a symlink the
            # container swaps in meanwhile cannot send this mount outside its root.
            target_fd = make_target(root_fd, spec.target, _is_dir(mnt_fd))
            attach(mnt_fd, target_fd)
        except OSError as exc:
            raise OSError(exc.errno, f"mount {spec.source} on {spec.target}: "
                          f"{exc.strerror}") from exc
    return _fork(work)


def eject(pid: int, target: str) -> None:
    """Unmount *target* in the running container whose init is host pid *pid*."""
    start_eject(pid, target).finish()


def start_eject(pid: int, target: str) -> Pending:
    """`eject`, returning once the helper is forked (for an event loop to wait on)."""
    def work() -> None:
        # The container's /proc (if any) belongs to its pid namespace, where this
        # process has no /proc/self: reach our fds through the host's /proc, as cwd.
        fd_dir = os.open("/proc/self/fd", _DIR)
        _join_mount_ns(pid)
        os.fchdir(fd_dir)
        root_fd = os.open("/", _DIR)
        _detach(root_fd, target, ".")
    return _fork(work)


def fstype_of(path: str) -> str:
    """The type of the filesystem *path* is on (its mount's, from mountinfo)."""
    mnt_id, _ = syscalls.statx_mnt_id(AT_FDCWD, path, 0)
    for entry in mountinfo.read():
        if entry.mount_id == mnt_id:
            return entry.fstype
    return "unknown"


def _targets(entries: list[mountinfo.MountInfo]) -> dict[str, str]:
    # Later lines win: a mount covers the earlier ones at the same point.
    return {entry.mount_point: ",".join(entry.mount_options) for entry in entries}


def parse_mountinfo(text: str) -> dict[str, str]:
    """{mount point: per-mount options} from proc(5) mountinfo text (later mounts win)."""
    return _targets(mountinfo.parse(text))


def mounted_targets(pid: int) -> dict[str, str]:
    """Every mount of *pid*'s namespace as that process sees it (container paths) →
    its per-mount options ("ro,nosuid,nodev,noexec,relatime")."""
    return _targets(mountinfo.read(pid))

"""Replacing a file whole, so that readers and a crash see the old content or the new.

The state dir's records (a domain's config, the controller's last_exit.json,
mounts.json and checkpoint figures) are written this way, and so is the screen saved
on a container's root. That directory is the container's, which may have planted a
symlink at the temp file's name: the temp file is made anew (O_EXCL) and never
through a link (O_NOFOLLOW), and `controller.screenstate` opens the directory itself
without following links.
"""

import os


def atomic_write(path: str, data: str | bytes, *, dir_fd: int | None = None) -> None:
    """Replace *path* (relative to *dir_fd* when given) with *data*: a temp file,
    fsync, rename over *path*, fsync of the directory."""
    raw = data.encode() if isinstance(data, str) else data
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        os.unlink(tmp, dir_fd=dir_fd)       # left by a crash (or planted)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                 dir_fd=dir_fd)
    try:
        view = memoryview(raw)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    dfd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC,
                  dir_fd=dir_fd)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)

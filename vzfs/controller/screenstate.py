"""The console's screen, kept in a file on the domain's root across a checkpoint or a move.

Before a dump the controller writes its emulator's snapshot (which holds the terminal
size) to ``/.vzfs/console.json`` in the container's root; the file travels with the
root, and the controller that restores the domain loads it and removes it, so the
screen after resume is the screen before suspend. Never per-connection state: VNC
clients simply reconnect.

The root is the container's to change: a process inside could have replaced
``/.vzfs`` by a symlink to a host path. Every step is relative to a descriptor of
the root and refuses symlinks (O_NOFOLLOW), so the controller, which runs as root
on the host, never follows a path out of the container.
"""

import contextlib
import errno
import json
import os
from collections.abc import Iterator
from typing import Any

from ..base.atomicfile import atomic_write

DIR = ".vzfs"
FILE = "console.json"
VERSION = 1
MAX_BYTES = 64 << 20


@contextlib.contextmanager
def root(path: str) -> Iterator[int]:
    """An fd of the container's root directory *path* (the host's path to it)."""
    fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def _open_dir(root_fd: int, create: bool) -> int:
    if create:
        try:
            os.mkdir(DIR, 0o700, dir_fd=root_fd)
        except FileExistsError:
            pass
    return os.open(DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                   dir_fd=root_fd)


def save(root_fd: int, snapshot: dict[str, Any]) -> None:
    """Write the snapshot atomically (a reader sees the old file or the new, whole)."""
    body = json.dumps({"version": VERSION, "terminal": snapshot}, separators=(",", ":")).encode()
    dir_fd = _open_dir(root_fd, create=True)
    try:
        atomic_write(FILE, body, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


def load(root_fd: int, consume: bool = True) -> dict[str, Any] | None:
    """The saved snapshot, and by default remove the file (it describes one moment); None
    if there is none. A restore keeps it until it succeeded (`remove`): a failed one is
    tried again."""
    try:
        dir_fd = _open_dir(root_fd, create=False)
    except FileNotFoundError:
        return None
    try:
        try:
            fd = os.open(FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        except FileNotFoundError:
            return None
        try:
            body = os.read(fd, MAX_BYTES + 1)
        finally:
            os.close(fd)
        if consume:
            os.unlink(FILE, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    if len(body) > MAX_BYTES:
        raise OSError(errno.EFBIG, f"the saved console state is over {MAX_BYTES} bytes")
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise OSError(errno.EINVAL, f"the saved console state is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("version") != VERSION or not isinstance(
            doc.get("terminal"), dict):
        raise OSError(errno.EINVAL, "the saved console state has an unknown format")
    terminal: dict[str, Any] = doc["terminal"]
    return terminal


def remove(root_fd: int) -> None:
    try:
        dir_fd = _open_dir(root_fd, create=False)
    except FileNotFoundError:
        return
    try:
        os.unlink(FILE, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    finally:
        os.close(dir_fd)

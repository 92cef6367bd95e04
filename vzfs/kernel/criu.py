"""Which CRIU vzfs runs for checkpoints, and whether it is new enough.

CRIU 4 or later is needed: Debian 12's 3.17 fails every command on current kernels
("Unexpected rt vDSO area bounds"). ./bootstrap puts a working one at
.venv/bin/criu — on Debian 12, Debian 13's criu run through its own loader.
"""

import errno
import functools
import os
import re
import shutil
import subprocess
import sys

import trio

ENV = "VZFS_CRIU"
MIN_VERSION = (4, 0)
VERSION_TIMEOUT = 10.0

# `criu --version` prints "Version: 4.1.1", then a "GitID:" line in git builds.
_VERSION_LINE = re.compile(r"^Version:\s*(\d+(?:\.\d+)+)\s*$", re.MULTILINE)


def locate() -> str:
    """The CRIU command vzfs runs: $VZFS_CRIU, else the criu beside this interpreter
    (where ./bootstrap puts it), else criu on PATH, /usr/sbin or /sbin."""
    chosen = os.environ.get(ENV)
    if chosen:
        if not (os.path.isfile(chosen) and os.access(chosen, os.X_OK)):
            raise OSError(errno.ENOENT, f"{ENV} names {chosen}, which is not an executable file")
        return os.path.abspath(chosen)
    beside = os.path.join(sys.prefix, "bin", "criu")
    if os.path.isfile(beside) and os.access(beside, os.X_OK):
        return beside
    # root's PATH has the sbin directories, a daemon started by another route may not.
    search = os.pathsep.join(filter(None, (os.environ.get("PATH"), "/usr/sbin", "/sbin")))
    found = shutil.which("criu", path=search)
    if found:
        return os.path.abspath(found)
    raise OSError(errno.ENOENT, f"no CRIU found: set {ENV} or run ./bootstrap")


@functools.cache
def version(path: str) -> str:
    """The version *path* reports, e.g. "4.1.1" (one run per path per process)."""
    try:
        done = subprocess.run([path, "--version"], check=False, capture_output=True,
                              text=True, errors="replace", timeout=VERSION_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise OSError(errno.EIO, f"cannot tell the version of CRIU {path}: "
                                 f"--version did not answer in {VERSION_TIMEOUT:g} s") from None
    except OSError as exc:
        raise OSError(errno.EIO, f"cannot run CRIU {path}: {exc.strerror}") from exc
    match = _VERSION_LINE.search(done.stdout)
    if match is None:
        raise OSError(errno.EIO, f"cannot tell the version of CRIU {path}: --version printed "
                                 f"no 'Version:' line (exit status {done.returncode})")
    return match.group(1)


def parse_version(text: str) -> tuple[int, ...]:
    """Version text as a tuple to compare with MIN_VERSION: "4.1.1" -> (4, 1, 1)."""
    return tuple(int(part) for part in text.split("."))


def require(path: str) -> str:
    """The version of CRIU *path*, or OSError if it is older than MIN_VERSION."""
    found = version(path)
    if parse_version(found) < MIN_VERSION:
        need = ".".join(map(str, MIN_VERSION))
        raise OSError(errno.ENOTSUP, f"CRIU {found} at {path} is too old: vzfs needs {need} or "
                                     f"later; set {ENV} or run ./bootstrap")
    return found


def find() -> str:
    """The CRIU command to run: located, and new enough."""
    path = locate()
    require(path)
    return path


def describe() -> str:
    """One line for the `version` control file: "criu 4.1.1 /path" or "none (why)"."""
    try:
        path = locate()
        return f"criu {require(path)} {path}"
    except OSError as exc:
        return f"none ({exc.strerror})"


async def ready(status_fd: int) -> bool:
    """Wait on the pipe CRIU was given as `--status-fd` (and close it): True when it
    said it is ready, False when it ended first (it failed; its log says why)."""
    try:
        await trio.lowlevel.wait_readable(status_fd)
        return bool(os.read(status_fd, 1))
    finally:
        os.close(status_fd)

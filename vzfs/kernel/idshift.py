"""The fallback where a root cannot be idmapped: shift its ownership on disk, once.

Some filesystems cannot be idmapped (FUSE without the server's consent, NFS…):
there the root's files are chowned instead, id N (below the block's size) to the
domain's block + N, as Incus's and LXC's shifting did before idmapped mounts. It is
done once and recorded in `/.vzfs/shifted` (the block it was shifted to), so a
later start on the same block walks nothing, and a start on another block shifts
from the recorded one. The walk never follows a symlink (lchown, os.walk without
followlinks), counts each inode once (hard links), stays on the root's filesystem
(mounts below are not the root's), and puts back the set-user-ID and set-group-ID
bits chown(2) clears. It runs while the domain is stopped: nothing inside can swap
a path under it.
"""

import errno
import json
import os
import stat

from ..model.idmap import IdMap

MARKER = ".vzfs/shifted"


def shifted_as(root: str) -> IdMap | None:
    """The block *root* is shifted to, from its marker (None: it is not shifted)."""
    try:
        fd = os.open(os.path.join(root, MARKER), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        d = json.loads(os.read(fd, 4096))
        return IdMap(int(d["uid"]), int(d["gid"]), int(d["size"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    finally:
        os.close(fd)


def _moved(value: int, old: int, new: int, size: int) -> int:
    inside = value - old
    return new + inside if 0 <= inside < size else value


def shift(root: str, to: IdMap) -> None:
    """Shift *root*'s ownership to block *to* (from the recorded block, or from 0) and
    record it. EIO with a sentence when the filesystem refuses (read-only…)."""
    was = shifted_as(root) or IdMap(0, 0, to.size)
    if was == to:
        return
    dev = os.lstat(root).st_dev
    seen: set[tuple[int, int]] = set()
    try:
        for top, dirs, files in os.walk(root, topdown=True, followlinks=False):
            # Not into other filesystems mounted below the root.
            dirs[:] = [d for d in dirs if os.lstat(os.path.join(top, d)).st_dev == dev]
            for path in [top] + [os.path.join(top, n) for n in dirs + files]:
                st = os.lstat(path)
                if st.st_dev != dev or (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
                uid = _moved(st.st_uid, was.uid, to.uid, to.size)
                gid = _moved(st.st_gid, was.gid, to.gid, to.size)
                if (uid, gid) == (st.st_uid, st.st_gid):
                    continue
                try:
                    os.lchown(path, uid, gid)
                except OSError:
                    # Some filesystems (sftp's SETSTAT) follow a symlink even so; a
                    # symlink's own owner matters to nothing.
                    if not stat.S_ISLNK(st.st_mode):
                        raise
                if stat.S_ISREG(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
                    os.chmod(path, stat.S_IMODE(st.st_mode))
        marker = os.path.join(root, MARKER)
        os.makedirs(os.path.dirname(marker), exist_ok=True)
        tmp = marker + ".new"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644)
        try:
            os.write(fd, json.dumps({"uid": to.uid, "gid": to.gid, "size": to.size}).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, marker)
    except OSError as exc:
        raise OSError(errno.EIO, f"{root} can neither be idmapped nor have its ownership "
                                 f"shifted: {exc.strerror or exc} ({exc.filename or root})") from exc

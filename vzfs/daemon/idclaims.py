"""Host-wide claims on blocks of ids, so that two vzfs instances never give two domains
the same host ids.

Each instance (state dir) keeps its domains' blocks in their configs; a block must
also be unique across the instances of one host (tests and "two hosts on one
machine" run several). Like systemd-nspawn's /run/systemd/nspawn-uid/, every
instance leaves a small claim file per domain in one host-wide directory: the state
dir, the domain, its block. A claim counts only while the config it names still
holds that block — an instance whose state dir was removed, or a domain undefined
while its daemon was down, leaves claims that simply stop counting (and are removed
when seen).
"""

import contextlib
import fcntl
import hashlib
import json
import os
import tomllib
from collections.abc import Iterator

from ..base.atomicfile import atomic_write
from ..model.idmap import IdMap

CLAIMS_DIR = "/var/lib/vzfs-idmaps"


@contextlib.contextmanager
def locked() -> Iterator[None]:
    """Held from choosing a block to claiming it: two daemons choosing at once would
    otherwise both see the same block free."""
    os.makedirs(CLAIMS_DIR, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(CLAIMS_DIR, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _file(state_dir: str, name: str) -> str:
    tag = hashlib.sha256(os.path.realpath(state_dir).encode()).hexdigest()[:16]
    return os.path.join(CLAIMS_DIR, f"{tag}.{name}")


def claim(state_dir: str, name: str, m: IdMap) -> None:
    os.makedirs(CLAIMS_DIR, mode=0o700, exist_ok=True)
    atomic_write(_file(state_dir, name), json.dumps({
        "state_dir": os.path.realpath(state_dir), "domain": name,
        "uid": m.uid, "gid": m.gid, "size": m.size}))


def release(state_dir: str, name: str) -> None:
    try:
        os.unlink(_file(state_dir, name))
    except FileNotFoundError:
        pass


def foreign(state_dir: str, moving: tuple[str, IdMap] | None = None) -> dict[str, IdMap]:
    """The blocks other instances' domains hold: {"NAME of STATE_DIR": map}. *moving*
    (name, block) is a domain arriving by migration: its source's claim on the same
    block under the same name is its own (two instances on one host)."""
    ours = os.path.realpath(state_dir)
    found: dict[str, IdMap] = {}
    try:
        entries = list(os.scandir(CLAIMS_DIR))
    except FileNotFoundError:
        return found
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            with open(entry.path, encoding="utf-8") as f:
                c = json.load(f)
            if c["state_dir"] == ours:
                continue
            m = IdMap(int(c["uid"]), int(c["gid"]), int(c["size"]))
            held = _configured(str(c["state_dir"]), str(c["domain"]))
        except (OSError, ValueError, KeyError, TypeError):
            held = None
            m = None
        if m is not None and held == m:
            if moving is None or moving != (c["domain"], m):
                found[f"{c['domain']} of {c['state_dir']}"] = m
        else:
            try:
                os.unlink(entry.path)          # stale: its config is gone or changed
            except OSError:
                pass
    return found


def _configured(state_dir: str, name: str) -> IdMap | None:
    """The block the domain's stored config names (None: no such domain, or none)."""
    try:
        with open(os.path.join(state_dir, "domains", name, "config.toml"), "rb") as f:
            doc = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError):
        return None
    t = doc.get("idmap")
    if not isinstance(t, dict) or not isinstance(t.get("uid"), int):
        return None
    uid: int = t["uid"]
    gid, size = t.get("gid", uid), t.get("size", 65536)
    if not isinstance(gid, int) or not isinstance(size, int):
        return None
    return IdMap(uid, gid, size)

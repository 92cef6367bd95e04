"""A root on a filesystem that cannot be idmapped (ramfs here; FUSE, NFS… elsewhere): its
ownership is shifted on disk once, recorded, and not walked again; `stats` says so."""

from __future__ import annotations

import json
import os
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomli_w

from tests.system import VZFS, Instance, system_ready
from vzfs.kernel import syscalls
from vzfs.kernel.cdefs import MNT_DETACH


@pytest.fixture
def ramfs_dir(tmp_path: Path) -> Iterator[Path]:
    """A ramfs (which cannot be idmapped, but knows owners and runs programs) mounted
    on the host, where the daemon sees it."""
    reason = system_ready()
    if reason:
        pytest.skip(reason)
    path = tmp_path / "ram"
    path.mkdir()
    syscalls.mount("ramfs", str(path), "ramfs", 0, "mode=0755")
    try:
        yield path
    finally:
        syscalls.umount(str(path), MNT_DETACH)


def start(inst: Instance, name: str) -> None:
    try:
        inst.write(name, "state", "start")
    except OSError as exc:
        raise AssertionError(f"the start failed: {inst.read(name, 'error')}") from exc


def test_a_root_that_cannot_be_idmapped_is_shifted_once(instance: Instance,
                                                          ramfs_dir: Path) -> None:
    root = ramfs_dir / "r"
    instance.define("s")
    config = tomllib.loads(instance.read("s", "config"))
    config["rootfs"] = {"path": str(root), "template": "busybox"}
    config["init"] = ["/bin/sh", "-c", "exec sleep 1000"]
    instance.write("s", "config", tomli_w.dumps(config))
    base = config["idmap"]["uid"]
    start(instance, "s")
    assert instance.read("s", "state") == "running\n", instance.read("s", "error")
    # On disk the root's files now belong to the block; inside they are root's.
    assert os.lstat(root / "bin" / "busybox").st_uid == base
    marker = root / ".vzfs" / "shifted"
    assert json.loads(marker.read_text()) == {"uid": base, "gid": config["idmap"]["gid"],
                                              "size": 65536}
    r = subprocess.run([*VZFS, "enter", "--mount", str(instance.mnt), "s", "--", "sh", "-c",
                        "stat -c %u /bin/busybox; id -u"], capture_output=True, text=True,
                       timeout=30)
    assert r.stdout.split() == ["0", "0"], (r.stdout, r.stderr)
    assert "rootfs_shifted 1\n" in instance.read("s", "stats")
    stamp = marker.stat().st_mtime_ns
    instance.write("s", "state", "kill")
    start(instance, "s")
    assert instance.read("s", "state") == "running\n", instance.read("s", "error")
    assert marker.stat().st_mtime_ns == stamp, "the root was walked again"
    assert os.lstat(root / "bin" / "busybox").st_uid == base


def test_an_idmapped_root_is_not_shifted(instance: Instance) -> None:
    instance.define("i")
    start(instance, "i")
    rootfs = instance.state / "private" / instance.read("i", "id").strip()
    assert os.lstat(rootfs / "bin" / "busybox").st_uid == 0
    assert not (rootfs / ".vzfs" / "shifted").exists()
    assert "rootfs_shifted 0\n" in instance.read("i", "stats")

"""The tree itself: top-level files, templates, defining and undefining domains."""

import errno
import os
import signal
import stat
import subprocess
from pathlib import Path

import pytest

from tests.system import VZFS, Instance, sh, wait_for


def test_top_level(instance: Instance) -> None:
    names = sorted(os.listdir(instance.mnt))
    assert names == ["README", "domains", "events", "templates", "version"]
    readme = (instance.mnt / "README").read_text()
    assert "domains/" in readme and "state" in readme and readme.endswith("\n")
    version = dict(line.split(" ", 1) for line in (instance.mnt / "version").read_text().splitlines())
    assert version["vzfs"] and version["kernel"] == os.uname().release
    assert version["cgroup"] in ("v1", "v2", "hybrid")
    assert os.listdir(instance.mnt / "templates") == ["busybox"]
    assert "path " in (instance.mnt / "templates" / "busybox").read_text()


def test_tree_is_root_only(instance: Instance) -> None:
    # Without allow_other the kernel lets no other user in at all.
    r = sh(f"setpriv --reuid=65534 --regid=65534 --clear-groups ls {instance.mnt}")
    assert r.returncode != 0
    assert "Permission denied" in r.stderr


def test_mkdir_defines_with_files_and_modes(instance: Instance) -> None:
    d = instance.define("web1")
    files = {n: stat.S_IMODE(os.stat(d / n).st_mode) for n in os.listdir(d)}
    assert files == {"config": 0o644, "state": 0o644, "id": 0o444, "pid": 0o444,
                     "stats": 0o444, "error": 0o444, "console": 0o644, "screen": 0o444,
                     "vnc": 0o444, "vnc_websocket": 0o444, "mounts": 0o644,
                     "checkpoint": 0o444, "checkpoint.log": 0o444, "migrate_target": 0o644,
                     "events": 0o444, "idmap": 0o444}
    assert instance.read("web1", "state") == "stopped\n"
    assert instance.read("web1", "id") == "101\n"
    assert instance.read("web1", "pid") == ""
    assert instance.read("web1", "error") == ""
    stats = dict(line.split() for line in instance.read("web1", "stats").splitlines())
    assert set(stats) == {"cpu_ns", "memory_bytes", "pids", "uptime_s", "vnc_restarts",
                          "rootfs_shifted"}
    assert 'hostname = "web1"' in instance.read("web1", "config")
    instance.define("web2")
    assert instance.read("web2", "id") == "102\n"


def test_mkdir_errors(instance: Instance) -> None:
    instance.define("web1")
    with pytest.raises(FileExistsError):
        (instance.mnt / "domains" / "web1").mkdir()
    for bad in ("-x", "a b", "x" * 64, "cgroup.procs"):
        with pytest.raises(OSError) as info:
            (instance.mnt / "domains" / bad).mkdir()
        assert info.value.errno == errno.EINVAL, bad
    with pytest.raises(OSError) as info:
        (instance.mnt / "templates" / "new").mkdir()
    assert info.value.errno == errno.EPERM
    r = sh(f"mkdir {instance.mnt}/domains/web1")
    assert r.returncode != 0 and "File exists" in r.stderr


def test_rmdir_undefines_and_removes_private_area(instance: Instance) -> None:
    d = instance.quick("gone")
    instance.write("gone", "state", "start")
    rootfs = instance.state / "private" / "101"
    assert (rootfs / "bin" / "busybox").exists()
    with pytest.raises(OSError) as info:
        d.rmdir()
    assert info.value.errno == errno.EBUSY
    assert instance.read("gone", "error") == ("cannot undefine domain gone: it is running "
                                              "(stop it first)\n")
    instance.write("gone", "state", "kill")
    d.rmdir()
    assert not d.exists()
    assert not rootfs.exists()
    assert not (instance.state / "domains" / "gone").exists()
    with pytest.raises(FileNotFoundError):
        d.rmdir()


def test_read_only_files_refuse_writes(instance: Instance) -> None:
    instance.define("web1")
    for name in ("id", "pid", "stats", "error"):
        with pytest.raises(PermissionError):
            instance.write("web1", name, "1")
    r = sh(f"echo 5 > {instance.dom('web1')}/id")
    assert r.returncode != 0 and "Permission denied" in r.stderr
    with pytest.raises(PermissionError):
        (instance.dom("web1") / "newfile").write_text("x")


def test_values_and_read_in_pieces(instance: Instance) -> None:
    instance.define("web1")
    fd = os.open(instance.dom("web1") / "config", os.O_RDONLY)
    try:
        parts = []
        while chunk := os.read(fd, 7):
            parts.append(chunk)
    finally:
        os.close(fd)
    assert b"".join(parts).decode() == instance.read("web1", "config")
    assert sh(f"cat {instance.dom('web1')}/state").stdout == "stopped\n"


def test_umount_removes_the_instance_cgroup_unless_a_domain_runs(instance: Instance) -> None:
    from vzfs.controller.paths import instance_tag
    from vzfs.kernel import cgroups
    layout = cgroups.detect()
    tag_dirs = cgroups.Cgroup(layout, f"vzfs/{instance_tag(str(instance.state))}").distinct_dirs()
    instance.quick("gone")
    instance.quick("stays")
    instance.write("gone", "state", "start")
    instance.write("stays", "state", "start")
    instance.write("gone", "state", "kill")
    assert all(os.path.isdir(d) for d in tag_dirs)
    instance.umount()
    assert all(os.path.isdir(d) for d in tag_dirs), "a running domain's cgroup went"
    instance.mount()
    instance.write("stays", "state", "kill")
    instance.umount()
    assert not any(os.path.exists(d) for d in tag_dirs), tag_dirs
    instance.mount()          # for the fixture's clean-up


def test_a_dead_daemons_mount_is_named_and_umount_clears_it(instance: Instance) -> None:
    pid = instance.daemon_pid()
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or
             "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2], what="daemon death")
    try:
        r = subprocess.run(VZFS + ["mount", "--state-dir", str(instance.state),
                                   str(instance.mnt)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 1
        assert r.stderr == (f"vzfs: cannot mount on {instance.mnt}: the vzfs daemon that served "
                            f"it died and left its mount behind (`vzfs umount {instance.mnt}` "
                            "clears it)\n"), r.stderr
        instance.umount()
    except BaseException:
        subprocess.run(["umount", "-l", str(instance.mnt)], capture_output=True)
        raise
    instance.mount()
    assert (instance.mnt / "version").read_text().startswith("vzfs ")

"""Cgroup layout detection (real mountinfo texts) and the v2 code path on a real cgroup2 mount."""

import os
import signal
import time
from pathlib import Path

import pytest

from tests.system import system_ready
from vzfs.kernel import cgroups

PURE_V2 = """\
24 1 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
25 1 0:23 / /proc rw - proc proc rw
"""
HYBRID = """\
30 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:4 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:5 - cgroup2 cgroup2 rw
34 30 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:8 - cgroup cgroup rw,cpu,cpuacct
35 30 0:31 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
36 30 0:32 / /sys/fs/cgroup/pids rw,nosuid - cgroup cgroup rw,pids
37 30 0:33 / /sys/fs/cgroup/systemd rw,nosuid - cgroup cgroup rw,xattr,name=systemd
"""
PURE_V1 = """\
35 30 0:31 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
38 30 0:34 / /sys/fs/cgroup/my\\040freezer rw,nosuid - cgroup cgroup rw,freezer
"""


def test_detect_pure_v2() -> None:
    layout = cgroups.detect(PURE_V2)
    assert layout == cgroups.Layout("v2", "/sys/fs/cgroup", {})


def test_detect_hybrid_with_comounted_controllers() -> None:
    layout = cgroups.detect(HYBRID)
    assert layout.mode == "hybrid"
    assert layout.unified == "/sys/fs/cgroup/unified"
    assert layout.v1 == {"cpu": "/sys/fs/cgroup/cpu,cpuacct", "cpuacct": "/sys/fs/cgroup/cpu,cpuacct",
                         "memory": "/sys/fs/cgroup/memory", "pids": "/sys/fs/cgroup/pids"}
    cg = cgroups.Cgroup(layout, "vzfs/t/1")
    # co-mounted controllers share one directory, joined once
    assert cg.distinct_dirs().count("/sys/fs/cgroup/cpu,cpuacct/vzfs/t/1") == 1


def test_detect_pure_v1_unescapes_paths() -> None:
    layout = cgroups.detect(PURE_V1)
    assert layout.mode == "v1" and layout.unified is None
    assert layout.v1["freezer"] == "/sys/fs/cgroup/my freezer"


def test_detect_this_host() -> None:
    layout = cgroups.detect()
    assert layout.mode in ("v1", "v2", "hybrid")
    if layout.mode != "v2":
        assert "memory" in layout.v1 and "pids" in layout.v1


def _child_in(cg: cgroups.Cgroup) -> int:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            cg.join_self()
            os.write(w, b"ok")
            time.sleep(60)
        finally:
            os._exit(0)
    os.close(w)
    assert os.read(r, 2) == b"ok"
    os.close(r)
    return pid


def _remove_tree(cg: cgroups.Cgroup) -> None:
    for d in cg.distinct_dirs():
        for path in (d, os.path.dirname(d)):
            try:
                os.rmdir(path)
            except OSError:
                pass


@pytest.mark.system
def test_v2_code_path_on_a_real_cgroup2_mount() -> None:
    if system_ready():
        pytest.skip(system_ready())
    host = cgroups.detect()
    if host.unified is None:
        pytest.skip("no cgroup2 mount on this host")
    # Treat the host's cgroup2 mount as a pure-v2 layout: on a hybrid host it
    # has no controllers, which exercises creation, membership, kill and removal.
    layout = cgroups.Layout("v2", host.unified, {})
    available = Path(host.unified, "cgroup.controllers").read_text().split()
    cg = cgroups.Cgroup(layout, f"vzfs/test-v2-{os.getpid()}/1")
    cg.create()
    try:
        assert cg.exists()
        missing = {"memory", "pids", "cpu"} - set(available)
        if not missing:
            cg.set_limits(64 << 20, 0.25, 10)
            assert Path(cg.dirs["memory"], "memory.max").read_text() == f"{64 << 20}\n"
            assert Path(cg.dirs["pids"], "pids.max").read_text() == "10\n"
            assert Path(cg.dirs["cpu"], "cpu.max").read_text() == "25000 100000\n"
        else:
            # A hybrid host's cgroup2 has none of them: a limit that cannot be set fails
            # loudly, never silently (the limits themselves are checked on the v1
            # hierarchies by test_v1_create_join_limits_remove and on a real domain
            # by tests/test_domains.py).
            with pytest.raises(OSError):
                cg.set_limits(64 << 20, 0.25, 10)
        pid = _child_in(cg)
        assert cg.procs() == [pid] or pid in cg.procs()
        cg.kill_all()
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        cg.remove()
        assert not cg.exists()
    finally:
        for path in (cg.dirs["unified"], os.path.dirname(cg.dirs["unified"])):
            try:
                os.rmdir(path)
            except OSError:
                pass


@pytest.mark.system
def test_v1_create_join_limits_remove() -> None:
    if system_ready():
        pytest.skip(system_ready())
    layout = cgroups.detect()
    if layout.mode == "v2":
        pytest.skip("no cgroup v1 hierarchies on this host")
    cg = cgroups.Cgroup(layout, f"vzfs/test-v1-{os.getpid()}/1")
    cg.create()
    try:
        cg.set_limits(32 << 20, 1.5, 20)
        assert Path(cg.dirs["memory"], "memory.limit_in_bytes").read_text() == f"{32 << 20}\n"
        assert Path(cg.dirs["cpu"], "cpu.cfs_quota_us").read_text() == "150000\n"
        assert Path(cg.dirs["pids"], "pids.max").read_text() == "20\n"
        pid = _child_in(cg)
        for d in cg.distinct_dirs():
            assert str(pid) in Path(d, "cgroup.procs").read_text().split()
        assert cg.stats()["pids"] == 1
        cg.kill_all()
        os.waitpid(pid, 0)
        cg.remove()
        assert not cg.exists()
    finally:
        _remove_tree(cg)


@pytest.mark.system
def test_favordynmods_toggle_keeps_every_other_option() -> None:
    if system_ready():
        pytest.skip(system_ready())
    layout = cgroups.detect()
    target = cgroups.favordynmods_target(layout)
    assert target is not None
    was = cgroups.favordynmods(layout)
    mount_before, super_before = cgroups._mount_options(target)
    try:
        cgroups.set_favordynmods(layout, False)
        assert not cgroups.favordynmods(layout)
        cgroups.set_favordynmods(layout, True)
        assert cgroups.favordynmods(layout)
        mount_after, super_after = cgroups._mount_options(target)
        assert mount_after == mount_before
        assert [o for o in super_after if o != "favordynmods"] == \
            [o for o in super_before if o != "favordynmods"]
    finally:
        cgroups.set_favordynmods(layout, was)


def test_daemon_turns_favordynmods_on(instance) -> None:  # type: ignore[no-untyped-def]
    version = dict(line.split(" ", 1) for line in (instance.mnt / "version").read_text().splitlines())
    assert version["cgroup_favordynmods"] == "yes"
    assert cgroups.favordynmods(cgroups.detect())


def _counting_child_in(cg: cgroups.Cgroup) -> tuple[int, int]:
    """A child in *cg* that writes a byte to a pipe every millisecond: (pid, read end)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            cg.join_self()
            while True:
                os.write(w, b".")
                time.sleep(0.001)
        finally:
            os._exit(0)
    os.close(w)
    os.set_blocking(r, False)
    return pid, r


def _ticks(fd: int, wait: float) -> int:
    time.sleep(wait)
    n = 0
    while True:
        try:
            n += len(os.read(fd, 65536))
        except BlockingIOError:
            return n


def _freeze_thaw_kill(cg: cgroups.Cgroup) -> None:
    pid, r = _counting_child_in(cg)
    try:
        assert _ticks(r, 0.05) > 0
        assert not cg.frozen()
        cg.freeze()
        assert cg.frozen()
        _ticks(r, 0)                       # what it wrote before the freeze took
        assert _ticks(r, 0.2) == 0         # frozen: not one write in 200 ms
        cg.thaw()
        assert not cg.frozen()
        assert _ticks(r, 0.1) > 0
        # A frozen cgroup can still be killed, once thawed (the v1 freezer holds even
        # a SIGKILLed task until then): the controller kills, then thaws.
        cg.freeze()
        cg.kill_all()
        cg.thaw()
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    finally:
        os.close(r)
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


@pytest.mark.system
def test_v1_freezer_freezes_and_thaws() -> None:
    if system_ready():
        pytest.skip(system_ready())
    layout = cgroups.detect()
    if "freezer" not in layout.v1:
        pytest.skip("no cgroup v1 freezer on this host")
    cg = cgroups.Cgroup(layout, f"vzfs/test-fz1-{os.getpid()}/1")
    cg.create()
    try:
        assert cg.freezer()[3] == "v1"
        assert cg.freezer_dir() == cg.dirs["freezer"]
        _freeze_thaw_kill(cg)
    finally:
        _remove_tree(cg)


@pytest.mark.system
def test_v2_freezer_freezes_and_thaws() -> None:
    if system_ready():
        pytest.skip(system_ready())
    host = cgroups.detect()
    if host.unified is None:
        pytest.skip("no cgroup2 mount on this host")
    # The core v2 freezer needs no controller, so a hybrid host's empty cgroup2 works too.
    cg = cgroups.Cgroup(cgroups.Layout("v2", host.unified, {}), f"vzfs/test-fz2-{os.getpid()}/1")
    cg.create()
    try:
        assert cg.freezer()[3] == "v2"
        _freeze_thaw_kill(cg)
    finally:
        _remove_tree(cg)

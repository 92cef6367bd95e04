"""Domains driven as users drive them: shell redirections, cat, Python open()."""

import errno
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.system import QUICK_INIT, VZFS, Instance, sh, wait_for
from vzfs.controller.paths import cgroup_relpath
from vzfs.kernel import cgroups


def state(inst: Instance, name: str) -> str:
    return inst.read(name, "state").strip()


def test_start_stop_kill_restart_with_the_shell(instance: Instance) -> None:
    d = instance.quick("web1")
    r = sh(f"echo start > {d}/state")
    assert r.returncode == 0, r.stderr
    assert state(instance, "web1") == "running"
    pid = int(instance.read("web1", "pid"))
    assert Path(f"/proc/{pid}").exists()
    # init is running when the write returns: it is exec'd, not the controller
    assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] == b"/bin/sh"

    r = sh(f"printf stop > {d}/state")
    assert r.returncode == 0, (r.stderr, instance.read("web1", "error"))
    assert state(instance, "web1") == "stopped"
    assert instance.read("web1", "pid") == ""
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()

    instance.write("web1", "state", "  start\n")
    pid1 = int(instance.read("web1", "pid"))
    instance.write("web1", "state", "restart")
    pid2 = int(instance.read("web1", "pid"))
    assert state(instance, "web1") == "running" and pid2 != pid1
    t = time.monotonic()
    instance.write("web1", "state", "kill")
    assert time.monotonic() - t < 5
    assert state(instance, "web1") == "stopped"
    assert instance.read("web1", "error") == ""


def test_busybox_template_init_stops_cleanly_on_sigpwr(instance: Instance) -> None:
    instance.define("bb")
    instance.write("bb", "state", "start")
    pid = int(instance.read("bb", "pid"))
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "init"
    wait_for_console_shell(instance, "bb")
    instance.write("bb", "state", "stop")
    assert state(instance, "bb") == "stopped"
    assert instance.read("bb", "error") == ""


def test_stop_escalates_to_kill_after_timeout(instance: Instance) -> None:
    # An init that ignores the stop signal and SIGTERM must be killed at the timeout.
    instance.define("stubborn", 'init = ["/bin/sh", "-c", "trap \\"\\" PWR TERM; '
                                'while :; do sleep 1; done"]\nstop_timeout = 1\n')
    instance.write("stubborn", "state", "start")
    t = time.monotonic()
    instance.write("stubborn", "state", "stop")
    took = time.monotonic() - t
    assert state(instance, "stubborn") == "stopped"
    assert 0.9 < took < 5, took


def test_crash_is_detected(instance: Instance) -> None:
    instance.quick("web1")
    instance.write("web1", "state", "start")
    pid = int(instance.read("web1", "pid"))
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: state(instance, "web1") == "crashed", what="crashed state")
    assert instance.read("web1", "error") == ("domain web1 crashed: init was killed by "
                                              "signal 9 (SIGKILL)\n")
    assert instance.read("web1", "pid") == ""
    instance.write("web1", "state", "start")
    assert state(instance, "web1") == "running"
    assert instance.read("web1", "error") == ""


def test_init_exit_status_crash_and_clean_exit(instance: Instance) -> None:
    instance.define("bad", 'init = ["/bin/sh", "-c", "exit 3"]')
    instance.define("good", 'init = ["/bin/sh", "-c", "exit 0"]')
    instance.write("bad", "state", "start")
    instance.write("good", "state", "start")
    wait_for(lambda: state(instance, "bad") == "crashed", what="bad to crash")
    wait_for(lambda: state(instance, "good") == "stopped", what="good to stop")
    assert instance.read("bad", "error") == "domain bad crashed: init exited with status 3\n"
    assert instance.read("good", "error") == ""


def expect_error(inst: Instance, name: str, file: str, text: str, code: int, sentence: str) -> None:
    before = {f: inst.read(name, f) for f in ("config", "state")}
    with pytest.raises(OSError) as info:
        inst.write(name, file, text)
    assert info.value.errno == code, (info.value, inst.read(name, "error"))
    assert inst.read(name, "error") == sentence + "\n"
    assert {f: inst.read(name, f) for f in ("config", "state")} == before


def test_error_paths(instance: Instance) -> None:
    instance.quick("web1")
    expect_error(instance, "web1", "state", "bogus", errno.EINVAL,
                 "cannot 'bogus' domain web1: unknown verb (verbs: kill, pause, restart, "
                 "resume, start, stop, suspend)")
    expect_error(instance, "web1", "state", " \n", errno.EINVAL,
                 "cannot change the state of domain web1: the write is empty "
                 "(write a verb, e.g. start)")
    expect_error(instance, "web1", "state", "start now", errno.EINVAL,
                 "cannot change the state of domain web1: write one verb, got 'start now'")
    expect_error(instance, "web1", "state", "stop", errno.EBUSY,
                 "cannot stop domain web1: it is not running (stopped)")
    expect_error(instance, "web1", "state", "pause", errno.EBUSY,
                 "cannot pause domain web1: it is not running (stopped)")
    instance.write("web1", "state", "start")
    expect_error(instance, "web1", "state", "start", errno.EBUSY,
                 "cannot start domain web1: it is already running")
    r = sh(f"echo start > {instance.dom('web1')}/state")
    assert r.returncode != 0 and "Device or resource busy" in r.stderr
    instance.write("web1", "state", "kill")
    # ENOENT: init missing in the rootfs
    instance.write("web1", "config", 'init = ["/sbin/nothere"]')
    expect_error(instance, "web1", "state", "start", errno.ENOENT,
                 f"cannot start domain web1: init /sbin/nothere does not exist in its rootfs "
                 f"{instance.state}/private/101")
    # EIO: the kernel refuses exec of a file that is not executable
    rootfs = instance.state / "private" / "101"
    (rootfs / "notexec").write_text("plain file\n")
    instance.write("web1", "config", 'init = ["/notexec"]')
    expect_error(instance, "web1", "state", "start", errno.EACCES,
                 "cannot start domain web1: exec init /notexec: Permission denied")
    # EEXIST: an id that another domain holds
    instance.define("web2")
    expect_error(instance, "web1", "config", "id = 102", errno.EEXIST,
                 "cannot replace the config of domain web1: id 102 belongs to domain web2")


def test_invalid_config_keeps_the_old_one(instance: Instance) -> None:
    instance.quick("web1", extra="[limits]\npids = 64\n")
    old = instance.read("web1", "config")
    stored = (instance.state / "domains" / "web1" / "config.toml").read_text()
    for bad, start in [("[", "config is not valid TOML"),
                       ("[limits]\nmemory = 'lots'", "limits.memory: 'lots' is not a size"),
                       ("hostname = 5", "hostname: expected a string")]:
        with pytest.raises(OSError) as info:
            instance.write("web1", "config", bad)
        assert info.value.errno == errno.EINVAL
        assert instance.read("web1", "error").startswith(
            f"cannot replace the config of domain web1: {start}")
        assert instance.read("web1", "config") == old
        assert (instance.state / "domains" / "web1" / "config.toml").read_text() == stored
    r = sh(f"echo 'id = ' > {instance.dom('web1')}/config")
    assert r.returncode != 0 and "Invalid argument" in r.stderr


def test_config_persists_across_daemon_restart(instance: Instance) -> None:
    instance.define("web1", 'hostname = "persist"\n[limits]\nmemory = "64M"\n')
    instance.umount()
    instance.mount()
    cfg = instance.read("web1", "config")
    assert 'hostname = "persist"' in cfg and 'memory = "64M"' in cfg
    assert instance.read("web1", "id") == "101\n"


def test_config_written_in_pieces(instance: Instance) -> None:
    instance.define("web1")
    text = 'hostname = "pieces"\n' + "".join(f"# {'x' * 70}\n" for _ in range(100))
    fd = os.open(instance.dom("web1") / "config", os.O_WRONLY | os.O_TRUNC)
    try:
        data = text.encode()
        for i in range(0, len(data), 4096):
            os.write(fd, data[i:i + 4096])
    finally:
        os.close(fd)
    assert 'hostname = "pieces"' in instance.read("web1", "config")


def test_two_concurrent_starts_one_wins(instance: Instance) -> None:
    instance.quick("web1")
    results: list[int] = []

    def start() -> None:
        try:
            instance.write("web1", "state", "start")
            results.append(0)
        except OSError as exc:
            results.append(exc.errno or -1)

    threads = [threading.Thread(target=start) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [0, errno.EBUSY]
    assert state(instance, "web1") == "running"
    assert len(cgroup_procs(instance, "web1")) >= 1


def cgroup_of(inst: Instance, name: str) -> cgroups.Cgroup:
    dom_id = int(inst.read(name, "id"))
    return cgroups.Cgroup(cgroups.detect(), cgroup_relpath(str(inst.state), dom_id))


def cgroup_procs(inst: Instance, name: str) -> list[int]:
    return cgroup_of(inst, name).procs()


def wait_for_console_shell(inst: Instance, name: str) -> None:
    """Wait until the busybox template's processes are init and the console shell: the
    sysinit mount has come and gone. An exiting task stays in the cgroup a moment after
    it closed its files, so a count of two is not enough: the other one must be the
    shell, reading the tty."""
    init = int(inst.read(name, "pid"))

    def settled() -> bool:
        procs = cgroup_procs(inst, name)
        if len(procs) != 2 or init not in procs:
            return False
        other = next(p for p in procs if p != init)
        try:
            return os.readlink(f"/proc/{other}/fd/0") in ("/dev/console", "/dev/tty1")
        except OSError:
            return False

    wait_for(settled, what=f"the shell on {name}'s console")


def test_limits_are_in_the_cgroup_files(instance: Instance) -> None:
    instance.quick("lim", extra="[limits]\nmemory = \"96M\"\ncpus = 0.5\npids = 33\n")
    instance.write("lim", "state", "start")
    cg = cgroup_of(instance, "lim")
    pid = int(instance.read("lim", "pid"))
    if cg.layout.mode == "v2":
        d = Path(cg.dirs["memory"])
        assert (d / "memory.max").read_text() == f"{96 << 20}\n"
        assert (d / "cpu.max").read_text() == "50000 100000\n"
    else:
        assert (Path(cg.dirs["memory"]) / "memory.limit_in_bytes").read_text() == f"{96 << 20}\n"
        assert (Path(cg.dirs["cpu"]) / "cpu.cfs_quota_us").read_text() == "50000\n"
        devices = (Path(cg.dirs["devices"]) / "devices.list").read_text()
        assert "c 1:3 rwm" in devices and "a *:* rwm" not in devices
    assert (Path(cg.dirs["pids"]) / "pids.max").read_text() == "33\n"
    for path in cg.distinct_dirs():
        assert pid in [int(p) for p in (Path(path) / "cgroup.procs").read_text().split()]
    stats = dict(line.split() for line in instance.read("lim", "stats").splitlines())
    assert int(stats["pids"]) >= 1 and int(stats["memory_bytes"]) > 0
    # a live config change applies to the running domain's cgroup
    cfg = instance.read("lim", "config").replace("pids = 33", "pids = 44")
    instance.write("lim", "config", cfg)
    assert (Path(cg.dirs["pids"]) / "pids.max").read_text() == "44\n"
    instance.write("lim", "state", "kill")
    assert not cg.exists()


# capabilities(7) numbers of what vzfs(5) says is dropped from the bounding set.
DROPPED_CAPS = {"DAC_READ_SEARCH": 2, "SYS_MODULE": 16, "SYS_RAWIO": 17, "SYS_PACCT": 20,
                "SYS_TIME": 25, "MKNOD": 27, "AUDIT_CONTROL": 30, "MAC_OVERRIDE": 32,
                "MAC_ADMIN": 33, "SYSLOG": 34, "WAKE_ALARM": 35, "BLOCK_SUSPEND": 36,
                "PERFMON": 38, "BPF": 39, "CHECKPOINT_RESTORE": 40}


def test_namespaces_root_hostname_and_devices(instance: Instance) -> None:
    # A directory only the host's root has: seen inside, the container's root would be
    # the host's (pivot_root(2) not done), whatever the host's other directories are.
    marker = Path(f"/vzfs-pivot-marker-{os.getpid()}")
    marker.mkdir()
    try:
        _check_namespaces_root_hostname_and_devices(instance, marker)
    finally:
        marker.rmdir()


def _check_namespaces_root_hostname_and_devices(instance: Instance, marker: Path) -> None:
    instance.quick("ns", extra='hostname = "inside"\n')
    instance.write("ns", "state", "start")
    pid = int(instance.read("ns", "pid"))
    for kind in ("pid", "mnt", "uts", "ipc", "net", "cgroup"):
        assert os.readlink(f"/proc/{pid}/ns/{kind}") != os.readlink(f"/proc/self/ns/{kind}"), kind
    status = Path(f"/proc/{pid}/status").read_text()
    nspid = [line for line in status.splitlines() if line.startswith("NSpid:")][0].split()
    assert nspid[-1] == "1"
    root = Path(f"/proc/{pid}/root")
    assert os.path.realpath(f"/proc/{pid}/root") == "/" or (root / "bin" / "busybox").exists()
    assert (root / "bin" / "busybox").exists()
    assert marker.is_dir() and not (root / marker.name).exists()
    r = sh(f"nsenter -t {pid} -u hostname")
    assert r.stdout.strip() == "inside"
    dev = sorted(os.listdir(root / "dev"))
    for node in ("null", "zero", "full", "random", "urandom", "tty", "console", "tty1", "pts",
                 "ptmx", "shm"):
        assert node in dev, node
    mounts = (Path(f"/proc/{pid}/mounts")).read_text()
    assert " /proc proc " in mounts and " /sys sysfs ro," in mounts
    assert " /dev/pts devpts " in mounts
    r = sh(f"nsenter -t {pid} -n cat /sys/class/net/lo/operstate /proc/net/dev")
    assert "lo:" in r.stdout
    flags = int(sh(f"nsenter -t {pid} -n -m cat /sys/class/net/lo/flags").stdout.strip() or "0", 16)
    assert flags & 1, "lo is up"
    capbnd = int([line for line in status.splitlines() if line.startswith("CapBnd:")][0].split()[1], 16)
    # The set the domain's root starts from, less each documented drop, and nothing
    # else dropped (SYS_ADMIN, 21, stays for mounts inside). In its own user namespace
    # (the default) that is every capability the kernel knows (user_namespaces(7));
    # without one, the host's own set (a VM may lack some, e.g. SYS_RESOURCE).
    if os.readlink(f"/proc/{pid}/ns/user") != os.readlink("/proc/self/ns/user"):
        host = (1 << (int(Path("/proc/sys/kernel/cap_last_cap").read_text()) + 1)) - 1
    else:
        host = int([line for line in Path("/proc/self/status").read_text().splitlines()
                    if line.startswith("CapBnd:")][0].split()[1], 16)
    dropped = sum(1 << cap for cap in DROPPED_CAPS.values())
    assert host & (1 << 21)
    assert capbnd == host & ~dropped, (
        hex(capbnd), [name for name, cap in DROPPED_CAPS.items() if capbnd & (1 << cap)])


def _container_fds_are_all_inside(pid_list: list[int]) -> list[str]:
    """Each fd of each process must be a file on a mount of the container or a pipe/socket
    both of whose ends are in the container (what CRIU can dump)."""
    problems = []
    anon: dict[str, int] = {}
    init = pid_list[0]
    mount_ids = {int(line.split()[0]) for line in
                 Path(f"/proc/{init}/mountinfo").read_text().splitlines()}
    for pid in pid_list:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except FileNotFoundError:      # a short-lived process (busybox sysinit) is gone
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
            except FileNotFoundError:
                continue
            if target.startswith(("pipe:", "socket:", "anon_inode:")):
                anon[target] = anon.get(target, 0) + 1
                continue
            mnt_id = int([line for line in info.splitlines() if line.startswith("mnt_id:")][0].split()[1])
            if mnt_id not in mount_ids:
                problems.append(f"pid {pid} fd {fd} -> {target} is on host mount {mnt_id}")
    for target, count in anon.items():
        if target.startswith("pipe:") and count < 2:
            problems.append(f"{target} has only one end in the container")
    return problems


def test_no_fd_from_outside_the_container(instance: Instance) -> None:
    instance.define("fds")
    instance.write("fds", "state", "start")
    init = int(instance.read("fds", "pid"))
    wait_for_console_shell(instance, "fds")
    procs = cgroup_procs(instance, "fds")
    procs.remove(init)
    problems = _container_fds_are_all_inside([init] + procs)
    assert problems == []
    for pid in [init] + procs:
        fds = os.listdir(f"/proc/{pid}/fd")
        assert fds, pid
        for fd in fds:
            assert os.readlink(f"/proc/{pid}/fd/{fd}") in ("/dev/console", "/dev/tty1") or \
                os.readlink(f"/proc/{pid}/fd/{fd}").startswith(("pipe:", "/dev/")), fd


def test_the_fd_check_catches_a_leak(instance: Instance, tmp_path: Path) -> None:
    # The checker has teeth: a process holding a host file, judged against the
    # container's mount table, is reported.
    instance.quick("leak")
    instance.write("leak", "state", "start")
    init = int(instance.read("leak", "pid"))
    with open(tmp_path / "host-file", "w"):
        problems = _container_fds_are_all_inside([init, os.getpid()])
    assert any("host-file" in p for p in problems), problems


def test_daemon_sigkill_and_remount_reattaches(instance: Instance) -> None:
    instance.quick("keep")
    instance.quick("dies")
    instance.quick("halts")
    for name in ("keep", "dies", "halts"):
        instance.write(name, "state", "start")
    pids = {name: int(instance.read(name, "pid")) for name in ("keep", "dies", "halts")}
    instance.kill_daemon()
    # while the daemon is away: one domain crashes, one stops cleanly
    os.kill(pids["dies"], signal.SIGKILL)
    os.kill(pids["halts"], signal.SIGPWR)
    wait_for(lambda: not Path(f"/proc/{pids['halts']}/status").exists() or
             "zombie" in Path(f"/proc/{pids['halts']}/status").read_text(), what="halt")
    assert Path(f"/proc/{pids['keep']}").exists()
    time.sleep(0.2)
    instance.mount()
    assert state(instance, "keep") == "running"
    assert int(instance.read("keep", "pid")) == pids["keep"]
    wait_for(lambda: state(instance, "dies") == "crashed", what="crashed after remount")
    assert "killed by signal 9" in instance.read("dies", "error")
    wait_for(lambda: state(instance, "halts") == "stopped", what="stopped after remount")
    # the re-attached controller still obeys
    instance.write("keep", "state", "stop")
    assert state(instance, "keep") == "stopped"


def test_umount_leaves_domains_running(instance: Instance) -> None:
    instance.quick("web1")
    instance.write("web1", "state", "start")
    pid = int(instance.read("web1", "pid"))
    instance.umount()
    assert not (instance.mnt / "version").exists()
    assert Path(f"/proc/{pid}").exists()
    instance.mount()
    assert state(instance, "web1") == "running"
    assert int(instance.read("web1", "pid")) == pid


def test_second_daemon_on_same_state_dir_is_refused(instance: Instance, tmp_path: Path) -> None:
    other = tmp_path / "other-mnt"
    other.mkdir()
    r = sh(f"{' '.join(VZFS)} mount --state-dir {instance.state} {other}")
    assert r.returncode != 0
    assert "another vzfs daemon" in r.stderr
    r = sh(f"{' '.join(VZFS)} mount --state-dir {tmp_path}/x {instance.mnt}")
    assert r.returncode != 0 and "already mounted" in r.stderr


def test_two_instances_side_by_side(instance: Instance, second_instance: Instance) -> None:
    instance.quick("web1")
    second_instance.quick("web1")
    instance.write("web1", "state", "start")
    second_instance.write("web1", "state", "start")
    a, b = int(instance.read("web1", "pid")), int(second_instance.read("web1", "pid"))
    assert a != b
    assert cgroup_of(instance, "web1").dirs != cgroup_of(second_instance, "web1").dirs
    second_instance.write("web1", "state", "kill")
    assert state(instance, "web1") == "running"
    assert state(second_instance, "web1") == "stopped"


def test_quick_init_prints_its_line(instance: Instance) -> None:
    # The quick init used by many tests really runs the command line given.
    assert QUICK_INIT[0] == "/bin/sh"
    instance.quick("web1")
    instance.write("web1", "state", "start")
    pid = int(instance.read("web1", "pid"))
    assert b"echo init-up" in Path(f"/proc/{pid}/cmdline").read_bytes()


def test_reboot_inside_restarts_in_place(instance: Instance) -> None:
    instance.define("rb")
    instance.write("rb", "state", "start")
    old = int(instance.read("rb", "pid"))
    wait_for_console_shell(instance, "rb")
    # reboot(2) itself (busybox init's own reboot path just exits 0)
    r = sh(f"{' '.join(VZFS)} enter --mount {instance.mnt} rb -- reboot -f")
    # In a pid namespace reboot(2) SIGKILLs init and then exits the caller with 0, but
    # init's death SIGKILLs the whole namespace: when that group kill lands before the
    # caller's exit is reaped, its status is SIGKILL (137). Both are a reboot; what the
    # domain does next is what is tested.
    assert r.returncode in (0, 128 + signal.SIGKILL), r.stderr
    wait_for(lambda: instance.read("rb", "pid") not in ("", f"{old}\n"), timeout=20,
             what="a new init after the reboot")
    assert state(instance, "rb") == "running"
    new = int(instance.read("rb", "pid"))
    assert Path(f"/proc/{new}/comm").read_text().strip() == "init"
    assert new in cgroup_procs(instance, "rb")
    assert instance.read("rb", "error") == ""
    instance.write("rb", "state", "stop")
    assert state(instance, "rb") == "stopped"


def test_every_start_returns_with_init_running(instance: Instance) -> None:
    instance.define("loop", 'init = ["/bin/sh", "-c", "exec sleep 1000"]\n')
    for _ in range(25):
        instance.write("loop", "state", "start")
        pid = int(instance.read("loop", "pid"))
        # exec'd and alive. The start returns when execve closed the report pipe, which
        # the kernel does (begin_new_exec) just before it sets up the new argv: a read in
        # that window sees an empty cmdline, so give it a moment — an init that exited
        # at once stays empty (a zombie) or vanishes.
        argv0 = b""
        deadline = time.monotonic() + 1
        while not argv0 and time.monotonic() < deadline:
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        assert argv0 in (b"/bin/sh", b"sleep")
        time.sleep(0.03)
        assert state(instance, "loop") == "running"
        instance.write("loop", "state", "kill")

"""Online migration between two vzfs instances on one machine, over a real OpenSSH.

Two daemons with their own state dirs and mountpoints stand for two hosts; the
source reaches the target through an sshd of the tests' own on loopback
(`tests.sshd`, host alias `vzfs-peer`). The domains run the busybox template's
init with its shell on the console; the tests type into that shell like a user
would. The counter writes its value to /cnt on the root every 50 ms, and appends
it to /count.log through a file it opened once (fd 8), so a count that restarted
or skipped shows there.

Faults are injected at the source's hold points (`VZFS_MIGRATE_HOLD`): the move
waits before phase P while HOLD/P exists; the test waits until `migrate_target`
shows that phase, does its damage, and lets it go on.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import sshd as sshdmod
from tests.system import Instance, system_ready, wait_for
from vzfs.controller import paths
from vzfs.kernel import cgroups

MIB = 1 << 20
COUNTER = ("( exec 8>>/count.log; i=0; while :; do i=$((i+1)); echo $i > /cnt; "
           "echo $i >&8; sleep 0.05; done ) &\n")
MOVE_TIMEOUT = 25.0           # a whole move of a small domain takes 2-3 s here
PAGES_HOG_MB = 160            # the page stream moves ~40 MB/s here: seconds of pages phase


# -- the two hosts ----------------------------------------------------------------------

@dataclasses.dataclass
class Hosts:
    base: Path
    sshd: sshdmod.Sshd
    hold: Path
    src: Instance
    dst: Instance
    dst_fs: Path | None = None      # the target's small filesystem (tmpfs), when it has one

    def target(self, port: int | None = None) -> str:
        return f"vzfs-peer{f':{port}' if port else ''}{self.dst.mnt}"


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sshdmod.Sshd]:
    reason = system_ready() or sshdmod.available()
    if reason:
        pytest.skip(reason)
    server = sshdmod.Sshd(tmp_path_factory.mktemp("sshd")).start()
    try:
        yield server
    finally:
        server.stop()


def _mount_tmpfs(path: Path, size_mb: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs",
                    str(path)], check=True, capture_output=True)


def _hosts(tmp_path: Path, server: sshdmod.Sshd, dst_tmpfs_mb: int | None) -> Iterator[Hosts]:
    hold = tmp_path / "hold"
    hold.mkdir()
    dst_base = tmp_path / "dst"
    dst_fs = None
    if dst_tmpfs_mb:
        _mount_tmpfs(dst_base, dst_tmpfs_mb)
        dst_fs = dst_base
    src = Instance(tmp_path / "src", env={**server.env(), "VZFS_MIGRATE_HOLD": str(hold)})
    dst = Instance(dst_base)
    hosts = Hosts(tmp_path, server, hold, src, dst, dst_fs)
    try:
        src.mount()
        dst.mount()
        yield hosts
    finally:
        # Shown by pytest when the test failed.
        print(diagnosis(hosts))
        for flag in hold.iterdir():          # a failed test must not leave a move waiting
            flag.unlink()
        for inst in (src, dst):
            inst.cleanup()
        for pid, _ in migration_processes(hosts):
            _kill(pid)
        if dst_fs is not None:
            subprocess.run(["umount", "-l", str(dst_fs)], check=False, capture_output=True)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"({exc.strerror})"


def diagnosis(hosts: Hosts) -> str:
    """Both sides' files, logs and the migration's processes, for a failed test."""
    out = []
    for side, inst in (("source", hosts.src), ("target", hosts.dst)):
        out.append(f"=== {side} {inst.mnt}")
        try:
            names = sorted(os.listdir(inst.mnt / "domains"))
        except OSError as exc:
            names = []
            out.append(f"domains/: {exc.strerror}")
        for name in names:
            for file in ("state", "pid", "error", "migrate_target", "mounts"):
                try:
                    out.append(f"--- {name}/{file}\n{inst.read(name, file).rstrip()}")
                except OSError as exc:
                    out.append(f"--- {name}/{file}: {exc.strerror}")
        out.append(f"--- vzfs.log\n{_tail(inst.state / 'vzfs.log')}")
        ddirs = inst.state / "domains"
        for ddir in sorted(ddirs.iterdir()) if ddirs.is_dir() else []:
            out.append(f"--- {ddir}: {sorted(os.listdir(ddir))}")
            for log in ("controller.log", "migration.log", "checkpoint.log",
                        "migration/lazy-pages.log"):
                if (ddir / log).exists():
                    out.append(f"--- {ddir.name}/{log}\n{_tail(ddir / log)}")
    out.append(f"=== sshd.log\n{_tail(hosts.sshd.base / 'sshd.log', 20)}")
    out.append(f"=== migration processes\n{migration_processes(hosts)}")
    return "\n".join(out)


@pytest.fixture
def hosts(tmp_path: Path, sshd: sshdmod.Sshd) -> Iterator[Hosts]:
    yield from _hosts(tmp_path, sshd, None)


@pytest.fixture
def small_target(tmp_path: Path, sshd: sshdmod.Sshd) -> Iterator[Hosts]:
    """The target's whole instance (state dir and mountpoint) on a 128 MB tmpfs: room
    for a busybox domain (the preflight wants its root, its memory and 64 MB), not
    for one with an 80 MB file."""
    yield from _hosts(tmp_path, sshd, 128)


@pytest.fixture(scope="module")
def hog(tmp_path_factory: pytest.TempPathFactory) -> str:
    """bench/checkpoint's static memory holder: `/hog MIB TOKEN` fills MIB of anonymous
    memory with non-zero data, prints hog-ready-TOKEN and waits."""
    from bench.checkpoint import build_hog
    from bench.instance import BenchError
    try:
        return build_hog(str(tmp_path_factory.mktemp("hog")))
    except BenchError as exc:
        pytest.skip(str(exc))


# -- reading a domain -------------------------------------------------------------------

def record(inst: Instance, name: str) -> dict[str, str]:
    """`migrate_target` as KEY -> VALUE."""
    out = {}
    for line in inst.read(name, "migrate_target").splitlines():
        key, _, value = line.partition(" ")
        out[key] = value
    return out


def state(inst: Instance, name: str) -> str:
    return inst.read(name, "state").strip()


def dom_id(inst: Instance, name: str) -> int:
    return int(inst.read(name, "id"))


def rootfs(inst: Instance, name: str) -> Path:
    return inst.state / "private" / str(dom_id(inst, name))


def cnt(root: Path) -> int:
    """The counter in /cnt; 0 when caught between the shell's truncate and its write."""
    try:
        text = (root / "cnt").read_text().strip()
    except FileNotFoundError:
        return 0
    return int(text) if text else 0


def count_log(root: Path) -> list[int]:
    try:
        return [int(v) for v in (root / "count.log").read_text().split()]
    except FileNotFoundError:
        return []


def counter_at(root: Path) -> int:
    """The counter's last value, from the log it appends to (never empty once begun)."""
    values = count_log(root)
    return values[-1] if values else 0


def shown(inst: Instance, name: str, line: str) -> bool:
    """Whether a screen row reads exactly *line*: output, not the typed command."""
    return any(row.strip() == line for row in inst.read(name, "screen").splitlines())


def type_and_see(inst: Instance, name: str, command: str, output: str) -> None:
    inst.write(name, "console", command + "\n")
    wait_for(lambda: shown(inst, name, output), what=f"{output!r} on the screen of {name}")


def tree(init: int) -> Iterator[tuple[int, int, str]]:
    """(host pid, pid inside the container, command) of every process under *init*."""
    todo = [init]
    while todo:
        pid = todo.pop()
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except (FileNotFoundError, ProcessLookupError):
            continue                  # one of the counter's sleeps, gone meanwhile
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        yield pid, int(fields["NSpid"].split()[-1]), fields["Name"].strip()
        todo += [int(c) for c in children]


def lasting(inst: Instance, name: str) -> set[tuple[int, str]]:
    """(pid inside, command) of the processes seen in three looks, the counter's sleeps
    aside (a fork caught before its exec shows in one look only)."""
    seen: set[tuple[int, str]] | None = None
    for i in range(3):
        if i:
            time.sleep(0.1)
        now = {(inner, comm) for _, inner, comm in tree(int(inst.read(name, "pid")))
               if comm != "sleep"}
        seen = now if seen is None else seen & now
    assert seen is not None
    return seen


def proc_state(pid: int) -> str:
    """The state letter of a process (`t`: stopped by a tracer, as CRIU's dump does)."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(") ")[2].split()[0]


def write_errno(path: Path, text: str) -> int:
    try:
        with open(path, "w") as f:
            f.write(text)
    except OSError as exc:
        return exc.errno or -1
    return 0


def domain_cgroup(inst: Instance, ident: int) -> cgroups.Cgroup:
    return cgroups.Cgroup(cgroups.detect(), paths.cgroup_relpath(str(inst.state), ident))


# -- the processes of a migration -----------------------------------------------------

def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


def migration_processes(hosts: Hosts) -> list[tuple[int, str]]:
    """ssh, the receiving end, rsync, CRIU and the relay working for this pair of
    instances (their command lines name our paths), and sshd's sessions."""
    ours = str(hosts.base)
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        cmd = _cmdline(int(entry))
        if ours not in cmd:
            continue
        words = cmd.split()
        if not words:
            continue
        prog = os.path.basename(words[0])
        if (prog in ("ssh", "rsync") or "/criu" in cmd or "migrate-receive" in cmd
                or "relay.py" in cmd):
            out.append((int(entry), cmd))
    if hosts.sshd.proc is not None:
        pid = hosts.sshd.proc.pid
        try:
            sessions = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except FileNotFoundError:
            sessions = []
        out += [(int(s), f"sshd session {_cmdline(int(s))}") for s in sessions]
    return out


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def session_ssh(hosts: Hosts) -> int:
    """The source's ssh process carrying the migration's session."""
    found = [pid for pid, cmd in migration_processes(hosts)
             if os.path.basename(cmd.split()[0]) == "ssh" and "migrate-receive" in cmd]
    assert len(found) == 1, f"expected one ssh session, found {migration_processes(hosts)}"
    return found[0]


# -- set-ups and checks -------------------------------------------------------------------

@dataclasses.dataclass
class Before:
    """What a domain was before a migration was tried."""
    name: str
    pid: str
    ident: int
    processes: set[tuple[int, str]]
    screen: str
    count: int


def counting_domain(inst: Instance, name: str, mount: Path | None = None) -> Before:
    """A busybox domain with the counter in its console shell, a line typed and
    answered, and optionally *mount* bound read-only on /data."""
    inst.define(name)
    inst.write(name, "state", "start")
    wait_for(lambda: ":/#" in inst.read(name, "screen"), what="the shell prompt")
    if mount is not None:
        inst.write(name, "mounts", f"add {mount} /data ro")
    inst.write(name, "console", COUNTER)
    root = rootfs(inst, name)
    wait_for(lambda: counter_at(root) > 2, what="the counter counting")
    type_and_see(inst, name, "echo typed-$((40+2))", "typed-42")
    return Before(name, inst.read(name, "pid"), dom_id(inst, name), lasting(inst, name),
                  inst.read(name, "screen"), counter_at(root))


def target_is_clean(hosts: Hosts, name: str, ident: int, defined: tuple[str, ...] = ()) -> None:
    """Nothing of the migration on the target: no domain (but those *defined* there
    beforehand), nothing in its state dir, no process in the domain's cgroup, no
    migration process left on either side."""
    dst = hosts.dst
    wait_for(lambda: sorted(os.listdir(dst.mnt / "domains")) == sorted(defined),
             what=f"the target to list only {defined}")
    wait_for(lambda: sorted(os.listdir(dst.state / "domains")) == sorted(defined),
             timeout=10, what="the target's state dir to hold no domain dir of the migration")
    kept = {str(dom_id(dst, d)) for d in defined}
    private = dst.state / "private"
    wait_for(lambda: not private.exists() or set(os.listdir(private)) <= kept,
             what="the target's private/ to hold no root of the migration")
    if name not in defined:
        cg = domain_cgroup(dst, ident)
        wait_for(lambda: cg.procs() == [], what="no process in the target's domain cgroup")
        wait_for(lambda: not cg.exists(), what="the target's domain cgroup removed")
    wait_for(lambda: migration_processes(hosts) == [], timeout=15,
             what="no ssh, sshd session, rsync, CRIU or receiving end left")


def runs_on_source_as_before(hosts: Hosts, before: Before) -> None:
    src, name = hosts.src, before.name
    assert name in os.listdir(src.mnt / "domains")
    assert state(src, name) == "running"
    assert src.read(name, "pid") == before.pid, "the domain was restarted, not resumed"
    root = rootfs(src, name)
    now = counter_at(root)
    assert now >= before.count
    wait_for(lambda: counter_at(root) > now + 3, what="the counter going on at the source")
    values = count_log(root)
    assert values == list(range(1, len(values) + 1)), "the count restarted or skipped"
    assert lasting(src, name) == before.processes, "a process of the domain went or came"
    # The console shell answers, on the screen it had.
    assert src.read(name, "screen") == before.screen
    type_and_see(src, name, "echo still-$((6*7))", "still-42")
    assert not (src.state / "domains" / name / "migration.out").exists(), \
        "the dump's images were left on the source"


def failed_at(hosts: Hosts, name: str, phase: str) -> dict[str, str]:
    """Wait for the outcome of a migration that must fail in *phase*; its record."""
    src = hosts.src
    wait_for(lambda: state(src, name) != "migrating", timeout=MOVE_TIMEOUT,
             what="the migration's outcome")
    rec = record(src, name)
    assert rec.get("status") == "failed", rec
    assert rec.get("phase") == phase, rec
    assert rec.get("target") == f"ssh://{hosts.target()}", rec
    error = src.read(name, "error").strip()
    assert error.startswith(f"domain {name} was not migrated: {phase} failed: "), error
    assert rec.get("error") and rec["error"] in error, (rec, error)
    return rec


def hold_at(hosts: Hosts, name: str, phase: str) -> Path:
    """Start the migration of *name*, held before *phase*; returns the hold file."""
    flag = hosts.hold / phase
    flag.touch()
    hosts.src.write(name, "migrate_target", hosts.target())
    wait_for(lambda: record(hosts.src, name).get("phase") == phase, timeout=MOVE_TIMEOUT,
             what=f"the migration to reach {phase}")
    assert state(hosts.src, name) == "migrating"
    assert record(hosts.src, name).get("status") == "migrating"
    return flag


# -- 1. the move ------------------------------------------------------------------------

def test_a_running_domain_moves_with_processes_console_and_mounts(hosts: Hosts,
                                                                   tmp_path: Path) -> None:
    src, dst = hosts.src, hosts.dst
    data = tmp_path / "data"
    data.mkdir()
    (data / "hello").write_text("from the host\n")
    before = counting_domain(src, "m", mount=data)
    src_root = rootfs(src, "m")
    assert f"{data} /data ro" in src.read("m", "mounts")

    # Held before the copy: the domain reads `migrating`, the record says where to.
    flag = hold_at(hosts, "m", "copy")
    rec = record(src, "m")
    assert rec["target"] == f"ssh://{hosts.target()}"
    assert float(rec["preflight_ms"]) > 0
    assert "m" in os.listdir(dst.mnt / "domains")        # reserved there, not running
    assert state(dst, "m") == "migrating"
    at_start = counter_at(src_root)
    # The screen does not change until the freeze (the counter prints nothing).
    screen = src.read("m", "screen")
    assert screen == before.screen
    flag.unlink()

    wait_for(lambda: "m" not in os.listdir(src.mnt / "domains"), timeout=MOVE_TIMEOUT,
             what="the domain to leave the source")
    assert not (src.state / "domains" / "m").exists()
    assert not src_root.exists(), "the source kept the domain's root"
    assert domain_cgroup(src, before.ident).procs() == []

    assert state(dst, "m") == "running"
    assert dom_id(dst, "m") == before.ident
    rec = record(dst, "m")
    assert rec.get("status") == "done", rec
    assert rec.get("direction") == "in", rec
    assert rec.get("target") == f"ssh://{hosts.target()}", rec
    assert float(rec["downtime_ms"]) > 0, rec
    for phase in ("preflight", "reserve", "copy", "freeze", "transfer", "restore", "pages"):
        assert f"{phase}_ms" in rec, rec
    assert dst.read("m", "error") == ""

    # The same processes under the same pids inside: not a new boot.
    assert lasting(dst, "m") == before.processes
    dst_root = rootfs(dst, "m")
    # The counter goes on from where it was, through the file it had open: /cnt as
    # the container sees it, and the log on the target's copy of its root.
    inside = Path(f"/proc/{dst.read('m', 'pid').strip()}/root")
    first = counter_at(dst_root)
    assert first >= at_start
    wait_for(lambda: cnt(inside) > first + 3, what="the counter going on at the target")
    values = count_log(dst_root)
    assert values == list(range(1, len(values) + 1)), "the count restarted or skipped"
    assert values[-1] > at_start

    # The console: the screen the source showed, and the shell answers there.
    assert dst.read("m", "screen") == screen
    assert "echo typed-$((40+2))" in screen
    type_and_see(dst, "m", "echo there-$((6*7))", "there-42")

    # The host's directory is bound on /data there, read-only, and listed.
    assert f"{data} /data ro" in dst.read("m", "mounts")
    inner = Path(f"/proc/{dst.read('m', 'pid').strip()}")
    assert (inner / "root" / "data" / "hello").read_text() == "from the host\n"
    points = [line.split() for line in (inner / "mountinfo").read_text().splitlines()]
    assert any(p[4] == "/data" and "ro" in p[5].split(",") for p in points), points
    wait_for(lambda: migration_processes(hosts) == [], timeout=15,
             what="no ssh, sshd session, rsync, CRIU or receiving end left")


# -- 2. the dry run -----------------------------------------------------------------------

def test_check_is_a_dry_run_that_changes_nothing(hosts: Hosts) -> None:
    src = hosts.src
    before = counting_domain(src, "c")
    src_files = sorted(os.listdir(src.state / "domains" / "c"))
    src.write("c", "migrate_target", f"check {hosts.target()}")
    rec = record(src, "c")
    assert rec.get("status") == "checked", rec
    assert rec.get("target") == f"ssh://{hosts.target()}", rec
    assert src.read("c", "error") == ""
    assert state(src, "c") == "running"
    assert sorted(os.listdir(src.state / "domains" / "c")) == src_files
    target_is_clean(hosts, "c", before.ident)
    runs_on_source_as_before(hosts, before)
    # Nothing is under way: the domain can go on to be checked or moved.
    assert record(src, "c").get("status") == "checked"


# -- 3. preflight refusals ---------------------------------------------------------------

def refused(hosts: Hosts, before: Before, target: str, code: int, *words: str) -> str:
    """A migration to *target* that the preflight must refuse with *code*; its sentence."""
    src, name = hosts.src, before.name
    got = write_errno(src.dom(name) / "migrate_target", target)
    error = src.read(name, "error").strip()
    assert got == code, (errno.errorcode.get(got, got), error)
    assert error.startswith(f"cannot migrate domain {name}: "), error
    for word in words:
        assert word in error, error
    rec = record(src, name)
    assert rec.get("status") == "refused", rec
    assert rec.get("phase") == "preflight", rec
    assert state(src, name) == "running"
    return error


def test_preflight_refuses_a_name_taken_on_the_target(hosts: Hosts) -> None:
    src, dst = hosts.src, hosts.dst
    dst.define("t")
    config = dst.read("t", "config")
    before = counting_domain(src, "t")
    refused(hosts, before, hosts.target(), errno.EEXIST, "a domain t exists")
    assert state(dst, "t") == "stopped"
    assert dst.read("t", "config") == config
    target_is_clean(hosts, "t", before.ident, defined=("t",))
    runs_on_source_as_before(hosts, before)


def test_preflight_refuses_a_target_mountpoint_without_vzfs(hosts: Hosts,
                                                            tmp_path: Path) -> None:
    nowhere = tmp_path / "no-vzfs-here"
    nowhere.mkdir()
    before = counting_domain(hosts.src, "n")
    error = refused(hosts, before, f"vzfs-peer{nowhere}", errno.ENOENT, str(nowhere),
                    "vzfs-peer")
    assert "no vzfs serves" in error, error
    target_is_clean(hosts, "n", before.ident)
    runs_on_source_as_before(hosts, before)


def test_preflight_refuses_an_unreachable_host(hosts: Hosts) -> None:
    # The port on the command line wins over the alias's Port: nobody listens there.
    dead = sshdmod._free_port()
    before = counting_domain(hosts.src, "u")
    error = refused(hosts, before, hosts.target(port=dead), errno.EHOSTUNREACH, "vzfs-peer",
                    "preflight failed")
    assert "Connection refused" in error, error
    target_is_clean(hosts, "u", before.ident)
    runs_on_source_as_before(hosts, before)


def test_preflight_refuses_a_target_without_room(small_target: Hosts) -> None:
    hosts = small_target
    src = hosts.src
    before = counting_domain(src, "s")
    # There is room for the domain as it is: the check passes.
    src.write("s", "migrate_target", f"check {hosts.target()}")
    assert record(src, "s").get("status") == "checked"
    # 80 MB more in its root does not fit in the target's 128 MB with 64 MB to spare.
    with open(rootfs(src, "s") / "big", "wb") as f:
        f.writelines(b"\x5a" * MIB for _ in range(80))
    error = refused(hosts, before, hosts.target(), errno.ENOSPC, str(hosts.dst.state))
    assert "free" in error, error
    target_is_clean(hosts, "s", before.ident)
    runs_on_source_as_before(hosts, before)


# -- 4. the undo chain --------------------------------------------------------------------

def test_ssh_killed_during_the_copy(hosts: Hosts) -> None:
    before = counting_domain(hosts.src, "k")
    flag = hold_at(hosts, "k", "copy")
    ssh = session_ssh(hosts)
    os.kill(ssh, signal.SIGKILL)
    flag.unlink()
    rec = failed_at(hosts, "k", "copy")
    assert "SSH session to vzfs-peer ended" in rec["error"], rec
    target_is_clean(hosts, "k", before.ident)
    runs_on_source_as_before(hosts, before)
    # Nothing was left behind: the same move, tried again, goes through.
    hosts.src.write("k", "migrate_target", hosts.target())
    wait_for(lambda: "k" not in os.listdir(hosts.src.mnt / "domains"), timeout=MOVE_TIMEOUT,
             what="the second try to move the domain")
    assert state(hosts.dst, "k") == "running"
    assert lasting(hosts.dst, "k") == before.processes


def test_target_refuses_the_reservation(hosts: Hosts) -> None:
    # The name was free at the preflight; by the reservation it is taken there.
    before = counting_domain(hosts.src, "v")
    flag = hold_at(hosts, "v", "reserve")
    hosts.dst.define("v")
    config = hosts.dst.read("v", "config")
    flag.unlink()
    rec = failed_at(hosts, "v", "reserve")
    assert "a domain v exists" in rec["error"], rec
    assert state(hosts.dst, "v") == "stopped"
    assert hosts.dst.read("v", "config") == config
    target_is_clean(hosts, "v", before.ident, defined=("v",))
    runs_on_source_as_before(hosts, before)


def test_ssh_killed_while_pages_stream(hosts: Hosts, hog: str) -> None:
    src, dst = hosts.src, hosts.dst
    src.define("p")
    src.write("p", "state", "start")
    wait_for(lambda: ":/#" in src.read("p", "screen"), what="the shell prompt")
    shutil.copy(hog, rootfs(src, "p") / "hog")
    # Typed into the console shell: a process `vzfs enter` starts holds fds from outside.
    src.write("p", "console", f"/hog {PAGES_HOG_MB} held &\n")
    # Its line follows the prompt the shell printed at once (the typed one lacks "ready").
    wait_for(lambda: "hog-ready-held" in src.read("p", "screen"), what="the memory held")
    src.write("p", "console", COUNTER)
    wait_for(lambda: counter_at(rootfs(src, "p")) > 2, what="the counter counting")
    type_and_see(src, "p", "echo typed-$((40+2))", "typed-42")
    before = Before("p", src.read("p", "pid"), dom_id(src, "p"), lasting(src, "p"),
                    src.read("p", "screen"), counter_at(rootfs(src, "p")))
    assert any(comm == "hog" for _, comm in before.processes)

    flag = hold_at(hosts, "p", "pages")
    # Restored there, its memory still coming: the target has it, not yet its own.
    assert state(dst, "p") == "migrating"
    assert dom_id(dst, "p") == before.ident
    assert proc_state(int(before.pid)) == "t", "the source's tree runs while the target's does"
    # The fault must come while pages still stream: CRIU's lazy-pages daemon on the
    # target ends once it has them all (if not, PAGES_HOG_MB is too small).
    assert any("lazy-pages" in cmd for _, cmd in migration_processes(hosts)), \
        "every page had arrived before the fault"
    ssh = session_ssh(hosts)
    os.kill(ssh, signal.SIGKILL)
    flag.unlink()
    # Never on both hosts: when the source's tree runs again, the target's is gone.
    cg = domain_cgroup(dst, before.ident)
    deadline = time.monotonic() + MOVE_TIMEOUT
    while proc_state(int(before.pid)) == "t" and time.monotonic() < deadline:
        time.sleep(0.005)
    assert cg.procs() == [], "the domain's processes exist on both hosts"
    rec = failed_at(hosts, "p", "pages")
    assert "downtime_ms" in rec
    target_is_clean(hosts, "p", before.ident)
    runs_on_source_as_before(hosts, before)
    hog_pid = next(pid for pid, _, comm in tree(int(before.pid)) if comm == "hog")
    rss_kb = int(next(line.split()[1] for line in Path(f"/proc/{hog_pid}/status").read_text()
                      .splitlines() if line.startswith("VmRSS:")))
    assert rss_kb * 1024 >= PAGES_HOG_MB * MIB, "the memory holder lost its memory"


def test_target_filesystem_full_during_the_copy(small_target: Hosts) -> None:
    hosts = small_target
    assert hosts.dst_fs is not None
    before = counting_domain(hosts.src, "f")
    flag = hold_at(hosts, "f", "copy")
    filler = hosts.dst_fs / "filler"
    # dd writes until the filesystem is full, and fails then.
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M"], check=False,
                   capture_output=True)
    assert os.statvfs(hosts.dst_fs).f_bavail == 0
    flag.unlink()
    rec = failed_at(hosts, "f", "copy")
    assert "rsync" in rec["error"], rec
    assert "No space left on device" in rec["error"], rec
    target_is_clean(hosts, "f", before.ident)
    runs_on_source_as_before(hosts, before)
    filler.unlink()


def test_restore_fails_on_the_target(hosts: Hosts, tmp_path: Path) -> None:
    data = tmp_path / "bound"
    data.mkdir()
    before = counting_domain(hosts.src, "r", mount=data)
    flag = hold_at(hosts, "r", "restore")
    # The source is frozen, its images are on the target. The target loses the
    # source of the bind mount (the source's mount keeps the directory alive).
    data.rmdir()
    flag.unlink()
    rec = failed_at(hosts, "r", "restore")
    assert str(data) in rec["error"], rec
    target_is_clean(hosts, "r", before.ident)
    runs_on_source_as_before(hosts, before)
    assert f"{data} /data ro" in hosts.src.read("r", "mounts")


def test_criu_restore_fails_on_the_target(hosts: Hosts) -> None:
    before = counting_domain(hosts.src, "q")
    flag = hold_at(hosts, "q", "restore")
    # The images are there; one of them is damaged on the way: CRIU's restore fails.
    images = hosts.dst.state / "domains" / "q" / "migration"
    (images / "pstree.img").write_bytes(b"\0garbage" * 64)
    flag.unlink()
    rec = failed_at(hosts, "q", "restore")
    assert "CRIU" in rec["error"], rec
    target_is_clean(hosts, "q", before.ident)
    runs_on_source_as_before(hosts, before)


def test_cancel_undoes_a_move_under_way(hosts: Hosts) -> None:
    # `cancel` returns once the move is undone: the domain runs at the source as before.
    before = counting_domain(hosts.src, "c")
    flag = hold_at(hosts, "c", "transfer")        # frozen, the root's delta copied
    hosts.src.write("c", "migrate_target", "cancel")
    flag.unlink()
    assert state(hosts.src, "c") == "running"
    rec = record(hosts.src, "c")
    assert (rec.get("status"), rec.get("phase")) == ("failed", "transfer"), rec
    assert "cancelled" in rec["error"], rec
    # The cancel was a command that succeeded: `error` is clear.
    assert hosts.src.read("c", "error") == ""
    target_is_clean(hosts, "c", before.ident)
    runs_on_source_as_before(hosts, before)
    # Nothing under way any more: a second cancel is refused, and says so.
    with pytest.raises(OSError) as info:
        hosts.src.write("c", "migrate_target", "cancel")
    assert info.value.errno == errno.EINVAL
    assert "none is under way" in hosts.src.read("c", "error")


def test_kill_cancels_a_move_under_way_then_kills(hosts: Hosts) -> None:
    # `kill` of a `migrating` domain: the move is undone (the target keeps nothing),
    # then the domain is killed at the source; the write returns once it is stopped.
    before = counting_domain(hosts.src, "k")
    flag = hold_at(hosts, "k", "transfer")        # frozen, the root's delta copied
    t = time.monotonic()
    r = subprocess.run(["bash", "-c", f"echo kill > {hosts.src.dom('k')}/state"],
                       capture_output=True, text=True, timeout=60)
    took = time.monotonic() - t
    flag.unlink()
    assert r.returncode == 0, (r.stderr, hosts.src.read("k", "error"))
    assert took < 5, took          # the undo and the kill, not the move's end
    assert state(hosts.src, "k") == "stopped"
    assert hosts.src.read("k", "pid") == ""
    assert not Path(f"/proc/{before.pid}").exists() or \
        "Z" in Path(f"/proc/{before.pid}/stat").read_text()
    rec = record(hosts.src, "k")
    assert (rec.get("status"), rec.get("phase")) == ("failed", "transfer"), rec
    assert "cancelled" in rec["error"], rec
    cg = domain_cgroup(hosts.src, before.ident)
    wait_for(lambda: not cg.exists(), what="the source's domain cgroup removed")
    target_is_clean(hosts, "k", before.ident)


def test_each_phase_is_an_event_on_both_sides(hosts: Hosts) -> None:
    from tests.test_events_stream import Reader
    src_events, dst_events = Reader(hosts.src), Reader(hosts.dst)
    try:
        hosts.src.define("e")
        hosts.src.write("e", "state", "start")
        hosts.src.write("e", "migrate_target", hosts.target())
        src_events.wait("e", "undefined", "migrated to", timeout=MOVE_TIMEOUT)
        phases = [x.split()[0] for _, d, k, x in src_events.poll() if d == "e" and k == "migrate"]
        assert phases == ["preflight", "reserve", "copy", "freeze", "transfer", "restore",
                          "pages", "done"], phases
        dst_events.wait("e", "state", "running")
        seen = [(k, x) for _, d, k, x in dst_events.poll() if d == "e"]
        assert seen[0] == ("defined", f"id {dom_id(hosts.dst, 'e')}, arriving by migration")
        assert ("state", "migrating") in seen
    finally:
        src_events.close()
        dst_events.close()


def test_hooks_on_both_hosts_see_the_move_and_the_target_may_refuse_it(hosts: Hosts) -> None:
    src, dst = hosts.src, hosts.dst
    logs = {}
    for inst, side in ((src, "src"), (dst, "dst")):
        logs[side] = hosts.base / f"hooks-{side}.log"
        inst.hooks.mkdir(exist_ok=True)
        h = inst.hooks / "50-record"
        h.write_text(f'#!/bin/sh\necho "$1 $2 $VZFS_REASON ${{VZFS_TARGET:-}}'
                     f'${{VZFS_SOURCE:-}}" >> {logs[side]}\n')
        h.chmod(0o755)
    refuse = dst.hooks / "10-refuse"
    refuse.write_text('#!/bin/sh\n[ "$2" = migrate ] || exit 0\necho "no room for $1 today"\n'
                      'exit 2\n')
    refuse.chmod(0o755)
    before = counting_domain(src, "hk")
    src.write("hk", "migrate_target", hosts.target())
    rec = failed_at(hosts, "hk", "reserve")
    assert "hook 10-refuse refused at migrate (exit 2): no room for hk today" in rec["error"], rec
    target_is_clean(hosts, "hk", before.ident)
    runs_on_source_as_before(hosts, before)
    refuse.unlink()
    # A slow `stopped` hook on the source: the domain is listed there until it ends, and
    # nothing may start it meanwhile.
    slow = src.hooks / "60-slow"
    slow.write_text('#!/bin/sh\n[ "$2" = stopped ] && sleep 3\nexit 0\n')
    slow.chmod(0o755)
    src.write("hk", "migrate_target", hosts.target())
    wait_for(lambda: logs["dst"].exists() and "started migrated" in logs["dst"].read_text(),
             timeout=MOVE_TIMEOUT, what="the target's hook")
    wait_for(lambda: "stopped migrated" in logs["src"].read_text(), what="the source's hook")
    assert write_errno(src.dom("hk") / "state", "start") == errno.EBUSY
    assert src.read("hk", "error") == ("cannot start domain hk: it is being migrated away\n")
    wait_for(lambda: "hk" not in os.listdir(src.mnt / "domains"), what="the source forgets it")
    target = f"ssh://{hosts.target()}"
    assert [line for line in logs["src"].read_text().splitlines()
            if "migrate" in line or "migrated" in line] == \
        [f"hk migrate out {target}", f"hk migrate out {target}", "hk stopped migrated "], \
        logs["src"].read_text()
    # On the target the refusal ended the phase before 50-record ran the first time.
    node = os.uname().nodename
    assert logs["dst"].read_text().splitlines() == \
        [f"hk migrate in {node}", f"hk started migrated {node}"]
    assert state(dst, "hk") == "running"


def test_a_privileged_domain_moves_too(hosts: Hosts) -> None:
    """The one privileged run of a move (the other tests move unprivileged domains): no
    user namespace on either side, and the counter goes on."""
    import tomllib

    import tomli_w
    src, dst = hosts.src, hosts.dst
    src.define("pv")
    config = tomllib.loads(src.read("pv", "config"))
    config["privileged"] = True
    src.write("pv", "config", tomli_w.dumps(config))
    src.write("pv", "state", "start")
    wait_for(lambda: ":/#" in src.read("pv", "screen"), what="the shell prompt")
    src.write("pv", "console", COUNTER)
    wait_for(lambda: counter_at(rootfs(src, "pv")) > 2, what="the counter counting")
    src.write("pv", "migrate_target", hosts.target())
    wait_for(lambda: "pv" not in os.listdir(src.mnt / "domains"), timeout=MOVE_TIMEOUT,
             what="the domain to leave the source")
    assert state(dst, "pv") == "running"
    pid = int(dst.read("pv", "pid"))
    assert os.readlink(f"/proc/{pid}/ns/user") == os.readlink("/proc/self/ns/user")
    assert dst.read("pv", "idmap") == ""
    first = counter_at(rootfs(dst, "pv"))
    wait_for(lambda: counter_at(rootfs(dst, "pv")) > first + 3,
             what="the counter going on at the target")

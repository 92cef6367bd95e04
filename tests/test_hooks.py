"""Hooks: the administrator's executables at each lifecycle phase, run by a real
daemon (vzfs(5), Hooks), and the two that contrib/hooks ships."""

import importlib.machinery
import importlib.util
import os
import signal
import stat
import subprocess
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system import VZFS, Instance, sh, wait_for
from vzfs.daemon.hooks import is_hook_name, last_line

CONTRIB = Path(__file__).resolve().parent.parent / "contrib" / "hooks"

# Records its arguments, the VZFS_* it was given and what came on stdin, one file a call.
# Named by the time it ran (hooks of different domains may run at once).
RECORDER = """#!/bin/sh
f="{out}/$(date +%s%N)-$$"
{{ echo "args $*"; echo "reason $VZFS_REASON"; echo "id $VZFS_ID"; echo "pid ${{VZFS_PID:-}}";
   echo "rootfs $VZFS_ROOTFS"; echo "mount $VZFS_MOUNT"; echo "target ${{VZFS_TARGET:-}}";
   echo "notify ${{NOTIFY_SOCKET:-}}"; echo "cwd $(pwd)"; }} > "$f.tmp"
cat > "$f.stdin"
mv "$f.tmp" "$f"
"""


def hook(instance: Instance, name: str, text: str, mode: int = 0o755) -> Path:
    instance.hooks.mkdir(exist_ok=True)
    path = instance.hooks / name
    path.write_text(text)
    path.chmod(mode)
    return path


class Calls:
    """What the RECORDER hook recorded, in order."""

    def __init__(self, instance: Instance, name: str = "50-record") -> None:
        self.out = instance.base / "calls"
        self.out.mkdir()
        hook(instance, name, RECORDER.format(out=self.out))

    def all(self) -> list[dict[str, str]]:
        calls = []
        for f in sorted(self.out.iterdir()):
            if not f.name.endswith((".stdin", ".tmp")):
                fields = dict(line.split(" ", 1) if " " in line else (line, "")
                              for line in f.read_text().splitlines())
                fields["stdin"] = (self.out / f"{f.name}.stdin").read_text()
                calls.append(fields)
        return calls

    def phases(self) -> list[tuple[str, str]]:
        return [(c["args"].split()[1], c["reason"]) for c in self.all()]

    def wait(self, count: int) -> list[tuple[str, str]]:
        wait_for(lambda: len(self.all()) >= count, what=f"{count} hook calls")
        return self.phases()


@pytest.fixture
def calls(instance: Instance) -> Iterator[Calls]:
    yield Calls(instance)


def test_hooks_run_at_each_phase_with_the_domain_phase_and_config(
        instance: Instance, calls: Calls) -> None:
    d = instance.quick("h1")
    config_path = instance.state / "domains" / "h1" / "config.toml"
    instance.write("h1", "state", "start")
    pid = instance.read("h1", "pid").strip()
    assert calls.wait(3) == [("prepare", "boot"), ("start", "boot"), ("started", "boot")]
    instance.write("h1", "state", "stop")
    assert calls.wait(5)[3:] == [("stop", "stop"), ("stopped", "stopped")]
    instance.write("h1", "state", "start")
    os.kill(int(instance.read("h1", "pid")), signal.SIGKILL)     # a crash nobody wrote
    wait_for(lambda: instance.read("h1", "state") == "crashed\n", what="crash")
    assert calls.wait(9)[5:] == [("prepare", "boot"), ("start", "boot"), ("started", "boot"),
                                 ("stopped", "crashed")]
    first = calls.all()[0]
    assert first["args"] == f"h1 prepare {config_path}"
    assert config_path.exists()
    # The config on stdin, as the domain's `config` file shows it.
    assert tomllib.loads(first["stdin"]) == tomllib.loads((d / "config").read_text())
    assert first["id"] == str(tomllib.loads(first["stdin"])["id"])
    assert first["rootfs"] == str(instance.state / "private" / first["id"])
    assert first["mount"] == str(instance.mnt)
    assert first["cwd"] == "/" and first["notify"] == ""
    started = calls.all()[2]
    assert started["pid"] == pid           # once init runs, hooks are told its pid
    assert calls.all()[4]["pid"] == ""     # and not after it ended


def test_a_failing_prepare_hook_refuses_the_start_with_its_reason(
        instance: Instance, calls: Calls) -> None:
    instance.quick("h2")
    deny = hook(instance, "10-deny", "#!/bin/sh\necho 'checking quota' \n"
                                     "echo 'maintenance window until 14:00' >&2\nexit 3\n")
    r = sh(f"echo start > {instance.dom('h2') / 'state'}")
    assert r.returncode != 0 and "Operation not permitted" in r.stderr, r.stderr
    error = instance.read("h2", "error")
    assert error == ("cannot start domain h2: hook 10-deny refused at prepare (exit 3): "
                     "maintenance window until 14:00\n"), error
    assert instance.read("h2", "state") == "stopped\n"
    assert instance.read("h2", "pid") == ""
    # The first refusal ends the phase: the recorder (50-) never ran.
    assert calls.all() == []
    deny.unlink()
    instance.write("h2", "state", "start")
    assert instance.read("h2", "state") == "running\n"
    assert calls.wait(3)[:3] == [("prepare", "boot"), ("start", "boot"), ("started", "boot")]


def test_a_failing_start_hook_refuses_after_the_rootfs_is_made(instance: Instance) -> None:
    instance.quick("h3")
    hook(instance, "20-late", "#!/bin/sh\n[ \"$2\" = start ] || exit 0\n"
                              "test -d \"$VZFS_ROOTFS/bin\" && echo rootfs-ready && exit 1\n")
    r = sh(f"echo start > {instance.dom('h3') / 'state'}")
    assert r.returncode != 0
    assert instance.read("h3", "error").endswith("hook 20-late refused at start (exit 1): "
                                                 "rootfs-ready\n")
    assert instance.read("h3", "state") == "stopped\n"


def test_a_hanging_hook_is_killed_with_its_children_after_the_timeout(
        instance: Instance) -> None:
    remount(instance, "--hook-timeout", "1")
    instance.quick("h4")
    marker = f"hang-{os.getpid()}-{time.monotonic_ns()}"
    # The child is a shell that stays (sleep is not its last command), with the marker
    # in its command line.
    hook(instance, "30-hang", f"#!/bin/sh\n[ \"$2\" = prepare ] || exit 0\n"
                              f"sh -c 'sleep 1000; : {marker}' &\nexec sleep 1000\n")
    writer = subprocess.Popen(["bash", "-c", f"echo start > {instance.dom('h4') / 'state'}"],
                              stderr=subprocess.PIPE, text=True)
    wait_for(lambda: sh(f"pgrep -f {marker}").stdout != "", what="the hook's child running")
    _, err = writer.communicate(timeout=30)
    assert writer.returncode != 0 and "Operation not permitted" in err, err
    assert instance.read("h4", "error") == (
        "cannot start domain h4: hook 30-hang did not finish within 1 s at prepare "
        "and was killed\n")
    assert instance.read("h4", "state") == "stopped\n"
    # Its whole session went: the child it left behind too.
    wait_for(lambda: not sh(f"pgrep -f {marker}").stdout, what="the hook's child killed")


def test_a_hanging_notification_hook_holds_nothing_up(instance: Instance) -> None:
    remount(instance, "--hook-timeout", "2")
    instance.quick("h5")
    marker = f"slow-{os.getpid()}-{time.monotonic_ns()}"
    hook(instance, "40-slow", f"#!/bin/sh\n[ \"$2\" = started ] && exec sh -c "
                              f"'sleep 1000; : {marker}'\nexit 0\n")
    ev = os.open(instance.mnt / "events", os.O_RDONLY | os.O_NONBLOCK)
    try:
        instance.write("h5", "state", "start")
        # The start returned while its `started` hook runs on, and the daemon answers.
        wait_for(lambda: sh(f"pgrep -f {marker}").stdout != "", what="the slow hook")
        instance.write("h5", "state", "stop")
        assert instance.read("h5", "state") == "stopped\n"
        assert sh(f"pgrep -f {marker}").stdout != "", "the hook was not left to run"
        seen = b""

        def timed_out() -> bool:
            nonlocal seen
            try:
                seen += os.read(ev, 65536)
            except BlockingIOError:
                pass
            return b"h5 hook started 40-slow failed: timeout" in seen

        wait_for(timed_out, what="the hook's timeout event")
        wait_for(lambda: sh(f"pgrep -f {marker}").stdout == "", what="the slow hook killed")
    finally:
        os.close(ev)


def test_only_executable_plain_names_run(instance: Instance, calls: Calls) -> None:
    # Not executable, a backup, a package manager's leftover, hidden: none may run.
    for name, mode in (("10-plain", 0o644), ("10-edit~", 0o755), ("10-x.dpkg-old", 0o755),
                       (".10-hidden", 0o755)):
        hook(instance, name, "#!/bin/sh\nexit 1\n", mode)
    (instance.hooks / "10-dir").mkdir()
    instance.quick("h6")
    instance.write("h6", "state", "start")
    assert instance.read("h6", "state") == "running\n"
    assert calls.wait(3)[:3] == [("prepare", "boot"), ("start", "boot"), ("started", "boot")]


def test_hook_names_and_reasons() -> None:
    for good in ("50-log", "vzctl-compat", "10_a.sh", "a"):
        assert is_hook_name(good), good
    for bad in ("", ".hidden", "x~", "x.dpkg-old", "x.dpkg-dist", "x.rpmnew", "x.rpmsave",
                "x.bak", "x.swp", "x.disabled", "a b", "-x", "x/y"):
        assert not is_hook_name(bad), bad
    assert last_line(b"one\ntwo\n\n  \n") == "two"
    assert last_line(b"") == ""
    assert last_line(b"\xff\xfebad bytes\n") == "\ufffd\ufffdbad bytes"
    assert len(last_line(b"x" * 5000)) == 300


def test_a_migrate_hook_refuses_before_anything_leaves(instance: Instance) -> None:
    instance.quick("h7")
    instance.write("h7", "state", "start")
    out = instance.base / "migrate-call"
    hook(instance, "10-nomove", f"#!/bin/sh\n[ \"$2\" = migrate ] || exit 0\n"
                                f"echo \"$VZFS_REASON $VZFS_TARGET\" > {out}\n"
                                "echo 'h7 stays on this host' >&2\nexit 1\n")
    # No host of that name exists: the hook answers before any ssh would be tried.
    r = sh(f"echo check nosuchhost.invalid > {instance.dom('h7') / 'migrate_target'}")
    assert r.returncode != 0 and "Operation not permitted" in r.stderr, r.stderr
    assert out.read_text() == "check ssh://nosuchhost.invalid/run/vzfs\n"
    assert instance.read("h7", "error") == ("cannot migrate domain h7: hook 10-nomove refused "
                                            "at migrate (exit 1): h7 stays on this host\n")
    record = dict(line.split(" ", 1) for line in
                  instance.read("h7", "migrate_target").splitlines() if " " in line)
    assert record["status"] == "refused"
    assert instance.read("h7", "state") == "running\n"


def remount(instance: Instance, *args: str, **env: str) -> None:
    """The daemon again, with these `vzfs mount` options and environment."""
    instance.umount()
    instance.mount_args = list(args)
    instance.env.update(env)
    instance.mount()


def install_contrib(instance: Instance, name: str) -> None:
    instance.hooks.mkdir(exist_ok=True)
    os.symlink(CONTRIB / name, instance.hooks / name)


def test_vzctl_compat_stub_appears_while_running_and_goes_after(instance: Instance) -> None:
    conf_dir = instance.base / "vz-conf"
    remount(instance, VZCTL_CONF_DIR=str(conf_dir))
    install_contrib(instance, "vzctl-compat")
    instance.quick("web1", "[limits]\nmemory = \"256M\"\npids = 64\n")
    dom_id = instance.read("web1", "id").strip()
    stub = conf_dir / f"{dom_id}.conf"
    # A real vzctl container's config under another id is never touched.
    conf_dir.mkdir()
    theirs = conf_dir / "777.conf"
    theirs.write_text('VE_ROOT="/vz/root/777"\n')
    assert not stub.exists()
    instance.write("web1", "state", "start")
    wait_for(stub.exists, what="the stub")
    # vzctl's config files are shell: what a shell that sources the stub sees.
    assert sourced(stub, "VEID", "NAME", "HOSTNAME", "VE_ROOT", "PHYSPAGES", "NUMPROC") == [
        dom_id, "web1", "web1", str(instance.state / "private" / dom_id),
        f"0:{256 * 1024 // 4}", "64:64"]
    assert stat.S_IMODE(stub.stat().st_mode) == 0o644
    instance.write("web1", "state", "stop")
    wait_for(lambda: not stub.exists(), what="the stub removed")
    assert theirs.read_text() == 'VE_ROOT="/vz/root/777"\n'
    # A crash removes it as well.
    instance.write("web1", "state", "start")
    wait_for(stub.exists, what="the stub again")
    os.kill(int(instance.read("web1", "pid")), signal.SIGKILL)
    wait_for(lambda: not stub.exists(), what="the stub removed after a crash")


def sourced(conf: Path, *names: str) -> list[str]:
    r = sh(f". {conf} && printf '%s\\0' " + " ".join(f'"${n}"' for n in names))
    assert r.returncode == 0, r
    return r.stdout.split("\0")[:-1]


def test_vzctl_compat_values_are_quoted_for_the_shell_and_sizes_read(tmp_path: Path) -> None:
    loader = importlib.machinery.SourceFileLoader("vzctl_compat", str(CONTRIB / "vzctl-compat"))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    pwned = tmp_path / "pwned"
    rootfs = f"/srv/it's $(touch {pwned}) `touch {pwned}`\nX=1"
    for memory, pages in (("256MiB", 65536), ("1GB", 262144), (1 << 20, 256), ("2g", 524288)):
        conf = tmp_path / "101.conf"
        conf.write_text(module.stub("web1", {"id": 101, "limits": {"memory": memory}}, rootfs))
        assert sourced(conf, "VE_ROOT", "PHYSPAGES", "X") == [rootfs, f"0:{pages}", ""]
        assert not pwned.exists()


def test_vzctl_compat_leaves_a_conf_it_did_not_write(instance: Instance) -> None:
    conf_dir = instance.base / "vz-conf"
    remount(instance, VZCTL_CONF_DIR=str(conf_dir))
    install_contrib(instance, "vzctl-compat")
    instance.quick("web2")
    dom_id = instance.read("web2", "id").strip()
    conf_dir.mkdir()
    (conf_dir / f"{dom_id}.conf").write_text('VE_ROOT="/vz/root/x"\n')
    instance.write("web2", "state", "start")
    instance.write("web2", "state", "stop")
    # Both its runs (started, stopped) said so in the daemon's log, and did nothing.
    wait_for(lambda: (instance.state / "vzfs.log").read_text().count("belongs to something "
                                                                     "else") == 2,
             what="the hook's two runs")
    assert (conf_dir / f"{dom_id}.conf").read_text() == 'VE_ROOT="/vz/root/x"\n'


def test_the_log_hook_writes_one_line_per_phase_and_stays_bounded(instance: Instance) -> None:
    logfile = instance.base / "hooks.log"
    remount(instance, VZFS_HOOK_LOG=str(logfile))
    install_contrib(instance, "log")
    instance.quick("web3")
    instance.write("web3", "state", "start")
    pid = instance.read("web3", "pid").strip()
    instance.write("web3", "state", "kill")
    wait_for(lambda: logfile.exists() and len(logfile.read_text().splitlines()) >= 5,
             what="5 log lines")
    words = [line.split()[1:] for line in logfile.read_text().splitlines()]
    dom_id = instance.read("web3", "id").strip()
    assert words == [["web3", "prepare", "boot", f"id={dom_id}"],
                     ["web3", "start", "boot", f"id={dom_id}"],
                     ["web3", "started", "boot", f"id={dom_id}", f"pid={pid}"],
                     ["web3", "stop", "kill", f"id={dom_id}", f"pid={pid}"],
                     ["web3", "stopped", "stopped", f"id={dom_id}"]], words
    # Past 1 MiB the file moves aside: two files at most, no logrotate needed.
    logfile.write_bytes(b"x" * (1 << 20) + b"\n")
    instance.write("web3", "state", "start")
    wait_for(lambda: logfile.exists() and "started" in logfile.read_text(), what="rotated")
    assert (logfile.parent / "hooks.log.1").stat().st_size > 1 << 20
    assert logfile.stat().st_size < 4096


def test_no_hooks_directory_is_no_hooks(instance: Instance) -> None:
    assert not instance.hooks.exists()
    instance.quick("h8")
    instance.write("h8", "state", "start")
    assert instance.read("h8", "state") == "running\n"


def test_hook_timeout_must_be_positive(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(VZFS + ["mount", "--state-dir", str(tmp_path / "state"),
                               "--hook-timeout", "0", str(mnt)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr == ("vzfs: cannot mount: --hook-timeout 0 is not a positive number "
                        "of seconds\n")
    assert not (mnt / "version").exists()


def test_an_init_that_ends_at_once_is_started_then_stopped(instance: Instance,
                                                             calls: Calls) -> None:
    instance.define("h9", 'init = ["/bin/true"]\n')
    instance.write("h9", "state", "start")
    wait_for(lambda: instance.read("h9", "state") in ("stopped\n", "crashed\n"),
             what="init's end")
    assert calls.wait(4) == [("prepare", "boot"), ("start", "boot"), ("started", "boot"),
                             ("stopped", calls.all()[3]["reason"])]
    assert calls.all()[3]["reason"] in ("stopped", "crashed")


def test_a_daemon_that_starts_tells_hooks_only_of_ends_they_did_not_see(
        instance: Instance, calls: Calls) -> None:
    instance.quick("h10")
    instance.quick("h11")
    for name in ("h10", "h11"):
        instance.write(name, "state", "start")
    instance.write("h10", "state", "stop")
    assert calls.wait(8)[-1] == ("stopped", "stopped")
    # h11 ends while no daemon runs: the next one tells the hooks; h10's end, which
    # they saw, it does not tell again.
    pid = int(instance.read("h11", "pid"))
    instance.umount()
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), what="h11's init gone")
    instance.mount()
    assert instance.read("h11", "state") == "crashed\n"
    wait_for(lambda: len(calls.all()) == 9, what="the hook of h11's end")
    last = calls.all()[8]
    assert (last["args"].split()[:2], last["reason"]) == (["h11", "stopped"], "crashed")
    instance.umount()
    instance.mount()
    time.sleep(1)        # (what a third daemon would tell the hooks, it tells at once)
    assert len(calls.all()) == 9, calls.phases()


def test_the_cli_defaults_are_the_hooks_defaults() -> None:
    from vzfs import cli
    from vzfs.daemon import hooks
    assert (cli.DEFAULT_HOOKS_DIR, cli.DEFAULT_HOOK_TIMEOUT) == (hooks.DEFAULT_DIR,
                                                                 hooks.DEFAULT_TIMEOUT)

"""vzfs under systemd (contrib/systemd/vzfs.service): the unit is valid, and its command
lines speak sd_notify(3) and leave domains running when stopped as KillMode=process stops.

PID 1 here need not be systemd, so the unit is never started: the tests run the unit's
own ExecStart= and ExecStopPost= command lines, changed only where a test instance must
differ (this checkout's vzfs, a temporary mountpoint and state dir), and play systemd's
part: they bind the socket NOTIFY_SOCKET names and send the daemon alone SIGTERM.
"""

import logging
import os
import select
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system import Instance, system_ready
from vzfs.daemon import sdnotify
from vzfs.daemon.main import is_vzfs_mount
from vzfs.kernel import criu

UNIT = Path(__file__).resolve().parent.parent / "contrib" / "systemd" / "vzfs.service"
INSTALLED = "/usr/local/sbin/vzfs"            # where the unit expects the command
MOUNTPOINT = "/run/vzfs"
STATE_DIR_OPTION = "--state-dir"
VZFS = Path(sys.prefix) / "bin" / "vzfs"      # this checkout's command (.venv/bin/vzfs)
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0                            # the unit's TimeoutStopSec=
UCRED = struct.Struct("3i")                    # struct ucred: pid, uid, gid (unix(7))


# -- the unit file ------------------------------------------------------------------
def directives(section: str, key: str) -> list[str]:
    """The values of KEY= in [SECTION] of the unit, in order (systemd.syntax(7))."""
    values = []
    current = ""
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
        elif current == section:
            name, _, value = line.partition("=")
            if name.strip() == key:
                values.append(value.strip())
    return values


def command_line(key: str) -> list[str]:
    """The one command line of [Service] KEY=, without its prefix ("-" ignores failure)."""
    values = directives("Service", key)
    assert len(values) == 1, f"{key}= {values}"
    argv = shlex.split(values[0].lstrip("-@:+!"))
    assert argv[0] == INSTALLED, f"{key}= runs {argv[0]}, not {INSTALLED}"
    assert MOUNTPOINT in argv, f"{key}= does not name {MOUNTPOINT}"
    return argv


def for_instance(argv: list[str], inst: Instance) -> list[str]:
    """The unit's command line for a test instance: this checkout's vzfs, the
    instance's mountpoint for /run/vzfs and, for `mount`, its state dir."""
    out = [str(VZFS)] + [str(inst.mnt) if arg == MOUNTPOINT else arg for arg in argv[1:]]
    if out[1] == "mount":
        if STATE_DIR_OPTION in out:
            out[out.index(STATE_DIR_OPTION) + 1] = str(inst.state)
        else:
            out[2:2] = [STATE_DIR_OPTION, str(inst.state)]
    return out


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("needs systemd-analyze (package systemd)")
    if not VZFS.exists():
        pytest.skip(f"needs {VZFS} (pip install -e .)")
    # verify checks that each command exists: point them at this checkout's vzfs.
    unit = tmp_path / "vzfs.service"
    unit.write_text(UNIT.read_text().replace(INSTALLED, str(VZFS)))
    done = subprocess.run([analyze, "verify", str(unit)], check=False, capture_output=True,
                          text=True, timeout=60)
    # A misspelt key or value is only a warning ("Unknown key …, ignoring") with
    # exit status 0: none may name the unit. (Other units' warnings are the host's.)
    ours = [line for line in done.stderr.splitlines() if "vzfs.service" in line]
    assert done.returncode == 0 and ours == [], done.stderr
    assert directives("Service", "Type") == ["notify"]
    assert directives("Service", "KillMode") == ["process"]


# -- playing systemd ----------------------------------------------------------------
class Service:
    """One test instance run as systemd runs the unit: the unit's ExecStart= with
    NOTIFY_SOCKET naming a datagram socket bound here, and the daemon its main process."""

    def __init__(self, base: Path, env: dict[str, str] | None = None) -> None:
        self.inst = Instance(base)
        self.env = env or {}
        self.journal = base / "journal"           # the daemon's stdout and stderr
        self.notify_path = base / "notify"
        assert len(os.fsencode(self.notify_path)) < 108, "AF_UNIX path too long (unix(7))"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.notify.bind(str(self.notify_path))
        # As systemd does: the kernel then tells us the sender of each message.
        self.notify.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.daemon: subprocess.Popen[bytes] | None = None

    def start(self) -> dict[str, str]:
        """`systemctl start`: run ExecStart= and return its READY=1 message."""
        argv = for_instance(command_line("ExecStart"), self.inst)
        with open(self.journal, "ab") as journal:
            self.daemon = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=journal, stderr=journal,
                env={**os.environ, **self.env, sdnotify.ENV: str(self.notify_path)})
        ready = self.receive()
        assert ready.get("READY") == "1", ready
        return ready

    def receive(self) -> dict[str, str]:
        """The next sd_notify message, which must come from the daemon itself
        (NotifyAccess=main)."""
        assert self.daemon is not None
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if select.select([self.notify], [], [], 0.1)[0]:
                data, ancillary, _, _ = self.notify.recvmsg(4096, socket.CMSG_SPACE(UCRED.size))
                sender = [UCRED.unpack(value[:UCRED.size])[0] for level, kind, value in ancillary
                          if (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS)]
                assert sender == [self.daemon.pid], f"sent by {sender}, not the daemon"
                return dict(line.split("=", 1) for line in data.decode().splitlines())
            if self.daemon.poll() is not None:
                raise AssertionError(f"the daemon exited with status {self.daemon.returncode} "
                                     f"before its next message:\n{self.journal.read_text()}")
        raise AssertionError(f"no sd_notify message in {READY_TIMEOUT:g} s")

    def stop(self) -> dict[str, str]:
        """`systemctl stop` with KillMode=process: SIGTERM to the daemon alone.
        Return its STOPPING=1 message once it has exited with status 0."""
        assert self.daemon is not None
        self.daemon.send_signal(signal.SIGTERM)
        stopping = self.receive()
        assert stopping.get("STOPPING") == "1", stopping
        assert self.daemon.wait(STOP_TIMEOUT) == 0, self.journal.read_text()
        return stopping

    def close(self) -> None:
        """Kill every domain and stop the daemon, whatever state a failed test left."""
        if self.daemon is not None and self.daemon.poll() is None:
            # Instance.cleanup unmounts with `vzfs umount`, which waits until the daemon's
            # pid is gone: it must not stay behind as our zombie.
            threading.Thread(target=self.daemon.wait, daemon=True).start()
        elif is_vzfs_mount(str(self.inst.mnt)):
            # Left by a killed daemon ("Transport endpoint is not connected").
            subprocess.run(["umount", "-l", str(self.inst.mnt)], check=False, capture_output=True)
        self.inst.cleanup()
        if self.daemon is not None:
            try:
                self.daemon.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()
        self.notify.close()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    reason = system_ready()
    if reason:
        pytest.skip(reason)
    svc = Service(tmp_path / "a")
    try:
        yield svc
    finally:
        svc.close()


def alive(pid: int) -> bool:
    """Whether *pid* runs (exists and is no zombie; proc(5): state follows "(comm)")."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_ready_stopping_and_domains_that_outlive_the_daemon(service: Service) -> None:
    inst = service.inst
    ready = service.start()
    # READY=1 means served: the mount answers at once.
    assert (inst.mnt / "version").read_text()
    assert inst.daemon_pid() == service.daemon.pid == int(ready["MAINPID"])
    assert ready["STATUS"] == f"serving {inst.mnt} from state dir {inst.state}"

    inst.quick("web1")
    inst.write("web1", "state", "start")
    init = int(inst.read("web1", "pid"))

    stopping = service.stop()
    assert "domains keep running" in stopping["STATUS"]
    assert not is_vzfs_mount(str(inst.mnt))
    assert alive(init)

    # `systemctl start` again: READY=1 only once the running domain is re-attached.
    service.start()
    assert inst.read("web1", "state") == "running\n"
    assert int(inst.read("web1", "pid")) == init


@pytest.mark.system
def test_no_child_of_the_daemon_inherits_notify_socket(tmp_path: Path) -> None:
    """The daemon's children never see NOTIFY_SOCKET.

    /proc/PID/environ cannot show it for the zygote or a controller: they are forked,
    not exec'd, and that file shows the strings the daemon was exec'd with, whatever
    it removed since. So look at what the daemon and a controller pass on when they
    exec: CRIU, run through a wrapper ($VZFS_CRIU) that records its environment. The
    daemon runs `criu --version` before it forks the zygote; a controller runs
    `criu dump` to suspend its domain.
    """
    reason = system_ready()
    if reason:
        pytest.skip(reason)
    try:
        real = criu.find()
    except OSError as exc:
        pytest.skip(f"needs CRIU: {exc}")
    records = tmp_path / "criu-env"
    records.mkdir()
    wrapper = tmp_path / "criu"
    wrapper.write_text("#!/bin/sh\n"
                       f"{{ printf '%s\\0' \"$1\"; env -0; }} > {shlex.quote(str(records))}/$$\n"
                       f'exec {shlex.quote(real)} "$@"\n')
    wrapper.chmod(0o755)
    svc = Service(tmp_path / "a", env={criu.ENV: str(wrapper)})
    try:
        svc.start()
        svc.inst.quick("probe")
        svc.inst.write("probe", "state", "start")
        svc.inst.write("probe", "state", "suspend")
        assert svc.inst.read("probe", "state") == "suspended\n"
    finally:
        svc.close()
    seen: dict[str, set[str]] = {}
    for record in records.iterdir():
        command, *env = record.read_bytes().decode().split("\0")
        seen[command] = {assignment.partition("=")[0] for assignment in env}
    assert {"--version", "dump"} <= seen.keys(), seen.keys()
    for command in ("--version", "dump"):
        assert criu.ENV in seen[command], "the record is not of the daemon's environment"
        assert sdnotify.ENV not in seen[command], f"criu {command} inherited {sdnotify.ENV}"


def test_exec_stop_post_lets_a_killed_daemon_be_restarted(service: Service) -> None:
    inst = service.inst
    service.start()
    # SIGKILL (the OOM killer, or the stop timeout) leaves the mount behind …
    # (not Instance.kill_daemon: it unmounts too, which systemd does not)
    service.daemon.kill()
    service.daemon.wait()
    assert is_vzfs_mount(str(inst.mnt))
    # … and ExecStart= alone refuses it:
    again = subprocess.run(for_instance(command_line("ExecStart"), inst), check=False,
                           capture_output=True, text=True, timeout=60)
    assert again.returncode != 0 and str(inst.mnt) in again.stderr, again.stderr
    # ExecStopPost= detaches it, and the restart works.
    post = subprocess.run(for_instance(command_line("ExecStopPost"), inst), check=False,
                          capture_output=True, text=True, timeout=60)
    assert post.returncode == 0, post.stderr
    assert not is_vzfs_mount(str(inst.mnt))
    service.start()
    assert inst.daemon_pid() == service.daemon.pid


# -- the client, alone --------------------------------------------------------------
def test_take_from_environment_removes_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(sdnotify.ENV, "@vzfs-test")
    notifier = sdnotify.Notifier.take_from_environment()
    assert notifier.socket_name == "@vzfs-test"
    assert sdnotify.ENV not in os.environ
    assert sdnotify.Notifier.take_from_environment().socket_name is None


def test_a_message_reaches_an_abstract_socket() -> None:
    name = f"vzfs-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(b"\0" + name.encode())
        receiver.settimeout(5)
        sdnotify.Notifier(f"@{name}").stopping("unmounting")
        assert receiver.recv(4096) == b"STOPPING=1\nSTATUS=unmounting"


def test_a_socket_nobody_reads_is_a_warning(tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="vzfs.daemon.sdnotify"):
        sdnotify.Notifier(str(tmp_path / "gone")).ready("serving")
        sdnotify.Notifier("vsock:2:1234").ready("serving")
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["sd_notify", "sd_notify"]
    assert "No such file or directory" in caplog.records[0].getMessage()
    assert "neither a path nor @name" in caplog.records[1].getMessage()


def test_socket_addresses() -> None:
    assert sdnotify.socket_address("/run/systemd/notify") == b"/run/systemd/notify"
    assert sdnotify.socket_address("@abc") == b"\0abc"
    assert sdnotify.socket_address("vsock:2:1234") is None
    assert sdnotify.socket_address("relative") is None
    assert (sdnotify.message("READY=1", "STATUS=x y", "MAINPID=7") ==
            b"READY=1\nSTATUS=x y\nMAINPID=7")

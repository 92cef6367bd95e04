"""The keeper (controller/keeper.py): a domain outlives its controller, not its keeper.

Each test SIGKILLs a vzfs process of a running domain and checks, from outside and
from the console, what is left: the same init and processes, a new controller the
daemon re-attached to, the console and the verbs working — or, when the keeper
itself dies, a `crashed` domain with nothing of it left behind.
"""

import os
import signal
import time
from pathlib import Path

from tests.system import Instance, sh, wait_for
from tests.test_domains import cgroup_of, state, wait_for_console_shell
from tests.test_proctitle import children, title


def parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def keeper_of(inst: Instance, name: str) -> int:
    keeper = parent(int(inst.read(name, "pid")))
    assert title(keeper) == f"vzfs: keeper {name}"
    return keeper


def controller_of(inst: Instance, name: str) -> int:
    """The live controller of *name*: the keeper's child with that title."""
    keeper = keeper_of(inst, name)
    found: list[int] = []

    def one() -> bool:
        found[:] = [c for c in children(keeper)
                    if title(c) == f"vzfs: controller {name}" and not _zombie(c)]
        return len(found) == 1

    wait_for(one, what=f"the controller of {name}")
    return found[0]


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists() or _zombie(pid)


def kill_controller(inst: Instance, name: str) -> int:
    """SIGKILL the controller; return the one that took over once the daemon uses it."""
    old = controller_of(inst, name)
    events = Events(inst)
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: gone(old), what="the controller's death")
    new = controller_of(inst, name)
    assert new != old
    # The daemon re-attached to it, and says so.
    wait_for(lambda: f"{name} controller replaced" in events.more(), what="the daemon to re-attach")
    events.close()
    return new


class Events:
    """The `events` stream from now on, read without blocking."""

    def __init__(self, inst: Instance) -> None:
        self.fd = os.open(inst.mnt / "events", os.O_RDONLY | os.O_NONBLOCK)
        self.seen = b""

    def more(self) -> str:
        try:
            while chunk := os.read(self.fd, 65536):
                self.seen += chunk
        except BlockingIOError:
            pass
        return self.seen.decode()

    def close(self) -> None:
        os.close(self.fd)


def type_and_see(inst: Instance, name: str, command: str, expect: str) -> None:
    with open(inst.dom(name) / "console", "w") as f:
        f.write(command + "\n")
    wait_for(lambda: expect in inst.read(name, "screen"), what=f"{expect!r} on the screen")


def test_a_killed_controller_is_replaced_and_the_domain_runs_on(instance: Instance) -> None:
    instance.define("k1")
    instance.write("k1", "state", "start")
    wait_for_console_shell(instance, "k1")
    init = int(instance.read("k1", "pid"))
    procs = sorted(cgroup_of(instance, "k1").procs())
    keeper = keeper_of(instance, "k1")
    t = time.monotonic()
    kill_controller(instance, "k1")
    print(f"re-attached {time.monotonic() - t:.3f} s after the SIGKILL")
    # the same container: init, its processes, its keeper
    assert state(instance, "k1") == "running"
    assert int(instance.read("k1", "pid")) == init
    assert sorted(cgroup_of(instance, "k1").procs()) == procs
    assert keeper_of(instance, "k1") == keeper
    assert instance.read("k1", "error") == ""
    # the console is the same pty: the shell on it never saw a hangup, and answers
    type_and_see(instance, "k1", "echo $((6*7))-after", "42-after")
    # and every verb works through the new controller
    instance.write("k1", "state", "pause")
    assert state(instance, "k1") == "paused"
    instance.write("k1", "state", "resume")
    instance.write("k1", "state", "stop")
    assert state(instance, "k1") == "stopped"
    assert not cgroup_of(instance, "k1").exists()
    wait_for(lambda: gone(keeper), what="the keeper's exit")


def test_a_new_controller_takes_the_live_mounts_and_the_pause(
        instance: Instance, tmp_path: Path) -> None:
    src = tmp_path / "shared"
    src.mkdir()
    (src / "mark").write_text("here\n")
    instance.quick("k2")
    instance.write("k2", "state", "start")
    instance.write("k2", "mounts", f"add {src} /mnt/shared ro")
    instance.write("k2", "state", "pause")
    kill_controller(instance, "k2")
    assert state(instance, "k2") == "paused"
    assert f"{src} /mnt/shared" in instance.read("k2", "mounts")
    instance.write("k2", "state", "resume")
    assert state(instance, "k2") == "running"
    instance.write("k2", "mounts", "del /mnt/shared")
    assert "/mnt/shared" not in instance.read("k2", "mounts")


def test_an_init_that_ends_while_no_controller_runs_is_recorded(instance: Instance) -> None:
    # init ends on SIGUSR1 with status 3; the controller is stopped (SIGSTOP) meanwhile,
    # then SIGKILLed: its successor hears the status from the keeper and records it.
    instance.define("k3", 'init = ["/bin/sh", "-c", "trap \\"exit 3\\" USR1; '
                          'sleep 100000 & wait"]\n')
    instance.write("k3", "state", "start")
    init = int(instance.read("k3", "pid"))
    ctl = controller_of(instance, "k3")
    os.kill(ctl, signal.SIGSTOP)
    os.kill(init, signal.SIGUSR1)
    wait_for(lambda: gone(init), what="init's exit")
    assert state(instance, "k3") == "running"       # nobody has told the daemon yet
    os.kill(ctl, signal.SIGKILL)
    wait_for(lambda: state(instance, "k3") == "crashed", what="the recorded end")
    assert "init exited with status 3" in instance.read("k3", "error")
    assert not cgroup_of(instance, "k3").exists()


def test_a_killed_keeper_takes_the_domain_down_and_leaves_nothing(instance: Instance) -> None:
    instance.define("k4")
    instance.write("k4", "state", "start")
    wait_for_console_shell(instance, "k4")
    init = int(instance.read("k4", "pid"))
    keeper = keeper_of(instance, "k4")
    ctl = controller_of(instance, "k4")
    procs = cgroup_of(instance, "k4").procs()
    os.kill(keeper, signal.SIGKILL)
    wait_for(lambda: state(instance, "k4") == "crashed", what="the crash")
    assert "keeper" in instance.read("k4", "error")
    for pid in procs + [init, ctl, keeper]:
        wait_for(lambda: gone(pid), what=f"{pid} to end")
    assert not cgroup_of(instance, "k4").exists()
    instance.write("k4", "state", "start")           # and it starts again
    assert state(instance, "k4") == "running"


def test_a_controller_that_keeps_dying_ends_the_domain(instance: Instance) -> None:
    from vzfs.controller.keeper import CONTROLLER_RESTARTS
    instance.quick("k5")
    instance.write("k5", "state", "start")
    init = int(instance.read("k5", "pid"))
    for _ in range(CONTROLLER_RESTARTS):
        kill_controller(instance, "k5")
    os.kill(controller_of(instance, "k5"), signal.SIGKILL)
    wait_for(lambda: state(instance, "k5") == "crashed", what="the crash")
    assert f"died {CONTROLLER_RESTARTS} times" in instance.read("k5", "error")
    wait_for(lambda: gone(init), what="init's end")
    assert not cgroup_of(instance, "k5").exists()


def test_controller_and_daemon_killed_together(instance: Instance) -> None:
    instance.quick("k6")
    instance.write("k6", "state", "start")
    init = int(instance.read("k6", "pid"))
    ctl = controller_of(instance, "k6")
    os.kill(ctl, signal.SIGKILL)
    instance.kill_daemon()
    instance.mount()
    assert state(instance, "k6") == "running"
    assert int(instance.read("k6", "pid")) == init
    assert controller_of(instance, "k6") != ctl
    instance.write("k6", "state", "stop")
    assert state(instance, "k6") == "stopped"


def test_rmdir_after_every_process_was_killed_leaves_no_cgroup(instance: Instance) -> None:
    instance.quick("k7")
    instance.write("k7", "state", "start")
    cg = cgroup_of(instance, "k7")
    init = int(instance.read("k7", "pid"))
    keeper, ctl = keeper_of(instance, "k7"), controller_of(instance, "k7")
    instance.kill_daemon()
    for pid in (ctl, keeper):
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: gone(init), what="init's end")
    assert cg.exists()                 # nobody was left to remove it
    instance.mount()
    assert state(instance, "k7") == "crashed"
    assert "controller" in instance.read("k7", "error")
    r = sh(f"rmdir {instance.dom('k7')}")
    assert r.returncode == 0, r.stderr
    assert not cg.exists()

"""`kill` works at once, whatever other write is in flight on `state` (vzfs(5), State):
the write it interrupts is let go of (preempted) and its close fails ECANCELED."""

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.system import Instance, sh, wait_for
from vzfs.controller import paths
from vzfs.kernel import cgroups

# Well under a second here; the bound only says the kill did not wait for the verb
# it cut short (seconds: a 30 s stop timeout, a 5 s hook).
AT_ONCE = 2.0
# An init that ignores its stop signal and SIGTERM: only a SIGKILL ends it.
DEAF_INIT = ('init = ["/bin/sh", "-c", "trap \\"\\" PWR TERM; while :; do sleep 1; done"]\n'
             'stop_timeout = 30\n')


def state(inst: Instance, name: str) -> str:
    return inst.read(name, "state").strip()


# A program writing a verb to `state` as open, write, close; it says which step failed.
WRITER = """
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_TRUNC)
try:
    os.write(fd, sys.argv[2].encode())
except OSError as exc:
    print("write", exc.errno, flush=True)
try:
    os.close(fd)
except OSError as exc:
    print("close", exc.errno, flush=True)
"""


class Writer:
    """WRITER in a process of its own (not a thread of the test's: a child the test
    forks meanwhile would inherit its descriptor, and that copy's close waits in the
    kernel for the write it holds)."""

    def __init__(self, path: Path, verb: str) -> None:
        self.verb = verb
        self.proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), verb],
                                     stdout=subprocess.PIPE, text=True)
        self.failed: dict[str, int] = {}

    def errno(self) -> int | None:
        """The first failure: at the write, or else at the close."""
        out, _ = self.proc.communicate(timeout=30)
        self.failed = {step: int(code) for step, code in (line.split() for line in
                                                          out.splitlines())}
        return self.failed.get("write") or self.failed.get("close")


def kill_at_once(inst: Instance, name: str) -> float:
    t = time.monotonic()
    r = sh(f"echo kill > {inst.dom(name)}/state")
    took = time.monotonic() - t
    assert r.returncode == 0, (r.stderr, inst.read(name, "error"))
    assert took < AT_ONCE, took
    return took


def nothing_runs(inst: Instance, name: str) -> None:
    """No controller of the domain, no cgroup of it, no pid shown."""
    assert inst.read(name, "pid") == ""
    ident = int(inst.read(name, "id"))
    layout = cgroups.detect()
    cg = cgroups.Cgroup(layout, paths.cgroup_relpath(str(inst.state), ident))
    wait_for(lambda: not cg.exists(), what="the domain's cgroup removed")
    wait_for(lambda: not subprocess.run(["pgrep", "-f", f"vzfs: controller {name}$"],
                                        capture_output=True).stdout,
             what="no controller of the domain")


def test_kill_cuts_a_shell_stop_short(instance: Instance) -> None:
    instance.define("deaf", DEAF_INIT)
    instance.write("deaf", "state", "start")
    pid = int(instance.read("deaf", "pid"))
    stopper = subprocess.Popen(["bash", "-c", f"echo stop > {instance.dom('deaf')}/state"],
                               stderr=subprocess.PIPE, text=True)
    wait_for(lambda: state(instance, "deaf") == "stopping", what="the stop under way")
    kill_at_once(instance, "deaf")
    assert state(instance, "deaf") == "stopped"
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    # The stop's shell returns too (bash does not report a close's error), long
    # before its 30 s timeout.
    stopper.communicate(timeout=AT_ONCE)
    assert instance.read("deaf", "error") == "cannot stop domain deaf: it was cut short by kill\n"
    nothing_runs(instance, "deaf")


def test_a_stop_cut_short_by_kill_fails_ecanceled(instance: Instance) -> None:
    instance.define("deaf", DEAF_INIT)
    instance.write("deaf", "state", "start")
    stop = Writer(instance.dom("deaf") / "state", "stop")
    wait_for(lambda: state(instance, "deaf") == "stopping", what="the stop under way")
    kill_at_once(instance, "deaf")
    assert stop.errno() == errno.ECANCELED
    # Its write was let go of when the kill opened the file: the close said it.
    assert "write" not in stop.failed
    assert state(instance, "deaf") == "stopped"
    assert instance.read("deaf", "error") == "cannot stop domain deaf: it was cut short by kill\n"
    # A command that succeeds afterwards clears it.
    instance.write("deaf", "state", "start")
    assert instance.read("deaf", "error") == ""


def slow_prepare(instance: Instance, seconds: int = 5) -> str:
    """A prepare hook that takes *seconds*; the marker in its command line."""
    marker = f"slow-prepare-{os.getpid()}-{time.monotonic_ns()}"
    instance.hooks.mkdir(exist_ok=True)
    path = instance.hooks / "10-slow"
    path.write_text(f"#!/bin/sh\n[ \"$2\" = prepare ] || exit 0\n"
                    f"exec sh -c 'sleep {seconds}; : {marker}'\n")
    path.chmod(0o755)
    return marker


def test_kill_cuts_a_start_in_its_hooks_short(instance: Instance) -> None:
    instance.quick("slow")
    marker = slow_prepare(instance)
    start = Writer(instance.dom("slow") / "state", "start")
    wait_for(lambda: sh(f"pgrep -f {marker}").stdout != "", what="the prepare hook running")
    assert state(instance, "slow") == "starting"
    kill_at_once(instance, "slow")
    assert start.errno() == errno.ECANCELED
    assert state(instance, "slow") == "stopped"
    assert instance.read("slow", "error") == "cannot start domain slow: it was cut short by kill\n"
    nothing_runs(instance, "slow")
    # The hook it no longer waits for is killed with what it started (well before its
    # 5 s), and nothing comes up after it.
    wait_for(lambda: not sh(f"pgrep -f {marker}").stdout, timeout=AT_ONCE,
             what="the abandoned hook killed")
    assert state(instance, "slow") == "stopped"
    # The next start does not wait behind it.
    (instance.hooks / "10-slow").unlink()
    t = time.monotonic()
    instance.write("slow", "state", "start")
    assert time.monotonic() - t < AT_ONCE
    assert instance.read("slow", "error") == ""


def test_a_second_writer_is_refused_and_leaves_the_first_alone(instance: Instance) -> None:
    instance.quick("two")
    marker = slow_prepare(instance, seconds=2)
    start = Writer(instance.dom("two") / "state", "start")
    wait_for(lambda: sh(f"pgrep -f {marker}").stdout != "", what="the prepare hook running")
    t = time.monotonic()
    r = sh(f"echo start > {instance.dom('two')}/state")
    assert time.monotonic() - t < AT_ONCE
    assert r.returncode != 0 and "Device or resource busy" in r.stderr, r.stderr
    # The first goes on: its start takes effect, and its close says so.
    assert start.errno() is None
    assert state(instance, "two") == "running"
    assert instance.read("two", "pid") != ""
    assert instance.read("two", "error") == ""


def test_a_lone_writer_still_waits_and_fails_in_its_write(instance: Instance) -> None:
    # Nothing preempts it: the write returns when the verb has taken effect, and a
    # refusal is the write's errno, which `echo` shows.
    d = instance.quick("lone")
    instance.write("lone", "state", "start")
    r = sh(f"echo stop > {d}/state && cat {d}/state; echo stop > {d}/state")
    assert r.stdout == "stopped\n"
    assert "Device or resource busy" in r.stderr, r.stderr

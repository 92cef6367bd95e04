"""pause / resume (the cgroup freezer) and suspend / resume (CRIU), on real domains.

The domains run the busybox template's init with its shell on the console; the
tests type into that shell like a user would. The counter writes its value to
/counter on the root every 50 ms through a file it opened once (fd 8, /count.log).
"""

import errno
import os
import time
from collections.abc import Iterator
from pathlib import Path

from tests.system import Instance, wait_for
from vzfs.controller import checkpoint

COUNTER = ("( exec 8>>/count.log; i=0; while :; do i=$((i+1)); echo $i > /counter; "
           "echo $i >&8; sleep 0.05; done ) &\n")


def state(inst: Instance, name: str) -> str:
    return inst.read(name, "state").strip()


def rootfs(inst: Instance, name: str) -> Path:
    return inst.state / "private" / inst.read(name, "id").strip()


def counter(inst: Instance, name: str) -> int:
    text = (rootfs(inst, name) / "counter").read_text().strip()
    return int(text) if text else 0


def start_with_counter(inst: Instance, name: str) -> None:
    inst.define(name)
    inst.write(name, "state", "start")
    wait_for(lambda: "#" in inst.read(name, "screen"), what="the shell's prompt")
    inst.write(name, "console", COUNTER)
    wait_for(lambda: (rootfs(inst, name) / "counter").exists() and counter(inst, name) > 2,
             what="the counter counting")


def tree(inst: Instance, name: str) -> Iterator[tuple[int, int, str]]:
    """(host pid, pid inside the container, command) of every process of the domain."""
    todo = [int(inst.read(name, "pid"))]
    while todo:
        pid = todo.pop()
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except FileNotFoundError:
            continue                  # one of the counter's sleeps, gone meanwhile
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        yield pid, int(fields["NSpid"].split()[-1]), fields["Name"].strip()
        todo += [int(c) for c in children]


def processes(inst: Instance, name: str) -> set[tuple[int, str]]:
    """(pid inside the container, command) of every process but the counter's sleeps."""
    return {(inner, comm) for _, inner, comm in tree(inst, name) if comm != "sleep"}


def host_pid_of(inst: Instance, name: str, inner: int) -> int:
    for pid, their, _ in tree(inst, name):
        if their == inner:
            return pid
    raise AssertionError(f"no process {inner} in the domain")


def shown(inst: Instance, name: str, line: str) -> bool:
    """Whether a screen line reads exactly *line* (output, not the typed command)."""
    return any(row.strip() == line for row in inst.read(name, "screen").splitlines())


def write_fails(path: Path, text: str) -> int:
    try:
        with open(path, "w") as f:
            f.write(text)
    except OSError as exc:
        return exc.errno or 0
    return 0


def test_pause_stops_the_counter_and_resume_continues_it(instance: Instance) -> None:
    start_with_counter(instance, "p")
    pid = instance.read("p", "pid")
    instance.write("p", "state", "pause")
    assert state(instance, "p") == "paused"
    frozen = counter(instance, "p")
    time.sleep(0.5)
    assert counter(instance, "p") == frozen, "the counter went on while paused"
    assert instance.read("p", "pid") == pid
    # Verbs that make no sense now are refused and change nothing.
    assert write_fails(instance.dom("p") / "state", "pause") == errno.EBUSY
    assert state(instance, "p") == "paused"
    instance.write("p", "state", "resume")
    assert state(instance, "p") == "running"
    wait_for(lambda: counter(instance, "p") > frozen + 3, what="the counter going on")
    assert instance.read("p", "pid") == pid
    assert write_fails(instance.dom("p") / "state", "resume") == errno.EBUSY


def test_a_paused_domain_can_be_killed_and_stopped(instance: Instance) -> None:
    start_with_counter(instance, "pk")
    instance.write("pk", "state", "pause")
    instance.write("pk", "state", "kill")
    assert state(instance, "pk") == "stopped"
    instance.write("pk", "state", "start")
    instance.write("pk", "state", "pause")
    instance.write("pk", "state", "stop")
    assert state(instance, "pk") == "stopped"


def test_suspend_and_resume_keep_processes_files_and_screen(instance: Instance) -> None:
    start_with_counter(instance, "s")
    # A pipe between two processes, one of them in /etc, and a file kept open.
    instance.write("s", "console", "cd /etc; (while :; do pwd; sleep 0.05; done) | "
                                   "while read l; do echo $l > /piped; done & cd /\n")
    instance.write("s", "console", "exec 7</etc/hostname; echo before-suspend\n")
    wait_for(lambda: shown(instance, "s", "before-suspend"), what="the echo on the screen")
    # The lasting processes: a fork caught before its exec (a "sh" about to become
    # a sleep) shows in one look only.
    before_procs = processes(instance, "s")
    for _ in range(3):
        time.sleep(0.1)
        before_procs &= processes(instance, "s")
    shell = host_pid_of(instance, "s", 3)
    assert os.readlink(f"/proc/{shell}/fd/7") == "/etc/hostname"
    vnc = instance.read("s", "vnc")
    screen = instance.read("s", "screen")

    instance.write("s", "state", "suspend")
    assert state(instance, "s") == "suspended"
    assert instance.read("s", "pid") == ""
    assert instance.read("s", "error") == ""
    assert instance.read("s", "screen") == screen
    at_suspend = counter(instance, "s")
    time.sleep(0.3)
    assert counter(instance, "s") == at_suspend, "something still counts"
    ddir = instance.state / "domains" / "s"
    assert checkpoint.has_checkpoint(str(ddir))

    instance.write("s", "state", "resume")
    assert state(instance, "s") == "running"
    assert instance.read("s", "error") == ""
    # The same processes under the same pids inside, not a new boot.
    wait_for(lambda: before_procs <= processes(instance, "s"),
             what="every process back under its own pid")
    after = processes(instance, "s")
    for _ in range(3):
        time.sleep(0.1)
        after &= processes(instance, "s")
    assert after == before_procs, "a process restarted under a new pid"
    shell = host_pid_of(instance, "s", 3)
    assert os.readlink(f"/proc/{shell}/fd/7") == "/etc/hostname"
    # The counter continues from its value, through the file it had open.
    wait_for(lambda: counter(instance, "s") > at_suspend + 3, what="the counter going on")
    values = [int(v) for v in (rootfs(instance, "s") / "count.log").read_text().split()]
    assert values == list(range(1, len(values) + 1)), "the count restarted or skipped"
    assert instance.read("s", "screen") == screen
    assert not checkpoint.has_checkpoint(str(ddir)), "a spent checkpoint was kept"
    piped = rootfs(instance, "s") / "piped"
    piped.unlink()
    wait_for(lambda: piped.exists() and piped.read_text() == "/etc\n",
             what="the pipe carrying the working directory again")
    # The console is live again: the shell answers.
    instance.write("s", "console", "echo after-resume\n")
    wait_for(lambda: shown(instance, "s", "after-resume"),
             what="the shell answering after the resume")
    wait_for(lambda: instance.read("s", "vnc") == vnc, what="the VNC server on its old address")


def test_suspend_and_resume_through_a_daemon_restart(instance: Instance) -> None:
    start_with_counter(instance, "d")
    screen = instance.read("d", "screen")
    instance.write("d", "state", "suspend")
    at_suspend = counter(instance, "d")
    instance.kill_daemon()
    instance.mount()
    assert state(instance, "d") == "suspended"
    assert instance.read("d", "screen") == screen      # from the file on its root
    instance.write("d", "state", "start")          # start restores as resume does
    assert state(instance, "d") == "running"
    wait_for(lambda: counter(instance, "d") > at_suspend + 3, what="the counter going on")
    values = [int(v) for v in (rootfs(instance, "d") / "count.log").read_text().split()]
    assert values == list(range(1, len(values) + 1))
    assert instance.read("d", "screen") == screen


def test_refusals(instance: Instance) -> None:
    instance.define("r")
    for verb, sentence in (("suspend", "cannot suspend domain r: it is not running (stopped)"),
                           ("pause", "cannot pause domain r: it is not running (stopped)"),
                           ("resume", "cannot resume domain r: it is stopped")):
        assert write_fails(instance.dom("r") / "state", verb) == errno.EBUSY
        assert instance.read("r", "error") == sentence + "\n"
        assert state(instance, "r") == "stopped"
    assert instance.read("r", "checkpoint") == ""


def test_a_paused_domain_suspends_and_resumes_running(instance: Instance) -> None:
    start_with_counter(instance, "p")
    instance.write("p", "state", "pause")
    frozen_at = counter(instance, "p")
    instance.write("p", "state", "suspend")
    assert state(instance, "p") == "suspended"
    assert counter(instance, "p") == frozen_at
    instance.write("p", "state", "resume")
    assert state(instance, "p") == "running"
    wait_for(lambda: counter(instance, "p") > frozen_at + 3, what="the counter going on")


def test_a_failed_dump_of_a_paused_domain_leaves_it_paused(instance: Instance) -> None:
    start_with_counter(instance, "fp")
    instance.write("fp", "console",
                   "dd if=/dev/zero of=/big bs=1M count=2 2>/dev/null; exec 9</big; rm /big; "
                   "touch /held\n")
    wait_for(lambda: (rootfs(instance, "fp") / "held").exists(), what="the deleted file held")
    instance.write("fp", "state", "pause")
    frozen_at = counter(instance, "fp")
    pid = instance.read("fp", "pid")
    assert write_fails(instance.dom("fp") / "state", "suspend") == errno.EIO
    assert instance.read("fp", "error").startswith("cannot suspend domain fp: CRIU could not "
                                                   "checkpoint it: ")
    assert state(instance, "fp") == "paused"
    assert instance.read("fp", "pid") == pid
    time.sleep(0.3)
    assert counter(instance, "fp") == frozen_at          # still frozen
    ddir = instance.state / "domains" / "fp"
    assert not (ddir / checkpoint.IMAGES).exists() and not (ddir / checkpoint.PARTIAL).exists()
    instance.write("fp", "state", "resume")
    assert state(instance, "fp") == "running"
    wait_for(lambda: counter(instance, "fp") > frozen_at + 3, what="the counter going on")


def test_mounts_while_paused(instance: Instance, tmp_path: Path) -> None:
    source = tmp_path / "data"
    source.mkdir()
    start_with_counter(instance, "mp")
    instance.write("mp", "mounts", f"add {source} /data ro")
    instance.write("mp", "state", "pause")
    # read: what is mounted now, as while running
    assert instance.read("mp", "mounts") == f"{source} /data ro\n"
    # a change waits for the domain to run again: EBUSY, and nothing changes
    config = instance.read("mp", "config")
    assert write_fails(instance.dom("mp") / "mounts", "del /data") == errno.EBUSY
    assert instance.read("mp", "error") == "cannot change the mounts of domain mp: it is paused\n"
    assert write_fails(instance.dom("mp") / "mounts", f"add {source} /more") == errno.EBUSY
    assert instance.read("mp", "config") == config
    pid = int(instance.read("mp", "pid"))
    assert Path(f"/proc/{pid}/root/data").is_dir()
    assert not Path(f"/proc/{pid}/root/more").exists()
    instance.write("mp", "state", "resume")
    instance.write("mp", "mounts", "del /data")
    assert instance.read("mp", "mounts") == ""


def test_a_refusing_prepare_hook_stops_a_resume(instance: Instance) -> None:
    start_with_counter(instance, "h")
    instance.write("h", "state", "suspend")
    instance.hooks.mkdir(exist_ok=True)
    refuse = instance.hooks / "10-no-resume"
    refuse.write_text('#!/bin/sh\n[ "$2" = prepare ] && [ "$VZFS_REASON" = resume ] && '
                      '{ echo "not now"; exit 3; }\nexit 0\n')
    refuse.chmod(0o755)
    for verb in ("resume", "start"):
        assert write_fails(instance.dom("h") / "state", verb) == errno.EPERM
        assert instance.read("h", "error") == (
            "cannot resume domain h: hook 10-no-resume refused at prepare (exit 3): not now\n")
        assert state(instance, "h") == "suspended"
        assert checkpoint.has_checkpoint(str(instance.state / "domains" / "h"))
    refuse.unlink()
    instance.write("h", "state", "resume")
    assert state(instance, "h") == "running"


def test_a_failed_dump_leaves_the_domain_running_and_says_why(instance: Instance) -> None:
    start_with_counter(instance, "f")
    # An open file that was deleted is kept by CRIU as a "ghost" copy, up to 1 MB:
    # a 2 MB one makes the dump fail.
    instance.write("f", "console",
                   "dd if=/dev/zero of=/big bs=1M count=2 2>/dev/null; exec 9</big; rm /big; "
                   "touch /held\n")
    wait_for(lambda: (rootfs(instance, "f") / "held").exists(), what="the deleted file held")
    pid = instance.read("f", "pid")
    assert write_fails(instance.dom("f") / "state", "suspend") == errno.EIO
    error = instance.read("f", "error")
    assert error.startswith("cannot suspend domain f: CRIU could not checkpoint it: ")
    assert "ghost" in error.lower(), error
    assert state(instance, "f") == "running"
    assert instance.read("f", "pid") == pid
    before = counter(instance, "f")
    wait_for(lambda: counter(instance, "f") > before + 3, what="the counter going on")
    ddir = instance.state / "domains" / "f"
    assert not (ddir / checkpoint.IMAGES).exists() and not (ddir / checkpoint.PARTIAL).exists()
    log = instance.read("f", "checkpoint.log")
    assert "Dumping FAILED" in log
    # Closed, it suspends.
    instance.write("f", "console", "exec 9<&-; touch /closed\n")
    wait_for(lambda: (rootfs(instance, "f") / "closed").exists(), what="the file closed")
    instance.write("f", "state", "suspend")
    assert state(instance, "f") == "suspended"
    instance.write("f", "state", "resume")
    assert state(instance, "f") == "running"


def test_a_failed_restore_keeps_the_checkpoint_to_retry(instance: Instance, tmp_path: Path) -> None:
    source = tmp_path / "data"
    source.mkdir()
    (source / "hello").write_text("hello\n")
    start_with_counter(instance, "m")
    instance.write("m", "mounts", f"add {source} /data ro")
    screen = instance.read("m", "screen")
    instance.write("m", "state", "suspend")
    hidden = tmp_path / "elsewhere"
    source.rename(hidden)
    assert write_fails(instance.dom("m") / "state", "resume") == errno.ENOENT
    assert state(instance, "m") == "suspended"
    assert str(source) in instance.read("m", "error")
    assert checkpoint.has_checkpoint(str(instance.state / "domains" / "m"))
    hidden.rename(source)
    instance.write("m", "state", "resume")
    assert state(instance, "m") == "running"
    pid = int(instance.read("m", "pid"))
    assert Path(f"/proc/{pid}/root/data/hello").read_text() == "hello\n"
    assert instance.read("m", "mounts") == f"{source} /data ro\n"
    assert instance.read("m", "screen") == screen, "the failed try cost the saved screen"


def test_kill_of_a_suspended_domain_forgets_its_checkpoint(instance: Instance) -> None:
    start_with_counter(instance, "k")
    instance.write("k", "state", "suspend")
    assert write_fails(instance.dom("k") / "state", "stop") == errno.EBUSY
    try:
        instance.dom("k").rmdir()
    except OSError as exc:
        assert exc.errno == errno.EBUSY
    else:
        raise AssertionError("a suspended domain was undefined")
    assert instance.read("k", "error") == ("cannot undefine domain k: it is suspended (resume "
                                           "it, or kill it to forget its checkpoint)\n")
    instance.write("k", "state", "kill")
    assert state(instance, "k") == "stopped"
    assert not checkpoint.has_checkpoint(str(instance.state / "domains" / "k"))
    instance.write("k", "state", "start")           # a fresh boot
    assert state(instance, "k") == "running"
    assert len(processes(instance, "k")) <= 2


def test_the_figures_and_the_log_of_the_last_checkpoint(instance: Instance) -> None:
    start_with_counter(instance, "v")
    # Output nobody read back yet is still on the screen of the suspended domain.
    instance.write("v", "console", "echo last-words; touch /said\n")
    wait_for(lambda: (rootfs(instance, "v") / "said").exists(), what="the shell's answer")
    time.sleep(0.2)
    instance.write("v", "state", "suspend")
    assert shown(instance, "v", "last-words")
    figures = dict(line.split(" ") for line in instance.read("v", "checkpoint").splitlines())
    for key in ("dump_ms", "frozen_ms", "suspend_ms", "images_bytes", "pages_written"):
        assert float(figures[key]) > 0, key
    assert "restore_ms" not in figures
    assert "Dumping finished successfully" in instance.read("v", "checkpoint.log")
    instance.write("v", "state", "resume")
    figures = dict(line.split(" ") for line in instance.read("v", "checkpoint").splitlines())
    for key in ("dump_ms", "restore_ms", "criu_restore_ms"):
        assert float(figures[key]) > 0, key
    assert float(figures["restore_ms"]) >= float(figures["criu_restore_ms"])
    assert "Restore finished successfully" in instance.read("v", "checkpoint.log")

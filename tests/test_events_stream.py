"""The `events` stream and autostart, on a real daemon."""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.system import Instance, wait_for

LINE = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (\S+) (\S+)(?: (.*))?")


class Reader:
    """`tail -f`-like: a reader of `events` opened now, lines as they come."""

    def __init__(self, inst: Instance) -> None:
        self.fd = os.open(inst.mnt / "events", os.O_RDONLY | os.O_NONBLOCK)
        self.buf = b""
        self.lines: list[tuple[str, str, str, str]] = []

    def poll(self) -> list[tuple[str, str, str, str]]:
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            if not data:
                break
            self.buf += data
        *whole, self.buf = self.buf.split(b"\n")
        for raw in whole:
            m = LINE.fullmatch(raw.decode())
            assert m, raw
            self.lines.append((m[1], m[2], m[3], m[4] or ""))
        return self.lines

    def wait(self, domain: str, kind: str, detail: str = "", timeout: float = 10) -> None:
        wait_for(lambda: any(d == domain and k == kind and detail in x
                             for _, d, k, x in self.poll()),
                 timeout=timeout, what=f"event {domain} {kind} {detail}")

    def close(self) -> None:
        os.close(self.fd)


def test_a_reader_sees_a_whole_cycle_in_order_from_when_it_opened(instance: Instance,
                                                                  tmp_path: Path) -> None:
    instance.quick("early")                       # before the reader: not seen
    r = Reader(instance)
    try:
        instance.quick("web1")
        instance.write("web1", "state", "start")
        src = tmp_path / "data"
        src.mkdir()
        instance.write("web1", "mounts", f"add {src} /data ro")
        with pytest.raises(OSError):
            instance.write("web1", "state", "start")          # EBUSY: an error event
        instance.write("web1", "state", "stop")
        instance.write("web1", "config", instance.read("web1", "config").replace(
            "stop_timeout = 5", "stop_timeout = 6"))
        os.rmdir(instance.dom("web1"))
        r.wait("web1", "undefined")
        seen = [(d, k, x) for _, d, k, x in r.poll()]
        assert all(d != "early" for d, _, _ in seen), seen
        assert [e for e in seen if e[0] == "web1"] == [
            ("web1", "defined", "id 102"),
            ("web1", "config", "replaced"),            # quick() writes its config
            ("web1", "state", "starting"),
            ("web1", "state", "running"),
            ("web1", "mount", f"add {src} /data ro"),
            ("web1", "error", "cannot start domain web1: it is already running"),
            ("web1", "state", "stopping"),
            ("web1", "state", "stopped"),
            ("web1", "config", "replaced"),
            ("web1", "undefined", ""),
        ], seen
        times = [t for t, *_ in r.lines]
        assert times == sorted(times)
    finally:
        r.close()


def test_a_crash_nobody_wrote_is_an_event_for_every_reader(instance: Instance) -> None:
    readers = [Reader(instance), Reader(instance)]
    try:
        instance.quick("c1")
        instance.write("c1", "state", "start")
        os.kill(int(instance.read("c1", "pid")), signal.SIGKILL)
        for r in readers:
            r.wait("c1", "state", "crashed")
            r.wait("c1", "error", "crashed")
    finally:
        for r in readers:
            r.close()


class Output:
    """What a reader process wrote to its stdout pipe so far (read without blocking)."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.got = b""

    def __call__(self) -> bytes:
        assert self.proc.stdout is not None
        try:
            self.got += os.read(self.proc.stdout.fileno(), 65536)
        except BlockingIOError:
            pass
        return self.got

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def test_cat_follows_and_a_blocked_reader_stalls_nothing(instance: Instance) -> None:
    # A stream reader in another process (cat blocks in read), and one reader that
    # never reads: the daemon goes on serving.
    idle = os.open(instance.mnt / "events", os.O_RDONLY)
    cat = Output(["cat", str(instance.mnt / "events")])
    try:
        time.sleep(0.2)                  # cat is reading (blocked) before the events
        instance.quick("t1")
        for _ in range(3):
            instance.write("t1", "state", "start")
            instance.write("t1", "state", "kill")
        wait_for(lambda: cat().count(b" t1 state stopped\n") == 3,
                 what="three stops through cat")
        assert cat.got.count(b" t1 state running\n") == 3
    finally:
        cat.close()
        os.close(idle)


def test_tail_f_shows_a_start_stop_cycle_in_order(instance: Instance) -> None:
    # GNU tail on a file: the last lines before its size, then what comes after, each
    # time inotify or its size says it grew; its output through a pipe, as a script's.
    instance.quick("t2")
    instance.write("t2", "state", "start")      # history before tail starts
    tail = Output(["tail", "-f", str(instance.mnt / "events")])
    try:
        wait_for(lambda: b" t2 state running\n" in tail(), what="tail's last lines")
        instance.write("t2", "state", "stop")
        instance.write("t2", "state", "start")
        instance.write("t2", "state", "kill")
        wait_for(lambda: tail().count(b" t2 state stopped\n") == 2,
                 timeout=10, what="the cycle through tail -f")
        kinds = [line.split(b" ", 1)[1] for line in tail.got.splitlines()]
        assert kinds[kinds.index(b"t2 state running"):] == [
            b"t2 state running", b"t2 state stopping", b"t2 state stopped",
            b"t2 state starting", b"t2 state running", b"t2 state stopping",
            b"t2 state stopped"], kinds
    finally:
        tail.close()
    # Its size is where the next event will start, and it grows.
    size = (instance.mnt / "events").stat().st_size
    instance.write("t2", "state", "start")
    assert (instance.mnt / "events").stat().st_size > size


def test_a_shell_read_loop_sees_every_event_once(instance: Instance) -> None:
    # bash's `read` reads ahead on a seekable file and seeks back over what it did not
    # use: the stream keeps its offsets, so no line is lost or seen twice.
    out = instance.base / "loop.out"
    loop = subprocess.Popen(["bash", "-c", f"while read -r t d k x; do echo \"$d $k $x\"; "
                                           f"done < {instance.mnt / 'events'} > {out}"])
    try:
        time.sleep(0.3)                  # the loop is reading before the events
        # Stopped meanwhile, the loop then finds many lines in one read: bash reads
        # ahead (4096 bytes) and seeks back over all but the first line.
        os.kill(loop.pid, signal.SIGSTOP)
        instance.quick("s1")
        for _ in range(3):
            instance.write("s1", "state", "start")
            instance.write("s1", "state", "kill")
        os.kill(loop.pid, signal.SIGCONT)
        wait_for(lambda: out.read_text().count("s1 state stopped\n") == 3,
                 what="three stops through the loop")
        assert out.read_text().splitlines() == ["s1 defined id 101", "s1 config replaced"] + 3 * [
            "s1 state starting", "s1 state running", "s1 state stopping",
            "s1 state stopped"], out.read_text()
    finally:
        loop.kill()
        loop.wait()


def test_a_stream_reader_that_fell_behind_is_told_and_goes_on(instance: Instance) -> None:
    instance.quick("o1")
    fd = os.open(instance.mnt / "events", os.O_RDONLY | os.O_NONBLOCK)
    try:
        # More events than the daemon keeps, while this reader reads none: failed
        # writes, each an `error` event with a sentence of its own.
        state = instance.dom("o1") / "state"
        for i in range(10_005):
            try:
                with open(state, "w") as f:
                    f.write(f"bogus{i}")
            except OSError:
                pass
        data = b""
        while True:
            try:
                chunk = os.read(fd, 1 << 20)
            except BlockingIOError:
                break
            data += chunk
        lines = data.decode().splitlines()
        assert re.fullmatch(r"\S+ - overflow \d+ events were dropped: this reader fell "
                            r"behind", lines[0]), lines[0]
        missed = int(lines[0].split()[3])
        assert missed + len(lines) - 1 == 10_005
        assert len(lines) - 1 == 10_000                     # the log keeps 10000
        assert "bogus10004" in lines[-1] and "bogus" + str(missed) in lines[1], lines[1]
    finally:
        os.close(fd)


def test_autostart_starts_exactly_the_autostart_domains(instance: Instance) -> None:
    instance.quick("auto1", extra="autostart = true\n")
    instance.quick("auto2", extra="autostart = true\n")
    instance.quick("manual")
    instance.write("auto2", "state", "start")
    pid2 = instance.read("auto2", "pid")
    instance.umount()
    instance.mount()
    # auto1 starts; auto2 ran all along and is re-attached, not started again;
    # manual stays stopped.
    wait_for(lambda: instance.read("auto1", "state") == "running\n", what="auto1 started")
    assert instance.read("auto2", "state") == "running\n"
    assert instance.read("auto2", "pid") == pid2
    time.sleep(0.3)
    assert instance.read("manual", "state") == "stopped\n"
    assert instance.read("auto1", "error") == ""


def test_poll_on_the_domain_events_file_wakes_on_start_and_stop(instance: Instance) -> None:
    import select
    instance.quick("p1")
    fd = os.open(instance.dom("p1") / "events", os.O_RDONLY)
    try:
        def values() -> dict[str, str]:
            os.lseek(fd, 0, os.SEEK_SET)
            return dict(line.split(" ", 1) for line in os.read(fd, 4096).decode().splitlines())

        assert values() == {"state": "stopped", "populated": "0", "vnc_restarts": "0",
                            "error": "0"}
        p = select.poll()
        p.register(fd, select.POLLPRI)
        assert p.poll(200) == [], "woke with nothing changed"
        instance.write("p1", "state", "start")
        assert p.poll(5000) and values()["state"] == "running"
        assert values()["populated"] == "1"
        # Re-armed by the read: quiet again until the next change.
        assert p.poll(200) == []
        # A change made in another thread while this one sleeps in poll wakes it.
        import threading
        later = threading.Timer(0.3, lambda: instance.write("p1", "state", "stop"))
        later.start()
        started = time.monotonic()
        assert p.poll(5000), "poll did not wake on the stop"
        later.join()
        assert time.monotonic() - started < 4
        wait_for(lambda: values()["state"] == "stopped", what="stopped shown")
    finally:
        os.close(fd)


def _inotifywait(path: Path, events: str = "modify,close_write") -> subprocess.Popen[str]:
    proc = subprocess.Popen(["inotifywait", "-m", "-e", events, "--format", "%e %f",
                             str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stderr is not None
    # It says when its watches are set: only changes after that can be seen.
    while "Watches established" not in proc.stderr.readline():
        pass
    return proc


def _seen(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    got = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got += os.read(proc.stdout.fileno(), 65536).decode()
        except BlockingIOError:
            pass
        if "MODIFY" in got and "CLOSE_WRITE" in got:
            break
        time.sleep(0.01)
    return got


def test_inotify_sees_a_crash_nobody_wrote_as_a_modify_on_state(instance: Instance) -> None:
    instance.quick("n1")
    instance.write("n1", "state", "start")
    watch = _inotifywait(instance.dom("n1") / "state")
    try:
        os.kill(int(instance.read("n1", "pid")), signal.SIGKILL)
        # The start's own MODIFY may still come in after the watch was set: wait for
        # one after which the file reads `crashed`.
        assert watch.stdout is not None
        os.set_blocking(watch.stdout.fileno(), False)
        seen, crashed = "", False
        deadline = time.monotonic() + 5
        while not crashed and time.monotonic() < deadline:
            try:
                got = os.read(watch.stdout.fileno(), 65536).decode()
            except BlockingIOError:
                got = ""
            seen += got
            if "MODIFY" in got:
                crashed = instance.read("n1", "state") == "crashed\n"
            time.sleep(0.01)
        assert crashed and "CLOSE_WRITE" in seen, seen
    finally:
        watch.kill()
        watch.wait()
    # The daemon's own writes are no commands: no error, no event of theirs.
    assert instance.read("n1", "error").startswith("domain n1 crashed")


def test_inotify_on_read_only_files_and_no_echo(instance: Instance) -> None:
    instance.quick("n2")
    r = Reader(instance)
    watch = _inotifywait(instance.dom("n2") / "pid")
    try:
        instance.write("n2", "state", "start")
        seen = _seen(watch, 5)
        assert "MODIFY" in seen, seen
        time.sleep(0.3)
        mine = [(k, x) for _, d, k, x in r.poll() if d == "n2"]
        assert mine == [("state", "starting"), ("state", "running")], mine
        assert instance.read("n2", "error") == ""
    finally:
        watch.kill()
        watch.wait()
        r.close()
    # The stop empties pid: the toucher truncates an empty file rather than write a
    # byte that would make the kernel think it has one.
    watch = _inotifywait(instance.dom("n2") / "pid")
    try:
        instance.write("n2", "state", "kill")
        seen = _seen(watch, 5)
        assert "MODIFY" in seen and "CLOSE_WRITE" in seen, seen
        time.sleep(0.2)
        fd = os.open(instance.dom("n2") / "pid", os.O_RDONLY)
        try:
            assert os.fstat(fd).st_size == 0
            assert os.read(fd, 4096) == b""
        finally:
            os.close(fd)
    finally:
        watch.kill()
        watch.wait()


def _toucher(instance: Instance) -> int | None:
    daemon = instance.daemon_pid()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat_fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if int(stat_fields[1]) == daemon and b"-S" in cmdline and b"-c" in cmdline:
                return int(entry.name)
    return None


def test_a_toucher_that_died_is_replaced(instance: Instance) -> None:
    instance.quick("n3")
    first = _toucher(instance)
    assert first is not None
    os.kill(first, signal.SIGKILL)
    # The daemon finds it gone when it next has files to touch (the start's are lost).
    instance.write("n3", "state", "start")
    wait_for(lambda: _toucher(instance) not in (None, first), what="a new toucher")
    watch = _inotifywait(instance.dom("n3") / "state")
    try:
        os.kill(int(instance.read("n3", "pid")), signal.SIGKILL)   # a change nobody wrote
        seen = _seen(watch, 5)
        assert "MODIFY" in seen and "CLOSE_WRITE" in seen, seen
    finally:
        watch.kill()
        watch.wait()
    assert instance.read("n3", "state") == "crashed\n"


def test_inotify_sees_a_refused_migration_in_migrate_target(instance: Instance) -> None:
    # A hook refuses the move before the controller hears of it: only the daemon's
    # record of the refusal changes the file (a failed write() is no modification).
    instance.quick("m1")
    instance.write("m1", "state", "start")
    instance.hooks.mkdir()
    refuse = instance.hooks / "10-refuse"
    refuse.write_text("#!/bin/sh\necho not today\nexit 1\n")
    refuse.chmod(0o755)
    watch = _inotifywait(instance.dom("m1") / "migrate_target", "modify")
    try:
        # Without O_TRUNC: a truncation would raise IN_MODIFY by itself.
        fd = os.open(instance.dom("m1") / "migrate_target", os.O_WRONLY)
        try:
            with pytest.raises(PermissionError):
                os.write(fd, b"check nosuchhost.invalid\n")
        finally:
            os.close(fd)
        assert "status refused" in instance.read("m1", "migrate_target")
        seen = _seen(watch, 5)
        assert "MODIFY" in seen, seen
    finally:
        watch.kill()
        watch.wait()

"""A private vzfs instance for the suite: mounted in a temporary dir, driven through its files, torn down whole."""

import errno
import os
import signal
import subprocess
import sys
import time

from vzfs.controller import paths

from . import host

UMOUNT_TIMEOUT = 30.0


class BenchError(Exception):
    """Something the suite needs did not work: a real error, which makes the run fail."""


def timed_write(path: str, data: bytes) -> tuple[int, OSError | None]:
    """Open, write, close *path* as `echo DATA > PATH` does (O_WRONLY|O_TRUNC, one write).

    Returns the nanoseconds it took and the error of the write, if it failed.
    """
    error = None
    t0 = time.perf_counter_ns()
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, data)
    except OSError as exc:
        error = exc
    finally:
        os.close(fd)
    return time.perf_counter_ns() - t0, error


class Instance:
    """One vzfs daemon serving `ROOT/mnt` from the state dir `ROOT/state`."""

    def __init__(self, root: str, env: dict[str, str] | None = None) -> None:
        self.state_dir = os.path.join(root, "state")
        # The daemon's environment beyond the suite's own (e.g. VZFS_SSH for migrations).
        self.env = dict(env or {})
        self.mountpoint = os.path.join(root, "mnt")
        # Its own hooks directory, empty unless a measurement puts a hook there: the
        # host's /etc/vzfs/hooks.d would change what is measured.
        self.hooks_dir = os.path.join(root, "hooks")
        self.daemon_pid: int | None = None
        self.names: list[str] = []
        # The instances' common cgroup parent in each hierarchy that lacked it
        # before this one started: removed again at the end if left empty.
        self.new_parents: list[str] = []

    def _vzfs(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        # `python -m vzfs` with this interpreter, so the checkout's vzfs is the one measured.
        return subprocess.run([sys.executable, "-P", "-m", "vzfs", *args], capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                              env={**os.environ, **self.env})

    def mount(self) -> None:
        os.makedirs(self.mountpoint, exist_ok=True)
        parent = os.path.dirname(self.cgroup_relpath())
        self.new_parents = [os.path.join(point, parent) for point in host.cgroup_mounts()
                            if not os.path.isdir(os.path.join(point, parent))]
        os.makedirs(self.hooks_dir, exist_ok=True)
        done = self._vzfs("mount", "--state-dir", self.state_dir, "--hooks-dir", self.hooks_dir,
                          self.mountpoint, timeout=60)
        if done.returncode != 0:
            raise BenchError(f"vzfs mount failed: {done.stderr.strip() or done.returncode}")
        for line in self.read_file("version").splitlines():
            key, _, value = line.partition(" ")
            if key == "daemon_pid":
                self.daemon_pid = int(value)

    # -- files ------------------------------------------------------------------
    def path(self, name: str, file: str) -> str:
        return os.path.join(self.mountpoint, "domains", name, file)

    def read_file(self, rel: str) -> str:
        with open(os.path.join(self.mountpoint, rel)) as f:
            return f.read()

    def read(self, name: str, file: str) -> str:
        with open(self.path(name, file)) as f:
            return f.read().strip()

    def define(self, name: str, config: str) -> None:
        os.mkdir(os.path.join(self.mountpoint, "domains", name))
        self.names.append(name)
        with open(self.path(name, "config"), "w") as f:
            f.write(config)

    def define_filled(self, name: str, config: str) -> None:
        """Define *name* and have its rootfs filled from the template by one start and
        kill, not timed: the first start of a domain does that one-off work."""
        self.define(name, config)
        self.start(name)
        self.kill(name)

    def rootfs(self, name: str) -> str:
        return paths.default_rootfs(self.state_dir, int(self.read(name, "id")))

    def cgroup_relpath(self) -> str:
        """The instance's cgroup subtree (every domain's cgroup lives under it)."""
        return os.path.dirname(paths.cgroup_relpath(self.state_dir, 0))

    def error_of(self, name: str) -> str:
        try:
            return self.read(name, "error")
        except OSError as exc:
            return f"(error unreadable: {exc})"

    # -- verbs -------------------------------------------------------------------
    def start(self, name: str) -> int:
        """Start *name*; return the nanoseconds `echo start > state` took."""
        took, error = timed_write(self.path(name, "state"), b"start\n")
        if error is not None:
            raise BenchError(f"start of domain {name} failed: {error.strerror}: "
                             f"{self.error_of(name)}") from error
        state = self.read(name, "state")
        if state != "running" or not self.read(name, "pid"):
            raise BenchError(f"domain {name} is {state!r} right after its start returned")
        return took

    def kill(self, name: str) -> tuple[int, str | None]:
        """Kill *name*; return the nanoseconds `echo kill > state` took, and the write's
        error if it failed although the domain did stop (the write still returned only
        once the domain was stopped, so the time stands; the caller reports the error)."""
        took, error = timed_write(self.path(name, "state"), b"kill\n")
        failure = None if error is None else f"{error.strerror}: {self.error_of(name)}"
        state = self.read(name, "state")
        if state != "stopped":
            raise BenchError(f"domain {name} is {state!r} after kill"
                             + (f" (the write failed: {failure})" if failure else ""))
        return took, failure

    # -- teardown -------------------------------------------------------------------
    def close(self) -> list[str]:
        """Kill every domain, unmount, remove the instance's cgroups; return what went wrong."""
        problems: list[str] = []
        if host.is_mounted(self.mountpoint):
            for name in self.names:
                try:
                    if self.read(name, "state") not in ("stopped", "crashed"):
                        _, error = timed_write(self.path(name, "state"), b"kill\n")
                        if error is not None and self.read(name, "state") != "stopped":
                            problems.append(f"kill of domain {name}: {error.strerror}: "
                                            f"{self.error_of(name)}")
                except OSError as exc:
                    if exc.errno != errno.ENOENT:
                        problems.append(f"kill of domain {name}: {exc}")
            try:
                done = self._vzfs("umount", self.mountpoint, timeout=UMOUNT_TIMEOUT)
                if done.returncode != 0:
                    problems.append(f"vzfs umount: {done.stderr.strip()}")
            except subprocess.TimeoutExpired:
                problems.append("vzfs umount did not return")
        self._stop_daemon(problems)
        host.detach_dead_mount(self.mountpoint)     # the daemon is gone, its mount stayed
        # Containers whose kill failed die with their cgroup; their controllers
        # then see init exit and end by themselves.
        left = host.remove_cgroups(self.cgroup_relpath())
        if left:
            problems.append(f"cgroups left behind: {', '.join(left)}")
        for path in self.new_parents:
            try:
                os.rmdir(path)
            except OSError:
                pass         # not empty: another instance uses it now, so it stays
        return problems

    def _stop_daemon(self, problems: list[str]) -> None:
        pid = self.daemon_pid
        if pid is None:
            return
        deadline = time.monotonic() + 10
        sig = signal.SIGTERM
        while _is_vzfs_process(pid):
            if time.monotonic() > deadline:
                if sig == signal.SIGKILL:
                    problems.append(f"the daemon (pid {pid}) would not die")
                    return
                sig, deadline = signal.SIGKILL, time.monotonic() + 5
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            time.sleep(0.05)


def _is_vzfs_process(pid: int) -> bool:
    """True while *pid* is still a vzfs daemon (not a pid the kernel reused)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
        with open(f"/proc/{pid}/stat") as f:
            zombie = f.read().rpartition(")")[2].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False
    return b"vzfs" in cmdline and not zombie

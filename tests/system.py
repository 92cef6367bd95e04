"""Helpers for system tests: real vzfs instances on real FUSE mounts, as root."""

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path


VZFS = [sys.executable, "-m", "vzfs"]

# An init that prints a line, stops cleanly on the stop signal and otherwise
# sleeps: pid 1 ignores signals it has no handler for, so it traps SIGPWR.
QUICK_INIT = ["/bin/sh", "-c", "echo init-up; trap 'exit 0' PWR TERM; sleep 100000 & wait"]


def system_ready() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    if not os.path.exists("/dev/fuse"):
        return "needs /dev/fuse"
    if not shutil.which("busybox") and not os.path.exists("/bin/busybox"):
        return "needs busybox-static"
    return None


def sh(cmd: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    # bash, not dash: dash's echo and printf report every write error as
    # "I/O error", hiding the errno the tests check.
    return subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, check=check,
                          timeout=60)


def wait_for(cond, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class Instance:
    """One vzfs daemon with its own state dir and mountpoint."""

    def __init__(self, base: Path, env: dict[str, str] | None = None) -> None:
        self.base = base
        self.mnt = base / "mnt"
        self.state = base / "state"
        self.env = env or {}          # the daemon's environment beyond ours (VZFS_SSH…)
        self.hooks = base / "hooks"   # its hooks directory: none unless a test puts some
        self.mount_args: list[str] = []
        self.mnt.mkdir(parents=True, exist_ok=True)

    def mount(self) -> None:
        subprocess.run(VZFS + ["mount", "--state-dir", str(self.state), "--hooks-dir",
                               str(self.hooks), *self.mount_args, str(self.mnt)],
                       check=True, timeout=60, env={**os.environ, **self.env})

    def umount(self) -> None:
        subprocess.run(VZFS + ["umount", str(self.mnt)], check=True, timeout=60)

    def daemon_pid(self) -> int:
        for line in (self.mnt / "version").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "daemon_pid":
                return int(value)
        raise AssertionError("no daemon_pid in version")

    def kill_daemon(self) -> None:
        pid = self.daemon_pid()
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not Path(f"/proc/{pid}").exists() or
                 "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2], what="daemon death")
        subprocess.run(["umount", "-l", str(self.mnt)], capture_output=True)

    def kill_daemon_if_any(self) -> None:
        """SIGKILL the daemon if one still serves, and let a dead one's mount go."""
        try:
            pid = self.daemon_pid()
        except OSError:                  # ENOTCONN: it is dead already
            pid = 0
        if pid:
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: not Path(f"/proc/{pid}").exists() or
                     "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2], what="daemon death")
        subprocess.run(["umount", "-l", str(self.mnt)], capture_output=True)

    def dom(self, name: str) -> Path:
        return self.mnt / "domains" / name

    def define(self, name: str, config: str | None = None) -> Path:
        d = self.dom(name)
        d.mkdir()
        if config is not None:
            (d / "config").write_text(config)
        return d

    def quick(self, name: str, extra: str = "") -> Path:
        """A domain with the quick init (stops in milliseconds)."""
        init = ", ".join(f'"{a}"' for a in QUICK_INIT).replace("'", "'")
        return self.define(name, f"init = [{init}]\nstop_timeout = 5\n{extra}")

    def write(self, name: str, file: str, text: str) -> None:
        with open(self.dom(name) / file, "w") as f:
            f.write(text)

    def read(self, name: str, file: str) -> str:
        return (self.dom(name) / file).read_text()

    def cleanup(self) -> None:
        if (self.mnt / "version").exists():
            for d in sorted((self.mnt / "domains").iterdir()):
                try:
                    if (d / "state").read_text().strip() not in ("stopped", "crashed"):
                        (d / "state").write_text("kill")
                except OSError:
                    pass
            try:
                self.umount()
            except subprocess.SubprocessError:
                subprocess.run(["umount", "-l", str(self.mnt)], capture_output=True)
        _kill_instance_cgroups(self.state)


def _kill_instance_cgroups(state: Path) -> None:
    from vzfs.controller.paths import instance_tag
    from vzfs.kernel import cgroups
    layout = cgroups.detect()
    tag = instance_tag(str(state))
    roots = list(layout.v1.values()) + ([layout.unified] if layout.unified else [])
    for root in roots:
        base = Path(root) / "vzfs" / tag
        if not base.is_dir():
            continue
        for leaf in base.iterdir():
            if leaf.is_dir():
                for pid in (leaf / "cgroup.procs").read_text().split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
    for root in roots:
        base = Path(root) / "vzfs" / tag
        if base.is_dir():
            for leaf in base.iterdir():
                if leaf.is_dir():
                    for _ in range(100):
                        try:
                            leaf.rmdir()
                            break
                        except OSError as exc:
                            if exc.errno != errno.EBUSY:
                                break
                            time.sleep(0.02)
            try:
                base.rmdir()
            except OSError:
                pass

"""The crun peer: an OCI bundle on a domain's rootfs, and crun driven by a worker in its own mount namespace.

crun 1.8 refuses a hybrid cgroup layout ("cgroups in hybrid mode not supported,
drop all controllers from cgroupv2", FACTS.md). On a hybrid host the worker
(`bench.crun_worker`) unshares a private mount namespace and detaches the empty
cgroup2 mount there, so crun uses the v1 controllers as on a v1 host, and the
host's mounts stay as they are. With `--crun-cgroups disabled` crun runs with
`--cgroup-manager=disabled` (no cgroup at all: faster, less comparable), in
the same private mount namespace on a hybrid host, as crun checks the layout
even then.
"""

import json
import os
import shutil
import subprocess
import sys
from typing import Any

from vzfs.kernel import cgroups

from . import host
from .instance import BenchError

MEMORY_LIMIT = 256 << 20
PIDS_LIMIT = 512


def oci_config(rootfs: str, args: list[str], hostname: str, cgroups_path: str,
               userns_base: int | None = None) -> dict[str, Any]:
    """An OCI runtime config (runtime-spec config.md) matching what vzfs gives a domain:
    pid/mount/uts/ipc/net/cgroup namespaces, proc, a tmpfs /dev with devpts, a
    read-only sysfs, the same limits as the suite's domains; with *userns_base*, a
    user namespace too (linux.uidMappings: 65536 ids from that host id)."""
    cfg = _oci_config(rootfs, args, hostname, cgroups_path)
    if userns_base is not None:
        mapping = [{"containerID": 0, "hostID": userns_base, "size": 65536}]
        cfg["linux"]["namespaces"].append({"type": "user"})
        cfg["linux"]["uidMappings"] = mapping
        cfg["linux"]["gidMappings"] = mapping
    return cfg


def _oci_config(rootfs: str, args: list[str], hostname: str, cgroups_path: str) -> dict[str, Any]:
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "TERM=linux", "HOME=/root"],
            "cwd": "/",
        },
        "root": {"path": rootfs, "readonly": False},
        "hostname": hostname,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
        ],
        "linux": {
            "cgroupsPath": cgroups_path,
            "resources": {"memory": {"limit": MEMORY_LIMIT}, "pids": {"limit": PIDS_LIMIT}},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount",
                                                  "cgroup")],
        },
    }


class Crun:
    def __init__(self, root: str, cgroup_mode: str) -> None:
        self.root = root
        self.cgroup_mode = cgroup_mode
        self.cgroup_parent = f"vzfs-bench-{os.getpid()}-crun"
        self.names: set[str] = set()
        self.worker: subprocess.Popen[str] | None = None
        self.name = "crun"

    def open(self) -> None:
        binary = shutil.which("crun")
        if binary is None:
            raise BenchError("crun is not installed (apt install crun)")
        version = subprocess.run([binary, "--version"], capture_output=True, text=True,
                                 check=True).stdout.split("\n", 1)[0]
        layout = cgroups.detect()
        # crun checks the layout even with --cgroup-manager=disabled, so the
        # cgroup2 mount is hidden from it either way on a hybrid host.
        hide = layout.unified if layout.mode == "hybrid" else None
        if self.cgroup_mode == "disabled":
            how = "--cgroup-manager=disabled: no cgroup"
        elif hide:
            how = "cgroupfs v1; cgroup2 mount hidden in a private mount ns"
        else:
            how = f"cgroupfs {layout.mode}"
        self.name = f"{version.replace(' version', '')} ({how})"
        os.makedirs(os.path.join(self.root, "state"), exist_ok=True)
        argv = [sys.executable, "-P", "-m", "bench.crun_worker", "--crun", binary,
                "--state", os.path.join(self.root, "state"), "--cgroup-manager", self.cgroup_mode]
        if hide:
            argv += ["--hide", hide]
        # A session of its own: Ctrl-C at the terminal must not kill the worker
        # before it has deleted its containers; closing its stdin ends it.
        self.worker = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       text=True, bufsize=1, start_new_session=True)
        ready = self._read()
        if ready != "ready":
            raise BenchError(f"the crun worker did not start: {ready}")

    def bundle(self, name: str, rootfs: str, args: list[str],
               userns_base: int | None = None) -> None:
        path = os.path.join(self.root, "bundles", name)
        os.makedirs(path, exist_ok=True)
        cfg = oci_config(rootfs, args, name, f"/{self.cgroup_parent}/{name}", userns_base)
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump(cfg, f, indent=1)

    def _read(self) -> str:
        assert self.worker is not None and self.worker.stdout is not None
        line = self.worker.stdout.readline()
        return line.strip() if line else "(the worker exited)"

    def _ask(self, verb: str, name: str) -> int:
        assert self.worker is not None and self.worker.stdin is not None
        self.worker.stdin.write(f"{verb} {name}\n")
        self.worker.stdin.flush()
        answer = self._read()
        status, _, rest = answer.partition(" ")
        if status != "ok":
            raise BenchError(f"crun {verb} {name}: {rest or answer}")
        return int(rest)

    def run(self, name: str) -> int:
        """`crun run -d`: nanoseconds until it returned with the container's process running."""
        self.names.add(name)
        return self._ask("run", name)

    def delete(self, name: str) -> int:
        """`crun delete -f`: nanoseconds until it returned with the container killed and gone."""
        took = self._ask("delete", name)
        self.names.discard(name)
        return took

    def close(self) -> list[str]:
        problems = []
        if self.worker is not None:
            for name in sorted(self.names):
                try:
                    self.delete(name)
                except (BenchError, OSError) as exc:
                    problems.append(str(exc))
            if self.worker.stdin is not None:
                self.worker.stdin.close()
            try:
                self.worker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.worker.kill()
                self.worker.wait()
                problems.append("the crun worker had to be killed")
        left = host.remove_cgroups(self.cgroup_parent)
        if left:
            problems.append(f"crun cgroups left behind: {', '.join(left)}")
        return problems

"""Suspend and resume (vzfs running CRIU) beside raw CRIU run by hand on the same container.

For each size (10, 100, 500 MB; `--quick`: 10 MB) one busybox domain runs a static
program that holds that much anonymous memory, every page written with non-zero
data. Rounds alternate which side goes first:

* vzfs: `echo suspend > state`, then `echo resume > state`; the figures are the
  domain's `checkpoint` file (CRIU's own frozen time, the wall time of the criu
  process, the controller's restore from start to init running) and the two
  writes' latency as the user sees it.
* raw CRIU: the command vzfs runs (`checkpoint.dump_args`, the same keys for the
  console and /dev/tty, the same root), run by hand on the running domain, which
  CRIU then ends — vzfs records the domain as crashed; then `checkpoint.restore_args`
  from a process in a cgroup of its own (made like a domain's), with a fresh pty for
  the console; the restored tree is killed and reaped, and `echo start` boots the
  domain again for the next round (untimed).
"""

import os
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Callable

from vzfs.kernel import criu as criumod
from vzfs.controller import checkpoint, paths
from vzfs.kernel import cgroups

from .context import Context
from .instance import BenchError, Instance, timed_write
from .registry import CHECKPOINT_SIZES_MB, Values, checkpoint_keys, measurement
from .stats import alternate, median

PRIVILEGED = "privileged = true\n"   # the raw CRIU peer restores no user namespace's idmapped root

MIB = 1 << 20
NS_PER_MS = 1e6
SETTLE_S = 0.2            # untimed, before each dump and between a dump and its restore
BOOT_TIMEOUT = 30.0
# The program that holds the memory: N MiB from malloc (an anonymous mapping), every
# byte written with xorshift output (never zero), then a line on stdout, then pause().
HOG_C = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: hog MIB TOKEN\n"); return 2; }
    size_t words = ((size_t)strtoul(argv[1], NULL, 10) << 20) / sizeof(uint64_t);
    uint64_t *p = malloc(words * sizeof(uint64_t));
    if (!p) { perror("hog: malloc"); return 1; }
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < words; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        p[i] = x;
    }
    printf("hog-ready-%s\n", argv[2]);
    fflush(stdout);
    for (;;) pause();
}
"""


def build_static(workdir: str, name: str, code: str, what: str) -> str:
    """Compile *code* as the static program WORKDIR/NAME (the busybox root has no libc)."""
    source = os.path.join(workdir, f"{name}.c")
    binary = os.path.join(workdir, name)
    with open(source, "w") as f:
        f.write(code)
    try:
        done = subprocess.run(["gcc", "-O2", "-static", "-o", binary, source],
                              capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise BenchError("gcc is not installed (apt install gcc libc6-dev)") from None
    if done.returncode != 0:
        raise BenchError(f"gcc could not build {what}: {done.stderr.strip()}")
    return binary


def build_hog(workdir: str) -> str:
    """Compile the memory holder."""
    return build_static(workdir, "hog", HOG_C, "the memory holder")


def locate_criu(ctx: Context) -> str:
    """The CRIU vzfs would run, named in the run's meta for the peer column."""
    try:
        criu = criumod.locate()
    except OSError as exc:
        raise BenchError(f"no CRIU to measure with: {exc.strerror or exc}") from exc
    ctx.meta["criu_name"] = f"CRIU {criu_version(criu)}"
    return criu


def criu_version(criu: str) -> str:
    try:
        done = subprocess.run([criu, "--version"], capture_output=True, text=True, timeout=30)
    except OSError as exc:
        raise BenchError(f"cannot run CRIU {criu}: {exc.strerror or exc}") from exc
    for line in done.stdout.splitlines():
        if line.startswith("Version:"):
            return line.split(":", 1)[1].strip()
    raise BenchError(f"{criu} --version printed no version (exit status {done.returncode})")


def _run_criu(args: list[str], cwd: str, pass_fds: tuple[int, ...] = (),
              preexec: Callable[[], None] | None = None) -> tuple[int, int]:
    """Run CRIU as vzfs's engine does; return (exit status, wall nanoseconds)."""
    t0 = time.perf_counter_ns()
    done = subprocess.run(args, cwd=cwd, pass_fds=pass_fds, preexec_fn=preexec,
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, check=False)
    return done.returncode, time.perf_counter_ns() - t0


def _figures(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value:
            out[key] = float(value)
    return out


class Subject:
    """One domain holding *size* MiB, driven through vzfs's files and by hand."""

    def __init__(self, ctx: Context, inst: Instance, criu: str, hog: str, size: int,
                 name: str = "") -> None:
        self.inst, self.criu, self.hog, self.size = inst, criu, hog, size
        self.name = name or f"ckpt{size}"
        self.boots = 0
        self.raw_dir = os.path.join(ctx.root, "criu-raw", self.name)
        self.layout = cgroups.detect()
        self.raw_cgroup = cgroups.Cgroup(self.layout, f"{inst.cgroup_relpath()}/raw-{self.name}")

    # -- the domain -------------------------------------------------------------------
    def boot(self) -> None:
        """Start the domain (untimed), put the memory holder in it, wait until it holds."""
        self.inst.start(self.name)
        self.install(self.inst.rootfs(self.name))
        self.boots += 1
        token = f"b{self.boots}"
        console = self.inst.path(self.name, "console")
        # Typed into the shell on the console: a process `vzfs enter` starts holds fds
        # from outside the container, which CRIU refuses. Input typed before the shell
        # reads is kept by the pty; the marker the program prints is not in the typed line.
        with open(console, "w") as f:
            f.write(self.command(token))
        self._wait(lambda: f"hog-ready-{token}" in self.inst.read(self.name, "screen"),
                   "the memory holder to fill its memory")
        self.check_memory(self.domain_cgroup(), "after the boot")

    def install(self, rootfs: str) -> None:
        """Put the programs the domain runs into its root (before each boot)."""
        shutil.copy(self.hog, os.path.join(rootfs, "hog"))

    def command(self, token: str) -> str:
        """The line typed into the domain's shell to start them."""
        return f"/hog {self.size} {token} &\n"

    def domain_cgroup(self) -> cgroups.Cgroup:
        return cgroups.Cgroup(self.layout, paths.cgroup_relpath(
            self.inst.state_dir, int(self.inst.read(self.name, "id"))))

    def check_memory(self, cg: cgroups.Cgroup, when: str) -> None:
        """The memory holder in *cg* is resident with all its pages (VmRSS)."""
        for pid in cg.procs():
            try:
                with open(f"/proc/{pid}/status") as f:
                    fields = dict(line.split(":", 1) for line in f if ":" in line)
            except (FileNotFoundError, ProcessLookupError):
                continue
            if fields.get("Name", "").strip() == "hog":
                rss = int(fields["VmRSS"].split()[0]) * 1024
                if rss < self.size * MIB:
                    raise BenchError(f"the memory holder of {self.name} has {rss / MIB:.1f} "
                                     f"MiB resident {when}, expected at least {self.size}")
                return
        raise BenchError(f"no memory holder runs in {self.name} {when}")

    def _wait(self, cond: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + BOOT_TIMEOUT
        while not cond():
            if time.monotonic() > deadline:
                raise BenchError(f"domain {self.name}: timed out waiting for {what}")
            time.sleep(0.02)

    def _state(self) -> str:
        return self.inst.read(self.name, "state")

    # -- vzfs ---------------------------------------------------------------------------
    def vzfs_cycle(self) -> dict[str, float]:
        state = self.inst.path(self.name, "state")
        suspend_ns, error = timed_write(state, b"suspend\n")
        if error is not None or self._state() != "suspended":
            raise BenchError(f"suspend of {self.name} failed ({self._state()}): "
                             f"{self.inst.error_of(self.name)}")
        time.sleep(SETTLE_S)           # untimed, as between the raw dump and restore
        resume_ns, error = timed_write(state, b"resume\n")
        if error is not None or self._state() != "running":
            raise BenchError(f"resume of {self.name} failed ({self._state()}): "
                             f"{self.inst.error_of(self.name)}")
        figures = _figures(self.inst.read(self.name, "checkpoint"))
        missing = [k for k in ("frozen_ms", "dump_ms", "suspend_ms", "restore_ms",
                               "criu_restore_ms") if k not in figures]
        if missing:
            raise BenchError(f"the checkpoint file of {self.name} lacks {', '.join(missing)}")
        self.check_memory(self.domain_cgroup(), "after vzfs's resume")
        figures["suspend_write_ms"] = suspend_ns / NS_PER_MS
        figures["resume_write_ms"] = resume_ns / NS_PER_MS
        return figures

    # -- raw CRIU -----------------------------------------------------------------------
    def _meta(self, pid: int) -> checkpoint.Meta:
        """The Meta `Controller._suspend` builds, from outside: the console is the pty
        slave init has as fd 0, /dev/tty the node in the container's /dev."""
        console = os.stat(f"/proc/{pid}/fd/0")
        if not stat.S_ISCHR(console.st_mode):
            raise BenchError(f"init of {self.name} has no terminal as fd 0")
        if self.inst.read(self.name, "mounts"):
            raise BenchError(f"domain {self.name} has mounts; the raw dump declares none")
        return checkpoint.Meta(
            console_key=checkpoint.tty_key(console),
            devtty_key=checkpoint.tty_key(os.stat(f"/proc/{pid}/root/dev/tty")),
            mounts=(), columns=80, lines=25, vnc_prefer={}, dumped_at=time.time(),
            host_binds=checkpoint.host_binds(pid))

    def raw_cycle(self) -> dict[str, float]:
        pid = int(self.inst.read(self.name, "pid"))
        rootfs = self.inst.rootfs(self.name)
        meta = self._meta(pid)
        images = os.path.join(self.raw_dir, "images")
        shutil.rmtree(self.raw_dir, ignore_errors=True)
        os.makedirs(images, 0o700)
        log = os.path.join(self.raw_dir, "dump.log")
        code, dump_ns = _run_criu(
            checkpoint.dump_args(self.criu, pid, images, log, rootfs, None, meta), images)
        if code != 0:
            raise BenchError(f"raw criu dump of {self.name} failed: {checkpoint.reasons(log)}")
        dumped = checkpoint.read_stats(os.path.join(images, "stats-dump"))
        # CRIU ended the tree: the controller reports it crashed.
        self._wait(lambda: self._state() == "crashed", "vzfs to see the dumped tree gone")
        time.sleep(SETTLE_S)           # untimed, as between vzfs's suspend and resume
        try:
            restore_ns, restored = self._raw_restore(images, rootfs, meta)
        finally:
            shutil.rmtree(self.raw_dir, ignore_errors=True)
        self.boot()
        return {"dump_ms": dump_ns / NS_PER_MS,
                "frozen_ms": dumped.get("frozen_time", 0) / 1000,
                "criu_restore_ms": restore_ns / NS_PER_MS,
                "restore_time_ms": restored.get("restore_time", 0) / 1000}

    def _raw_restore(self, images: str, rootfs: str,
                     meta: checkpoint.Meta) -> tuple[int, dict[str, int]]:
        """Restore the images by hand as vzfs would, check the memory is back, end the tree."""
        cg = self.raw_cgroup
        cg.create()
        cg.set_limits(None, None, None)
        master, slave = os.openpty()
        fds = (os.dup(slave), os.dup(slave))
        log = os.path.join(self.raw_dir, "restore.log")
        pidfile = os.path.join(self.raw_dir, "restored.pid")
        restored_pid = 0
        try:
            args = checkpoint.restore_args(self.criu, images, log, rootfs, pidfile, meta,
                                           fds[0], fds[1], os.ttyname(slave))
            code, restore_ns = _run_criu(args, images, pass_fds=fds, preexec=cg.join_self)
            for fd in fds:
                os.close(fd)
            fds = ()
            if code != 0:
                raise BenchError(f"raw criu restore of {self.name} failed: "
                                 f"{checkpoint.reasons(log)}")
            with open(pidfile) as f:
                restored_pid = int(f.read().strip())
            self.check_memory(cg, "after the raw restore")
            return restore_ns, checkpoint.read_stats(os.path.join(images, "stats-restore"))
        finally:
            for fd in fds:
                os.close(fd)
            # --restore-sibling made the restored init our child: end its namespace, reap it.
            if restored_pid:
                try:
                    os.kill(restored_pid, signal.SIGKILL)
                    os.waitpid(restored_pid, 0)
                except ChildProcessError:
                    pass
            cg.kill_all()
            cg.remove(timeout=10)
            os.close(master)
            os.close(slave)


# (figure, side, key of that side's cycle): every one is reported as the median
# (`FIGURE_SIZEmb`) and the minimum (`FIGURE_SIZEmb_min`) of its rounds.
FIGURES = (
    ("suspend_frozen_ms", "vzfs", "frozen_ms"),           # CRIU's frozen_time (stats-dump)
    ("raw_criu_frozen_ms", "raw", "frozen_ms"),
    ("suspend_dump_ms", "vzfs", "dump_ms"),               # wall time of the criu dump process
    ("raw_criu_dump_ms", "raw", "dump_ms"),
    ("resume_restore_ms", "vzfs", "restore_ms"),          # the controller's restore, to init running
    ("raw_criu_restore_ms", "raw", "criu_restore_ms"),    # wall time of the criu restore process
    ("suspend_write_ms", "vzfs", "suspend_write_ms"),     # `echo suspend > state`, as the user waits
    ("resume_write_ms", "vzfs", "resume_write_ms"),       # `echo resume > state`
    ("suspend_ms", "vzfs", "suspend_ms"),                 # the controller's whole suspend
    ("resume_criu_restore_ms", "vzfs", "criu_restore_ms"),  # the criu process inside vzfs's restore
    ("resume_restore_time_ms", "vzfs", "restore_time_ms"),  # CRIU's restore_time (stats-restore)
    ("raw_criu_restore_time_ms", "raw", "restore_time_ms"),
)


def cpu_stall_us() -> int | None:
    """Microseconds some task has waited for a CPU since boot (PSI, /proc/pressure/cpu)."""
    try:
        with open("/proc/pressure/cpu") as f:
            return int(f.readline().rpartition("total=")[2])
    except (OSError, ValueError):
        return None


def _measure(subject: Subject, rounds: int) -> dict[str, float]:
    inst, size = subject.inst, subject.size
    needed = 2 * size * MIB + 256 * MIB
    free = shutil.disk_usage(inst.state_dir).free
    if free < needed:
        raise BenchError(f"{size} MB needs {needed // MIB} MiB free for images in "
                         f"{inst.state_dir}; there are {free // MIB}")
    inst.define(subject.name, PRIVILEGED)            # busybox; privileged: the raw CRIU peer runs it as it was
    subject.boot()
    vz: list[dict[str, float]] = []
    raw: list[dict[str, float]] = []
    stalled, began = cpu_stall_us(), time.monotonic()
    for i in range(rounds):
        for side in alternate(i, ("vzfs", "raw")):
            os.sync()                  # untimed: no writeback left over from the last one
            time.sleep(SETTLE_S)
            if side == "vzfs":
                vz.append(subject.vzfs_cycle())
            else:
                raw.append(subject.raw_cycle())
    elapsed = time.monotonic() - began
    stalled_after = cpu_stall_us()
    inst.kill(subject.name)

    tag = f"{size}mb"
    sides = {"vzfs": vz, "raw": raw}
    out: dict[str, float] = {}
    if stalled is not None and stalled_after is not None:
        # How busy the host was meanwhile: the share of the time some task waited
        # for a CPU (other work on a shared machine moves these medians a lot).
        out[f"checkpoint_cpu_pressure_pct_{tag}"] = (stalled_after - stalled) / 1e4 / elapsed
    for key, side, figure in FIGURES:
        samples = [cycle[figure] for cycle in sides[side]]
        out[f"{key}_{tag}"] = median(samples)
        out[f"{key}_{tag}_min"] = min(samples)
    out[f"checkpoint_images_mb_{tag}"] = median([c["images_bytes"] for c in vz]) / MIB

    def overhead(mine: str, peer: str) -> float:
        return (out[f"{mine}_{tag}"] / out[f"{peer}_{tag}"] - 1) * 100

    out[f"frozen_overhead_pct_{tag}"] = overhead("suspend_frozen_ms", "raw_criu_frozen_ms")
    out[f"resume_overhead_pct_{tag}"] = overhead("resume_restore_ms", "raw_criu_restore_ms")
    out[f"resume_write_overhead_pct_{tag}"] = overhead("resume_write_ms", "raw_criu_restore_ms")
    out[f"suspend_write_overhead_pct_{tag}"] = overhead("suspend_write_ms", "raw_criu_dump_ms")
    return out


@measurement(*(key for size in CHECKPOINT_SIZES_MB for key in checkpoint_keys(size)))
def suspend_resume(ctx: Context) -> Values:
    criu = locate_criu(ctx)
    inst = ctx.instance()
    hog = build_hog(ctx.root)
    sizes = CHECKPOINT_SIZES_MB[:1] if ctx.settings.quick else CHECKPOINT_SIZES_MB
    rounds = 2 if ctx.settings.quick else 9
    out: dict[str, float] = {}
    for size in sizes:
        ctx.log(f"suspend/resume and raw CRIU, {size} MB, {rounds} rounds")
        out.update(_measure(Subject(ctx, inst, criu, hog, size), rounds))
    ctx.meta["checkpoint_rounds"] = rounds
    return out

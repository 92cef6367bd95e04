"""Control-file latency: open+read+close and a no-op write on vzfs, beside tmpfs and cgroupfs files."""

import errno
import os
import subprocess
import sys
import time
from collections.abc import Callable

from vzfs.kernel import cgroups

from . import host
from .context import Context
from .instance import BenchError
from .lifecycle import DOMAIN_CONFIG
from .registry import Values, measurement
from .stats import median, percentile

# Operations run in blocks that take turns, so a burst of host noise lands on
# every target instead of on whichever one happened to be running.
BLOCK = 250
NS_PER_US = 1e3

Op = Callable[[], None]


def read_op(path: str) -> Op:
    def op() -> None:
        fd = os.open(path, os.O_RDONLY)
        os.read(fd, 4096)
        os.close(fd)
    return op


def write_op(path: str, data: bytes, expect_errno: int | None) -> Op:
    """A write as `echo DATA > PATH` does it; *expect_errno* is the refusal it must get."""
    def op() -> None:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, data)
        except OSError as exc:
            if exc.errno != expect_errno:
                raise
        else:
            if expect_errno is not None:
                raise BenchError(f"writing {data!r} to {path} succeeded; expected "
                                 f"{errno.errorcode[expect_errno]}")
        finally:
            os.close(fd)
    return op


def interleaved(ops: dict[str, Op], iterations: int) -> dict[str, list[float]]:
    """Time each op *iterations* times, in turns of BLOCK; microseconds per op."""
    samples: dict[str, list[float]] = {key: [] for key in ops}
    for op in ops.values():
        op()          # once untimed: lookups and dentries warm for everyone
    clock = time.perf_counter_ns
    for start in range(0, iterations, BLOCK):
        n = min(BLOCK, iterations - start)
        for key, op in ops.items():
            out = samples[key]
            for _ in range(n):
                t0 = clock()
                op()
                out.append((clock() - t0) / NS_PER_US)
    return samples


def bench_cgroup(ctx: Context) -> tuple[str, str]:
    """A cgroup of the suite's own, and the writable one-value file to time in it."""
    layout = cgroups.detect()
    relpath = f"vzfs-bench-{os.getpid()}-control"
    base = layout.v1.get("pids") or layout.unified
    if base is None:
        raise BenchError("no cgroup hierarchy is mounted")
    path = os.path.join(base, relpath)
    os.makedirs(path, exist_ok=True)
    ctx.cleanups.append(lambda: host.remove_cgroups(relpath))
    for name in ("pids.max", "cgroup.max.depth"):
        if os.path.exists(os.path.join(path, name)):
            kind = "v1" if base != layout.unified else "v2"
            ctx.meta["cgroupfs_file"] = f"{kind} {name}"
            return path, name
    raise BenchError(f"{path} has neither pids.max nor cgroup.max.depth")


def tmpfs_file(ctx: Context) -> str:
    directory = host.tmpfs_dir()
    if directory is None:
        raise BenchError("no writable tmpfs mount (looked at /dev/shm, /run, /tmp)")
    path = os.path.join(directory, f"vzfs-bench-{os.getpid()}")
    with open(path, "w") as f:
        f.write("stopped\n")
    ctx.cleanups.append(lambda: os.unlink(path))
    ctx.meta["tmpfs_path"] = directory
    return path


FLOOR_READY_S = 10.0


def pyfuse3_floor_file(ctx: Context) -> str:
    """`state` of a minimal pyfuse3 + trio filesystem (bench/pyfuse3_floor.py) mounted
    in the suite's root: the library's floor under vzfs's control-file read."""
    mountpoint = os.path.join(ctx.root, "pyfuse3-floor")
    os.makedirs(mountpoint, exist_ok=True)
    server = subprocess.Popen([sys.executable, "-P", "-m", "bench.pyfuse3_floor", mountpoint],
                              stdin=subprocess.DEVNULL)

    def stop() -> None:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        host.detach_dead_mount(mountpoint)    # killed before it could unmount
    ctx.cleanups.append(stop)
    path = os.path.join(mountpoint, "state")
    deadline = time.monotonic() + FLOOR_READY_S
    while not os.path.exists(path):
        if server.poll() is not None:
            raise BenchError(f"the pyfuse3 floor filesystem exited with status {server.returncode}")
        if time.monotonic() > deadline:
            raise BenchError(f"the pyfuse3 floor filesystem did not show {path} in {FLOOR_READY_S:g} s")
        time.sleep(0.02)
    return path


@measurement("control_read_us_p50", "control_read_us_p99", "tmpfs_read_us_p50",
             "cgroupfs_read_us_p50", "pyfuse3_floor_read_us_p50", "control_write_us_p50",
             "cgroupfs_write_us_p50")
def control_files(ctx: Context) -> Values:
    inst = ctx.instance()
    name = "control"
    inst.define(name, DOMAIN_CONFIG)
    state = inst.path(name, "state")
    cg_dir, cg_name = bench_cgroup(ctx)
    cg_file = os.path.join(cg_dir, cg_name)
    with open(cg_file) as f:
        cg_value = f.read().strip().encode()
    n = ctx.settings.iterations
    reads = interleaved({"vzfs": read_op(state), "tmpfs": read_op(tmpfs_file(ctx)),
                         "cgroupfs": read_op(cg_file),
                         "pyfuse3": read_op(pyfuse3_floor_file(ctx))}, n)
    # `stop` on a stopped domain is refused with EBUSY and changes nothing; the
    # kernel's peer is writing a limit's current value back.
    writes = interleaved({"vzfs": write_op(state, b"stop\n", errno.EBUSY),
                          "cgroupfs": write_op(cg_file, cg_value + b"\n", None)}, n)
    ctx.meta["control_iterations"] = n
    return {
        "control_read_us_p50": median(reads["vzfs"]),
        "control_read_us_p99": percentile(reads["vzfs"], 99),
        "tmpfs_read_us_p50": median(reads["tmpfs"]),
        "cgroupfs_read_us_p50": median(reads["cgroupfs"]),
        "pyfuse3_floor_read_us_p50": median(reads["pyfuse3"]),
        # The peers' tails show how much of vzfs's tail is the host's noise.
        "tmpfs_read_us_p99": percentile(reads["tmpfs"], 99),
        "cgroupfs_read_us_p99": percentile(reads["cgroupfs"], 99),
        "control_write_us_p50": median(writes["vzfs"]),
        "control_write_us_p99": percentile(writes["vzfs"], 99),
        "cgroupfs_write_us_p50": median(writes["cgroupfs"]),
    }

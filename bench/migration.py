"""Online migration between two vzfs instances over a real SSH, beside rsync + raw CRIU.

Two instances of the suite's own (`ROOT/migrate/a` and `…/b`: own state dirs,
mountpoints and cgroups) stand for two hosts; both daemons get `VZFS_SSH` naming an
OpenSSH server on loopback with its own keys (`tests/sshd.py`), so the domain can go
A→B and back B→A for repeated rounds. For each size (10, 100, 500 MB; `--quick`:
10 MB) one busybox domain runs the memory holder of `bench/checkpoint.py` and a
ticker: a static program that writes its CLOCK_REALTIME, as 8 bytes, to `/ticks`
in the domain's root every millisecond. Rounds alternate which side goes first:

* vzfs: `echo vzfs-peer/OTHER/MNT > migrate_target` on the host the domain is on,
  then the wait until the other host's `state` reads `running` and the domain is
  gone from this one (the total). The downtime is the largest gap between two
  consecutive ticks that overlaps that interval: the ticker's last tick on the
  source (the tree frozen) to its first on the target (the tree restored), as a
  user inside sees it — not vzfs's own figure, which is reported beside it.
* the peer, on the same running domain: `rsync -aHAX --numeric-ids --delete` of
  its root to a fresh directory through `ssh -F CONFIG vzfs-peer` (the same
  server), then `bench/checkpoint.py`'s raw CRIU dump and restore of it (which
  ends the tree; the domain is booted again, untimed).
"""

import itertools
import os
import shutil
import struct
import subprocess
import time
from pathlib import Path

from vzfs.controller import paths
from vzfs.migrate.source import tree_bytes

from . import checkpoint
from .context import Context
from .instance import BenchError, Instance, timed_write
from .registry import CHECKPOINT_SIZES_MB, Values, measurement, migration_keys
from .stats import alternate, median

PRIVILEGED = "privileged = true\n"   # the raw CRIU peer restores no user namespace's idmapped root

NS_PER_MS = 1e6
MIGRATE_TIMEOUT = 300.0     # one migration, write to done
POLL_S = 0.01               # how often the wait for the end looks at both hosts
TICKS = "ticks"             # the ticker's file, in the domain's root
TICK = struct.Struct("<q")
BASELINE_S = 2.0            # the ticker's largest gap over this long before a migration
RSYNC_FLAGS = ("-aHAX", "--numeric-ids", "--delete")     # what vzfs's copy uses
RSYNC_TIMEOUT = 300.0
# The ticker: its CLOCK_REALTIME in nanoseconds, one 8-byte record per write
# (O_APPEND: a record is never split), then a 1 ms sleep, forever.
TICKER_C = r"""
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: ticker FILE\n"); return 2; }
    int fd = open(argv[1], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) { perror("ticker: open"); return 1; }
    const struct timespec pause = {0, 1000000};
    for (;;) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
        if (write(fd, &ns, sizeof ns) != (ssize_t)sizeof ns) { perror("ticker: write"); return 1; }
        nanosleep(&pause, NULL);
    }
}
"""


class Moving(checkpoint.Subject):
    """The checkpoint suite's domain with the memory holder, plus the ticker."""

    def __init__(self, ctx: Context, inst: Instance, criu: str, hog: str, ticker: str,
                 size: int) -> None:
        super().__init__(ctx, inst, criu, hog, size, name=f"mig{size}")
        self.ticker = ticker

    def install(self, rootfs: str) -> None:
        super().install(rootfs)
        shutil.copy(self.ticker, os.path.join(rootfs, "ticker"))
        try:
            os.unlink(os.path.join(rootfs, TICKS))      # a fresh series per boot
        except FileNotFoundError:
            pass

    def command(self, token: str) -> str:
        return f"/ticker /{TICKS} & {super().command(token)}"

    def ticks_file(self) -> str:
        return os.path.join(self.inst.rootfs(self.name), TICKS)


def read_ticks(path: str, offset: int) -> list[int]:
    with open(path, "rb") as f:
        f.seek(offset - offset % TICK.size)
        data = f.read()
    data = data[:len(data) - len(data) % TICK.size]   # a record being written
    return [t for (t,) in TICK.iter_unpack(data)]


def largest_gap(ticks: list[int], begin: int, end: int) -> tuple[int, int]:
    """The largest gap between consecutive ticks that overlaps [begin, end], and where it starts."""
    best, at = 0, 0
    for earlier, later in itertools.pairwise(ticks):
        if later > begin and earlier < end and later - earlier > best:
            best, at = later - earlier, earlier
    return best, at


def _state(inst: Instance, name: str) -> str | None:
    try:
        return inst.read(name, "state")
    except FileNotFoundError:
        return None


def _record(inst: Instance, name: str) -> dict[str, str]:
    out = {}
    for line in inst.read(name, "migrate_target").splitlines():
        key, _, value = line.partition(" ")
        out[key] = value
    return out


def diagnosis(src: Instance, dst: Instance, name: str, lines: int = 8) -> str:
    """The ends of the logs that say why a migration failed (they go with the run's
    root): the daemons', the source controller's and its dump's, the target's restore."""
    logs = [os.path.join(src.state_dir, "vzfs.log"),
            os.path.join(paths.domain_dir(src.state_dir, name), "controller.log"),
            os.path.join(paths.domain_dir(src.state_dir, name), "migration.log"),
            os.path.join(dst.state_dir, "vzfs.log"),
            os.path.join(paths.domain_dir(dst.state_dir, name), "checkpoint.log")]
    out = []
    for path in logs:
        try:
            with open(path, errors="replace") as f:
                tail = f.read().splitlines()[-lines:]
        except OSError:
            continue                  # not made (yet), or gone with the domain
        out.append(f"  {path}:" + "".join(f"\n    {line}" for line in tail))
    return "\n".join(out)


class Hosts:
    """The sshd and the two instances, each made undoable before it starts."""

    def __init__(self, ctx: Context) -> None:
        try:
            # The tests' sshd, made for this too; imported here so that the rest of the
            # suite does not depend on the tests' package.
            from tests.sshd import Sshd, available
        except ImportError as exc:
            raise BenchError(f"the suite's sshd (tests/sshd.py) cannot be imported: {exc}") \
                from exc
        missing = available()
        if missing:
            raise BenchError(f"migration {missing} (apt install openssh-server "
                             "openssh-client rsync)")
        base = os.path.join(ctx.root, "migrate")
        self.sshd = Sshd(Path(base, "sshd"))
        ctx.cleanups.append(self.sshd.stop)
        try:
            self.sshd.start()
        except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
            raise BenchError(f"the suite's sshd did not start: {exc}") from exc
        self.ssh = f"ssh -F {self.sshd.client_config}"
        self.a = Instance(os.path.join(base, "a"), self.sshd.env())
        self.b = Instance(os.path.join(base, "b"), self.sshd.env())
        for inst in (self.a, self.b):
            ctx.cleanups.append(inst.close)
            inst.mount()

    def other(self, inst: Instance) -> Instance:
        return self.b if inst is self.a else self.a


def migrate(hosts: Hosts, subject: Moving) -> dict[str, float]:
    """Move the domain to the other host; the figures of that one migration."""
    src, dst = subject.inst, hosts.other(subject.inst)
    name = subject.name
    offset = max(0, os.path.getsize(subject.ticks_file()) - int(BASELINE_S * 1000) * TICK.size)
    begin = time.time_ns()
    t0 = time.perf_counter_ns()
    write_ns, error = timed_write(src.path(name, "migrate_target"),
                                  f"vzfs-peer{dst.mountpoint}\n".encode())
    if error is not None:
        raise BenchError(f"migration of {name} refused: {error.strerror}: {src.error_of(name)}")
    deadline = time.monotonic() + MIGRATE_TIMEOUT
    while True:
        here, there = _state(src, name), _state(dst, name)
        if here is None and there == "running":
            break
        if here is not None and here != "migrating":
            record = _record(src, name)
            raise BenchError(f"migration of {name} failed ({here}, phase "
                             f"{record.get('phase')}): {record.get('error') or src.error_of(name)}"
                             f"\n{diagnosis(src, dst, name)}")
        if time.monotonic() > deadline:
            raise BenchError(f"migration of {name} did not end in {MIGRATE_TIMEOUT:.0f} s "
                             f"(source {here}, target {there})\n{diagnosis(src, dst, name)}")
        time.sleep(POLL_S)
    total_ns = time.perf_counter_ns() - t0
    end = time.time_ns()
    subject.inst = dst
    record = _record(dst, name)
    if record.get("status") != "done":
        raise BenchError(f"migration of {name}: the target's record says "
                         f"{record.get('status')!r}, not done")
    subject.check_memory(subject.domain_cgroup(), "after the migration")

    # The ticker runs on the target: wait for a tick after the end, then find the gap.
    ticks: list[int] = []
    tick_deadline = time.monotonic() + 5
    while not ticks or ticks[-1] <= end:
        if time.monotonic() > tick_deadline:
            raise BenchError(f"the ticker of {name} wrote nothing on the target after the "
                             "migration")
        time.sleep(0.01)
        ticks = read_ticks(subject.ticks_file(), offset)
    gap, at = largest_gap(ticks, begin, end)
    before = [t for t in ticks if t <= begin]
    baseline, _ = largest_gap(before, 0, begin)
    out = {"downtime_ms": gap / NS_PER_MS,
           "downtime_starts_ms": (at - begin) / NS_PER_MS,   # after the write began
           "baseline_gap_ms": baseline / NS_PER_MS,
           "total_ms": total_ns / NS_PER_MS,
           "write_ms": write_ns / NS_PER_MS}
    for key, value in record.items():
        if key.endswith("_ms"):
            try:
                out[f"rec_{key}"] = float(value)
            except ValueError:
                pass
    return out


def peer(hosts: Hosts, subject: Moving, scratch: str) -> dict[str, float]:
    """rsync of the running domain's root over ssh to a fresh directory, then raw CRIU."""
    dest = os.path.join(scratch, "rsync-peer")
    shutil.rmtree(dest, ignore_errors=True)
    os.makedirs(dest, 0o700)
    rootfs = subject.inst.rootfs(subject.name)
    t0 = time.perf_counter_ns()
    try:
        done = subprocess.run(["rsync", *RSYNC_FLAGS, "-e", hosts.ssh, rootfs.rstrip("/") + "/",
                               f"vzfs-peer:{dest}/"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              timeout=RSYNC_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise BenchError(f"rsync of {subject.name}'s root over ssh did not end in "
                         f"{RSYNC_TIMEOUT:.0f} s") from None
    rsync_ns = time.perf_counter_ns() - t0
    shutil.rmtree(dest, ignore_errors=True)
    if done.returncode != 0:
        raise BenchError(f"rsync of {subject.name}'s root over ssh exited with status "
                         f"{done.returncode}: {done.stderr.strip()[-500:]}")
    os.sync()                      # untimed, as before the checkpoint suite's dumps
    time.sleep(checkpoint.SETTLE_S)
    raw = subject.raw_cycle()
    return {"rsync_ms": rsync_ns / NS_PER_MS, "dump_ms": raw["dump_ms"],
            "restore_ms": raw["criu_restore_ms"]}


def _measure(ctx: Context, hosts: Hosts, subject: Moving, rounds: int) -> dict[str, float]:
    size, tag = subject.size, f"{subject.size}mb"
    needed = 2 * size * checkpoint.MIB + 256 * checkpoint.MIB
    free = shutil.disk_usage(subject.inst.state_dir).free
    if free < needed:
        raise BenchError(f"{size} MB needs {needed // checkpoint.MIB} MiB free in "
                         f"{subject.inst.state_dir}; there are {free // checkpoint.MIB}")
    subject.inst.define(subject.name, PRIVILEGED)          # busybox; privileged: the raw CRIU peer runs it as it was
    # Killed at the end by whichever instance it is on (the other finds no such domain).
    hosts.other(subject.inst).names.append(subject.name)
    subject.boot()
    root_bytes = tree_bytes(subject.inst.rootfs(subject.name))
    moves: list[dict[str, float]] = []
    peers: list[dict[str, float]] = []
    stalled, began = checkpoint.cpu_stall_us(), time.monotonic()
    for i in range(rounds):
        for side in alternate(i, ("vzfs", "peer")):
            os.sync()                # untimed: no writeback left over from the last one
            time.sleep(checkpoint.SETTLE_S)
            if side == "vzfs":
                moves.append(migrate(hosts, subject))
            else:
                peers.append(peer(hosts, subject, ctx.root))
    elapsed = time.monotonic() - began
    stalled_after = checkpoint.cpu_stall_us()
    subject.inst.kill(subject.name)
    # Gone, not merely stopped: the next size's domain may get the same id on the
    # other host, which then refuses it ("its id belongs to …").
    os.rmdir(os.path.join(subject.inst.mountpoint, "domains", subject.name))

    out: dict[str, float] = {f"migrate_root_mb_{tag}": root_bytes / checkpoint.MIB}
    if stalled is not None and stalled_after is not None:
        # The share of the rounds' time some task on the host waited for a CPU.
        out[f"migrate_cpu_pressure_pct_{tag}"] = (stalled_after - stalled) / 1e4 / elapsed

    def report(key: str, samples: list[float]) -> None:
        out[f"{key}_{tag}"] = median(samples)
        out[f"{key}_{tag}_min"] = min(samples)
        out[f"{key}_{tag}_max"] = max(samples)

    report("migrate_downtime_ms", [m["downtime_ms"] for m in moves])
    report("migrate_total_ms", [m["total_ms"] for m in moves])
    report("migrate_write_ms", [m["write_ms"] for m in moves])
    report("migrate_ticker_baseline_gap_ms", [m["baseline_gap_ms"] for m in moves])
    out[f"migrate_downtime_starts_ms_{tag}"] = median([m["downtime_starts_ms"] for m in moves])
    # vzfs's own record, whatever *_ms keys it has: its downtime and total as
    # `migrate_vzfs_…`, each phase and step (copy_ms, freeze_ms, dump_ms…) as `migrate_phase_…`.
    for key in sorted({k for m in moves for k in m if k.startswith("rec_")}):
        figure = key.removeprefix("rec_")
        kind = "vzfs" if figure in ("downtime_ms", "total_ms") else "phase"
        out[f"migrate_{kind}_{figure}_{tag}"] = median([m[key] for m in moves if key in m])
    report("criu_dump_restore_ms", [p["dump_ms"] + p["restore_ms"] for p in peers])
    report("rsync_criu_ms", [p["rsync_ms"] + p["dump_ms"] + p["restore_ms"] for p in peers])
    out[f"rsync_root_ms_{tag}"] = median([p["rsync_ms"] for p in peers])
    out[f"migrate_raw_criu_dump_ms_{tag}"] = median([p["dump_ms"] for p in peers])
    out[f"migrate_raw_criu_restore_ms_{tag}"] = median([p["restore_ms"] for p in peers])
    out[f"migrate_total_ratio_{tag}"] = out[f"migrate_total_ms_{tag}"] / out[f"rsync_criu_ms_{tag}"]
    return out


@measurement(*(key for size in CHECKPOINT_SIZES_MB for key in migration_keys(size)))
def migration(ctx: Context) -> Values:
    criu = checkpoint.locate_criu(ctx)
    hosts = Hosts(ctx)
    hog = checkpoint.build_hog(ctx.root)
    ticker = checkpoint.build_static(ctx.root, "ticker", TICKER_C, "the ticker")
    sizes = CHECKPOINT_SIZES_MB[:1] if ctx.settings.quick else CHECKPOINT_SIZES_MB
    rounds = 2 if ctx.settings.quick else 5
    out: dict[str, float] = {}
    for size in sizes:
        ctx.log(f"migration and rsync + raw CRIU, {size} MB, {rounds} rounds")
        out.update(_measure(ctx, hosts, Moving(ctx, hosts.a, criu, hog, ticker, size), rounds))
    ctx.meta["migrate_rounds"] = rounds
    return out

"""Many domains at once: control-file latency while they run, and what each domain's processes cost in memory."""

import time

from . import host
from .context import Context
from .control import NS_PER_US, read_op
from .instance import BenchError
from .lifecycle import DOMAIN_CONFIG
from .registry import Values, measurement
from .stats import median, percentile

KIB_PER_MB = 1024


def per_domain_pss_kib(init_pid: int) -> int:
    """PSS of the processes vzfs runs for one domain: its controller (init's parent) and
    every descendant of it outside the container (the VNC spawner and the VNC server)."""
    controller = host.parent_pid(init_pid)
    # A controller is forked from the daemon's zygote, so it has the daemon's
    # command line; anything else means init was re-parented (no controller).
    with open(f"/proc/{controller}/cmdline", "rb") as f:
        cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    if "vzfs" not in cmdline:
        raise BenchError(f"the parent of init {init_pid} is pid {controller} ({cmdline!r}), "
                         "not a vzfs controller")
    helpers: list[int] = []
    todo = [pid for pid in host.children(controller) if pid != init_pid]
    while todo:
        pid = todo.pop()
        helpers.append(pid)
        todo.extend(host.children(pid))
    return sum(host.pss_kib(pid) for pid in (controller, *helpers))


@measurement("control_read_us_p99_100_domains", "domain_pss_mb")
def many_domains(ctx: Context) -> Values:
    inst = ctx.instance()
    count = ctx.settings.domains
    names = [f"many{i:03d}" for i in range(count)]
    for name in names:
        inst.define(name, DOMAIN_CONFIG)
        inst.start(name)
    # Measure the steady state: every domain's VNC server has started and listens.
    deadline = time.monotonic() + 60
    while any(inst.read(name, "vnc") == "" for name in names):
        if time.monotonic() > deadline:
            raise BenchError("the domains' VNC servers did not all start within 60 s")
        time.sleep(0.05)
    # Reads go round the domains' state files, as a monitor polling all of them would.
    ops = [read_op(inst.path(name, "state")) for name in names]
    clock = time.perf_counter_ns
    samples = []
    for i in range(ctx.settings.iterations):
        op = ops[i % count]
        t0 = clock()
        op()
        samples.append((clock() - t0) / NS_PER_US)
    measured = names[:ctx.settings.pss_domains]
    pss = [per_domain_pss_kib(int(inst.read(name, "pid"))) for name in measured]
    for name in names:
        inst.kill(name)
    ctx.meta["control_read_domains"] = count
    ctx.meta["domain_pss_domains"] = len(measured)
    return {
        "control_read_us_p99_100_domains": percentile(samples, 99),
        "control_read_us_p50_100_domains": median(samples),
        "domain_pss_mb": sum(pss) / len(pss) / KIB_PER_MB,
        "domain_pss_mb_max": max(pss) / KIB_PER_MB,
    }

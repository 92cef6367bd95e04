"""Start and kill latency: `echo start|kill > state` beside `crun run -d` / `crun delete -f` on the same rootfs."""

import os
import shutil
import time

from .context import Context
from .instance import BenchError, timed_write
from .registry import Values, measurement
from .stats import alternate, median

INIT = ["/bin/sh", "-c", "echo hi; exec sleep 1000"]
DOMAIN_CONFIG = f"""\
init = [{", ".join(f'"{arg}"' for arg in INIT)}]

[limits]
memory = "256M"
pids = 512
"""
# A pause after each start and each kill, untimed: the next operation should
# not pay for work the previous one left running in the background (a
# controller settling into its event loop, a reaper, a cgroup removal).
SETTLE_S = 0.05
NS_PER_MS = 1e6


@measurement("start_ms_p50", "crun_start_ms_p50", "stop_ms_p50", "crun_kill_ms_p50")
def start_and_kill(ctx: Context) -> Values:
    inst = ctx.instance()
    peer = ctx.crun()
    name = "lifecycle"
    inst.define_filled(name, DOMAIN_CONFIG)
    peer.bundle(name, inst.rootfs(name), INIT)
    peer.run(name)
    peer.delete(name)

    times: dict[str, list[float]] = {"start": [], "kill": [], "crun_start": [], "crun_kill": []}
    write_errors: list[str] = []
    for i in range(ctx.settings.cycles):
        for side in alternate(i, ("vzfs", "crun")):
            if side == "vzfs":
                times["start"].append(inst.start(name) / NS_PER_MS)
                time.sleep(SETTLE_S)
                took, failure = inst.kill(name)
                times["kill"].append(took / NS_PER_MS)
                if failure:
                    write_errors.append(failure)
            else:
                times["crun_start"].append(peer.run(name) / NS_PER_MS)
                time.sleep(SETTLE_S)
                times["crun_kill"].append(peer.delete(name) / NS_PER_MS)
            time.sleep(SETTLE_S)
    if write_errors:
        ctx.log(f"warning: {len(write_errors)} of {ctx.settings.cycles} kill writes failed "
                f"although the domain stopped: {write_errors[0]}")
    ctx.meta["lifecycle_cycles"] = ctx.settings.cycles
    return {
        "start_ms_p50": median(times["start"]),
        "crun_start_ms_p50": median(times["crun_start"]),
        "stop_ms_p50": median(times["kill"]),
        "crun_kill_ms_p50": median(times["crun_kill"]),
        # The fastest run shows the cost without the host's noise on top.
        "start_ms_min": min(times["start"]),
        "crun_start_ms_min": min(times["crun_start"]),
        "stop_ms_min": min(times["kill"]),
        "crun_kill_ms_min": min(times["crun_kill"]),
        "kill_write_errors": len(write_errors),
    }


PRIVILEGED_CONFIG = DOMAIN_CONFIG.replace("[limits]", "privileged = true\n\n[limits]")
CRUN_USERNS_BASE = 2**31 - 65536      # far from any block vzfs assigns


def userns_copy(ctx: Context, rootfs: str) -> str:
    """The root as an OCI runtime with a user namespace wants it: its files owned by the
    mapped ids on disk (crun has no idmapped root), under directories the mapped root
    may search."""
    dest = os.path.join(ctx.root, "crun-userns-root")
    os.chmod(ctx.root, 0o755)
    shutil.copytree(rootfs, dest, symlinks=True)
    for top, dirs, files in os.walk(dest):
        for name in [top, *(os.path.join(top, n) for n in dirs + files)]:
            st = os.lstat(name)
            os.lchown(name, CRUN_USERNS_BASE + st.st_uid, CRUN_USERNS_BASE + st.st_gid)
    return dest


@measurement("start_unprivileged_ms_p50", "start_privileged_ms_p50",
             "crun_userns_start_ms_p50")
def start_by_privilege(ctx: Context) -> Values:
    """What the user namespace and the idmapped root cost a start (issue 15): an
    unprivileged domain, a privileged one and crun with a user namespace, in turns."""
    inst = ctx.instance()
    peer = ctx.crun()
    inst.define_filled("unpriv", DOMAIN_CONFIG)
    inst.define_filled("priv", PRIVILEGED_CONFIG)
    peer.bundle("userns", userns_copy(ctx, inst.rootfs("unpriv")), INIT,
                userns_base=CRUN_USERNS_BASE)
    peer.run("userns")
    peer.delete("userns")
    times: dict[str, list[float]] = {"unpriv": [], "priv": [], "crun": []}
    for i in range(ctx.settings.cycles):
        for side in alternate(i, ("unpriv", "priv", "crun")):
            if side == "crun":
                times["crun"].append(peer.run("userns") / NS_PER_MS)
                time.sleep(SETTLE_S)
                peer.delete("userns")
            else:
                times[side].append(inst.start(side) / NS_PER_MS)
                time.sleep(SETTLE_S)
                inst.kill(side)
            time.sleep(SETTLE_S)
    return {"start_unprivileged_ms_p50": median(times["unpriv"]),
            "start_privileged_ms_p50": median(times["priv"]),
            "crun_userns_start_ms_p50": median(times["crun"]),
            "start_unprivileged_ms_min": min(times["unpriv"]),
            "start_privileged_ms_min": min(times["priv"])}


@measurement("suspend_unprivileged_ms_p50", "suspend_privileged_ms_p50",
             "resume_unprivileged_ms_p50", "resume_privileged_ms_p50")
def suspend_by_privilege(ctx: Context) -> Values:
    """`echo suspend|resume > state` of a small busybox domain, unprivileged (its root an
    idmapped mount CRIU restores under, its images given to its user namespace) and
    privileged, in turns (issue 15)."""
    inst = ctx.instance()
    inst.define_filled("su", DOMAIN_CONFIG)
    inst.define_filled("sp", PRIVILEGED_CONFIG)
    times: dict[str, list[float]] = {f"{verb}_{side}": [] for verb in ("suspend", "resume")
                                     for side in ("su", "sp")}
    for name in ("su", "sp"):
        inst.start(name)
    try:
        for i in range(max(3, ctx.settings.cycles // 4)):
            for name in alternate(i, ("su", "sp")):
                for verb in ("suspend", "resume"):
                    took, error = timed_write(inst.path(name, "state"), verb.encode() + b"\n")
                    if error is not None:
                        raise BenchError(f"{verb} of {name} failed: {inst.error_of(name)}")
                    times[f"{verb}_{name}"].append(took / NS_PER_MS)
                    time.sleep(SETTLE_S)
    finally:
        for name in ("su", "sp"):
            inst.kill(name)
    return {"suspend_unprivileged_ms_p50": median(times["suspend_su"]),
            "suspend_privileged_ms_p50": median(times["suspend_sp"]),
            "resume_unprivileged_ms_p50": median(times["resume_su"]),
            "resume_privileged_ms_p50": median(times["resume_sp"])}

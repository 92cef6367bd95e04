"""Live mounts: `echo "add SRC TARGET" > mounts` and `echo "del TARGET" > mounts` on a
running domain, each until the write returns (the mount is there, or gone, inside)."""

import os
import tempfile
import time

from .context import Context
from .instance import BenchError, timed_write
from .registry import Values, measurement
from .stats import median

NS_PER_MS = 1e6


@measurement("mount_add_ms_p50", "mount_del_ms_p50")
def live_mounts(ctx: Context) -> Values:
    inst = ctx.instance()
    name = "mounts"
    inst.define(name, 'init = ["/bin/sh", "-c", "exec sleep 100000"]\n')
    inst.start(name)
    path = inst.path(name, "mounts")
    samples = 5 if ctx.settings.quick else 20
    add_ms: list[float] = []
    del_ms: list[float] = []
    with tempfile.TemporaryDirectory(prefix="vzfs-bench-mount-") as source:
        with open(os.path.join(source, "mark"), "w") as f:
            f.write("mark\n")
        # Through the domain's idmapped view the host's root is nobody: the check
        # below reads the mark as anyone may.
        os.chmod(source, 0o755)
        root = f"/proc/{inst.read(name, 'pid').strip()}/root"
        for _ in range(samples):
            took, failure = timed_write(path, f"add {source} /mnt/bench ro".encode())
            if failure:
                raise BenchError(f"add failed: {failure}")
            if not os.path.exists(f"{root}/mnt/bench/mark"):
                raise BenchError("the write returned but the mount is not there")
            add_ms.append(took / NS_PER_MS)
            took, failure = timed_write(path, b"del /mnt/bench")
            if failure:
                raise BenchError(f"del failed: {failure}")
            del_ms.append(took / NS_PER_MS)
            time.sleep(0.02)
    inst.kill(name)
    ctx.meta["mount_samples"] = samples
    return {"mount_add_ms_p50": median(add_ms), "mount_del_ms_p50": median(del_ms)}

"""Console throughput: a container writes text to its console, timed until the writer finishes."""

import json
import subprocess
import sys
import time

from .context import Context
from .instance import BenchError
from .registry import Values, measurement
from .stats import alternate, median

INIT = ["/bin/sh", "-c", "trap 'exit 0' PWR; sleep 100000 & wait"]
CONFIG = f"init = {json.dumps(INIT)}\n"    # a JSON array of strings is TOML too
LINE = "vzfs console throughput: a line of ordinary log text, 64 bytes.."
MB = 1e6


def _write(ctx: Context, mountpoint: str, name: str, target: str, size: int) -> float:
    """Seconds for `yes LINE | head -c SIZE > TARGET` inside the domain (via vzfs enter)."""
    script = f"yes '{LINE}' | head -c {size} > {target}"
    t = time.perf_counter()
    done = subprocess.run([sys.executable, "-P", "-m", "vzfs", "enter", "--mount", mountpoint,
                           name, "--", "sh", "-c", script], capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL)
    took = time.perf_counter() - t
    if done.returncode != 0:
        raise BenchError(f"writer in domain {name} failed: {done.stderr.strip()}")
    return took


@measurement("console_throughput_mbps", "devnull_throughput_mbps")
def console_throughput(ctx: Context) -> Values:
    inst = ctx.instance()
    name = "console"
    inst.define(name, CONFIG)
    inst.start(name)
    size = (10 if ctx.settings.quick else 50) * 1_000_000
    runs = 1 if ctx.settings.quick else 3
    console: list[float] = []
    devnull: list[float] = []
    for i in range(runs):
        for side in alternate(i, ("console", "devnull")):
            target = "/dev/console" if side == "console" else "/dev/null"
            took = _write(ctx, inst.mountpoint, name, target, size)
            (console if side == "console" else devnull).append(size / MB / took)
    ctx.meta["console_bytes"] = size
    return {"console_throughput_mbps": median(console),
            "devnull_throughput_mbps": median(devnull)}

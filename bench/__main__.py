"""`bench/run`: run every registered measurement on a private vzfs instance, print the table, write the JSON."""

import argparse
import datetime
import json
import os
import signal
import sys
import time
import traceback
from types import FrameType

# Importing the measurement modules registers them, in this order.
from . import automation, console, control, density, hooks, lifecycle, mounts, vnc  # noqa: F401
# Last: they write hundreds of MB of images and hold as much memory while they run.
from . import checkpoint, migration  # noqa: F401,E402
from . import host, report
from .context import Context, Settings
from .registry import MEASUREMENTS, Value

DEFAULT_JSON = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results.json")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM (a CI timeout, `kill`) cleans up exactly like Ctrl-C does.
    raise KeyboardInterrupt


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    p.add_argument("--quick", action="store_true",
                   help="fewer repetitions and domains (a smoke test: under two minutes)")
    p.add_argument("--json", default=DEFAULT_JSON, metavar="PATH",
                   help="where to write the figures (default: bench/results.json)")
    p.add_argument("--only", action="append", metavar="NAME",
                   choices=[m.name for m in MEASUREMENTS],
                   help="run only this measurement (repeatable); the others' figures stay null")
    p.add_argument("--crun-cgroups", choices=("cgroupfs", "disabled"), default="cgroupfs",
                   help="crun with cgroups like vzfs (default), or with --cgroup-manager=disabled")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    settings = Settings.for_run(args.quick, args.crun_cgroups)
    values: dict[str, Value] = {}
    errors: list[str] = []
    began = time.monotonic()
    with Context(settings) as ctx:
        for m in MEASUREMENTS:
            if args.only and m.name not in args.only:
                continue
            ctx.log(f"measuring {m.name} ({', '.join(m.keys)})")
            t0 = time.monotonic()
            try:
                values.update(m.run(ctx))
            except Exception as exc:    # the suite's boundary: one failed measurement
                # leaves its figures null and fails the run, the others still run.
                traceback.print_exc()
                errors.append(f"{m.name}: {exc}")
            ctx.log(f"{m.name} took {time.monotonic() - t0:.1f} s")
        meta = dict(ctx.meta)
    errors += ctx.problems
    values.update(meta)
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": host.machine(),
        "quick": settings.quick,
        "seconds": round(time.monotonic() - began, 1),
        "errors": errors,
    }
    print(report.table(values))
    with open(args.json, "w") as f:
        json.dump(report.document(values, info), f, indent=2)
        f.write("\n")
    print(f"\n{info['date']}, {info['machine']}, {info['seconds']} s; JSON in {args.json}")
    for error in errors:
        print(f"bench: error: {error}", file=sys.stderr)
    return 1 if errors else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench/run: run as root (it mounts FUSE, makes cgroups and containers)",
              file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("bench/run: interrupted; cleaned up", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

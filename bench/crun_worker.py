"""The crun worker: runs crun on request, timed, in a mount namespace where the cgroup layout suits crun.

Started by `bench.crun`. Requests on stdin, one a line: `run NAME` or `delete
NAME`; answers on stdout: `ok NANOSECONDS` or `error WORDS`. A run counts only
when the container's process then prints its line.
"""

import argparse
import os
import sys
import time

from vzfs.kernel import rootfs, syscalls
from vzfs.kernel.cdefs import CLONE_NEWNS, MNT_DETACH

LINE_TIMEOUT = 5.0


def spawn_timed(argv: list[str], stdout: int, stderr: int) -> tuple[int, int]:
    """Run *argv* to completion; return (its wait status, nanoseconds)."""
    actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
               (os.POSIX_SPAWN_DUP2, stdout, 1), (os.POSIX_SPAWN_DUP2, stderr, 2)]
    t0 = time.perf_counter_ns()
    pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=actions)
    _, status = os.waitpid(pid, 0)
    return status, time.perf_counter_ns() - t0


def wait_line(path: str, line: bytes) -> bool:
    deadline = time.monotonic() + LINE_TIMEOUT
    while time.monotonic() < deadline:
        with open(path, "rb") as f:
            if line in f.read():
                return True
        time.sleep(0.002)
    return False


def serve(args: argparse.Namespace) -> None:
    base = [args.crun, "--root", args.state]
    if args.cgroup_manager == "disabled":
        base.append("--cgroup-manager=disabled")
    bundles = os.path.join(os.path.dirname(args.state), "bundles")
    print("ready", flush=True)
    for request in sys.stdin:
        verb, _, name = request.strip().partition(" ")
        bundle = os.path.join(bundles, name)
        out_path = os.path.join(bundle, "out")
        # The container inherits these as its stdout and stderr (a detached,
        # terminal-less run passes crun's stdio through, crun(1)).
        out = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        err = os.open(os.path.join(bundle, "err"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            if verb == "run":
                status, took = spawn_timed([*base, "run", "-d", "--bundle", bundle, name], out, err)
            elif verb == "delete":
                status, took = spawn_timed([*base, "delete", "-f", name], out, err)
            else:
                print(f"error unknown request {verb!r}", flush=True)
                continue
        finally:
            os.close(out)
            os.close(err)
        if status != 0:
            with open(os.path.join(bundle, "err")) as f:
                print(f"error exit status {os.waitstatus_to_exitcode(status)}: "
                      f"{f.read().strip()!r}", flush=True)
        elif verb == "run" and not wait_line(out_path, b"hi\n"):
            print(f"error the container did not print its line in {LINE_TIMEOUT:g} s", flush=True)
        else:
            print(f"ok {took}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--crun", required=True)
    p.add_argument("--state", required=True)
    p.add_argument("--cgroup-manager", choices=("cgroupfs", "disabled"), default="cgroupfs")
    p.add_argument("--hide", help="a cgroup2 mount to detach in a private mount namespace")
    args = p.parse_args()
    if args.hide:
        syscalls.unshare(CLONE_NEWNS)
        rootfs.make_private()
        syscalls.umount(args.hide, MNT_DETACH)
    serve(args)


if __name__ == "__main__":
    main()

"""SIGKILL of every kind of vzfs process at random moments, in a loop (issue 16, item 3).

Each round starts one command on a random domain (start, stop, kill, a whole new
config, a live mount or unmount) and, a random few milliseconds later, SIGKILLs a
random vzfs process: the daemon, the zygote, a domain's keeper or its controller.
Then it lets things settle (a killed daemon is mounted again, as systemd would) and
counts what went wrong:

* lost: a domain that is no longer defined;
* config: a config that is neither the one before the round nor the one written in
  it (half-applied, reset, or lost);
* state: a state that disagrees with the processes (`running` without a live init
  in the domain's cgroup, or `stopped`/`crashed` with one);
* leftover: a cgroup, keeper or controller of a domain that is not running.

Every count must be 0. The seed is printed, and VZFS_CRASH_SEED replays a run.
"""

import errno
import os
import random
import signal
import threading
import time
import tomllib
from pathlib import Path

from tests.system import QUICK_INIT, Instance, wait_for
from tests.test_domains import cgroup_of
from tests.test_keeper import gone
from tests.test_proctitle import by_title

ROUNDS = int(os.environ.get("VZFS_CRASH_ROUNDS", "100"))
NAMES = ("c1", "c2", "c3")
RESTING = ("running", "stopped", "crashed")


def config(round_: int) -> str:
    init = ", ".join(f'"{a}"' for a in QUICK_INIT)
    return (f"# written in round {round_}\ninit = [{init}]\nstop_timeout = 3\n"
            f'hostname = "r{round_}"\n[limits]\npids = {100 + round_}\n')


def titled(text: str) -> list[int]:
    """The live processes with that title (not zombies)."""
    return [pid for pid in by_title(text) if not gone(pid)]


class Round:
    def __init__(self, inst: Instance, rng: random.Random, n: int, src: Path) -> None:
        self.inst, self.rng, self.n, self.src = inst, rng, n, src
        self.name = rng.choice(NAMES)
        self.action = rng.choice(["start", "stop", "kill", "config", "mount", "start", "config"])
        self.written: str | None = None
        self.outcome = ""

    def run(self) -> None:
        d = self.inst.dom(self.name)
        try:
            if self.action in ("start", "stop", "kill"):
                (d / "state").write_text(self.action)
            elif self.action == "config":
                self.written = config(self.n)
                (d / "config").write_text(self.written)
            else:
                mounted = "/mnt/x" in (d / "mounts").read_text()
                (d / "mounts").write_text("del /mnt/x" if mounted else f"add {self.src} /mnt/x ro")
            self.outcome = "ok"
        except OSError as exc:
            self.outcome = errno.errorcode.get(exc.errno or 0, str(exc))


def victims(inst: Instance) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {"daemon": [], "zygote": [], "keeper": [], "controller": []}
    try:
        out["daemon"] = [inst.daemon_pid()]
    except OSError:
        pass
    out["zygote"] = titled(f"vzfs: zygote {inst.mnt}")
    for name in NAMES:
        out["keeper"] += titled(f"vzfs: keeper {name}")
        out["controller"] += titled(f"vzfs: controller {name}")
    return out


def settle(inst: Instance) -> None:
    """The daemon serves again (mounted anew if it died), every domain resting."""
    if not (inst.mnt / "version").exists() or not _daemon_alive(inst):
        inst.kill_daemon_if_any()
        inst.mount()

    def resting() -> bool:
        try:
            return all(inst.read(n, "state").strip() in RESTING for n in NAMES)
        except OSError:
            return False

    wait_for(resting, timeout=30, what="every domain resting")


def _killed(inst: Instance, name: str) -> bool:
    try:
        inst.write(name, "state", "kill")
    except OSError as exc:
        if exc.errno != errno.EIO:
            raise
        return False
    return True


def _daemon_alive(inst: Instance) -> bool:
    try:
        return not gone(inst.daemon_pid())
    except OSError:
        return False


def check(inst: Instance, configs: dict[str, set[str]], counts: dict[str, int],
          notes: list[str]) -> None:
    names = {p.name for p in (inst.mnt / "domains").iterdir()}
    for name in NAMES:
        if name not in names:
            counts["lost"] += 1
            notes.append(f"{name} lost")
            continue
        # The daemon shows a config in its own words: the round that wrote it is its
        # identity, and every value it wrote must be that round's (nothing mixed).
        cfg = tomllib.loads(inst.read(name, "config"))
        hostname, pids = cfg.get("hostname"), cfg.get("limits", {}).get("pids")
        if hostname not in configs[name] or pids != 100 + int(str(hostname)[1:]):
            counts["config"] += 1
            notes.append(f"{name} config has hostname {hostname!r}, pids {pids!r}; "
                         f"expected one of {sorted(configs[name])}")
        configs[name] = {str(hostname)}
        cg = cgroup_of(inst, name)

        def consistent() -> bool:
            st = inst.read(name, "state").strip()
            if st == "running":
                pid = inst.read(name, "pid").strip()
                return bool(pid) and not gone(int(pid)) and int(pid) in cg.procs()
            return not cg.exists() and not titled(f"vzfs: keeper {name}") \
                and not titled(f"vzfs: controller {name}")

        try:
            # A controller being replaced, an exit being recorded: a moment to settle.
            wait_for(consistent, timeout=10, what=f"{name} consistent")
        except AssertionError:
            st = inst.read(name, "state").strip()
            if st == "running":
                counts["state"] += 1
            else:
                counts["leftover"] += 1
            notes.append(f"{name} {st}: cgroup {cg.exists()} procs {cg.procs()} keepers "
                         f"{titled(f'vzfs: keeper {name}')} controllers "
                         f"{titled(f'vzfs: controller {name}')} error "
                         f"{inst.read(name, 'error').strip()!r}")


def test_random_sigkills_lose_nothing_and_leave_nothing(instance: Instance,
                                                        tmp_path: Path) -> None:
    seed = int(os.environ.get("VZFS_CRASH_SEED", str(time.time_ns() % 10**9)))
    print(f"VZFS_CRASH_SEED={seed}")
    rng = random.Random(seed)
    src = tmp_path / "src"
    src.mkdir()
    configs: dict[str, set[str]] = {}
    for name in NAMES:
        instance.define(name, config(0))
        configs[name] = {"r0"}
    instance.write("c1", "state", "start")
    counts = {"lost": 0, "config": 0, "state": 0, "leftover": 0}
    killed = {"daemon": 0, "zygote": 0, "keeper": 0, "controller": 0}
    notes: list[str] = []
    for n in range(1, ROUNDS + 1):
        r = Round(instance, rng, n, src)
        if r.action == "config":
            configs[r.name] = configs[r.name] | {f"r{n}"}
        worker = threading.Thread(target=r.run)
        worker.start()
        time.sleep(rng.uniform(0, 0.05))
        pool = victims(instance)
        kinds = [k for k, pids in pool.items() if pids]
        kind = rng.choice(kinds)
        try:
            os.kill(rng.choice(pool[kind]), signal.SIGKILL)
            killed[kind] += 1
        except ProcessLookupError:
            pass
        if kind == "daemon":
            instance.kill_daemon_if_any()
        worker.join(timeout=60)
        assert not worker.is_alive(), f"round {n}: {r.action} of {r.name} never returned"
        settle(instance)
        check(instance, configs, counts, notes)
    print(f"{ROUNDS} rounds, SIGKILLs: {killed}; problems: {counts}")
    assert counts == {"lost": 0, "config": 0, "state": 0, "leftover": 0}, notes
    # And at the end, nothing of any domain once all are stopped.
    for name in NAMES:
        if instance.read(name, "state").strip() == "running":
            # The last round may have just killed this domain's controller: until the
            # daemon has re-attached to its replacement (REATTACH_TIMEOUT), a kill fails
            # with EIO (a known gap, in the session note), so the kill is asked again.
            wait_for(lambda: _killed(instance, name), timeout=15, what=f"{name} killed")
    for name in NAMES:
        assert not cgroup_of(instance, name).exists()
        # (a controller leaves a moment after it replied to the kill)
        wait_for(lambda: not titled(f"vzfs: keeper {name}")
                 and not titled(f"vzfs: controller {name}"), what=f"the end of {name}'s processes")

"""Hooks: the administrator's executables run at a domain's lifecycle phases.

Like libvirt's hooks and run-parts(8): every executable in the hooks directory
(default /etc/vzfs/hooks.d) whose name is a plain one runs, in name order, with
the arguments DOMAIN PHASE CONFIG (the path of the domain's config) and the
config's TOML on stdin (libvirt gives its XML there), in a session of its own,
from /, with the daemon's environment plus VZFS_* variables.

Phases, and who may refuse:

  prepare   before a start or resume, before anything is made   non-zero refuses it
  start     the rootfs is ready, the container not yet made     non-zero refuses it
  started   init runs (boot, resume, or arrival by migration)   logged
  stop      a stop or kill was asked for (runs beside it)       logged
  stopped   it ended here (stopped, crashed, suspended, gone    logged
            by migration; VZFS_REASON says which)
  migrate   before a migration (or a `check`) leaves, and on    non-zero refuses it
            the target once it reserved the domain

A hook is killed, with every process of its session, when it has not ended after
the timeout (30 s; `vzfs mount --hook-timeout`); at a refusing phase that is a
refusal. Each domain's hooks run one at a time, in the order of its phases, so a
`stopped` never overtakes the `started` before it; phases that cannot refuse run
in the background and hold nothing up. What a hook prints goes to the daemon's
log; at a refusal, its last line is the reason given in `error`.
"""

import dataclasses
import errno
import logging
import os
import re
import signal
import subprocess
from collections import deque
from collections.abc import Callable
from typing import Any

import trio

from ..base.errors import VzfsError

log = logging.getLogger("vzfs.hooks")

DEFAULT_DIR = "/etc/vzfs/hooks.d"
DEFAULT_TIMEOUT = 30.0
REFUSING = frozenset({"prepare", "start", "migrate"})
PHASES = REFUSING | {"started", "stop", "stopped"}
OUTPUT_LIMIT = 64 * 1024        # of a hook's output, kept for the log and the reason
REASON_LIMIT = 300
EOF_GRACE = 0.2                 # a hook's background child may hold its output open

# run-parts(8)'s rule, with dots allowed for `50-log.sh`; editor and package-manager
# leftovers (`x~`, `x.dpkg-old`, `x.rpmnew`, `.x.swp`) never run.
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_LEFTOVER = re.compile(r".*(~|\.(dpkg-[a-z]+|rpmnew|rpmsave|rpmorig|orig|bak|swp|disabled))$")


def is_hook_name(name: str) -> bool:
    return bool(_NAME.fullmatch(name)) and not _LEFTOVER.fullmatch(name)


def last_line(output: bytes) -> str:
    """The reason a hook gave: its last non-empty line of output, shortened."""
    for line in reversed(output.decode("utf-8", errors="replace").splitlines()):
        line = line.strip()
        if line:
            return line if len(line) <= REASON_LIMIT else line[:REASON_LIMIT - 1] + "…"
    return ""


@dataclasses.dataclass(frozen=True)
class Call:
    """One phase of one domain, as the hooks see it (taken when the phase happened)."""
    domain: str
    phase: str
    reason: str
    config_path: str
    config_text: str
    env: dict[str, str]


@dataclasses.dataclass
class Outcome:
    hook: str
    status: int | None          # None: killed at the timeout, or could not run
    output: bytes
    problem: str = ""           # why it could not run, or that it timed out

    def failed(self) -> bool:
        return self.status != 0

    def summary(self) -> str:
        """`exit N`, `timeout`, or why it could not run: for the log and the event."""
        return self.problem or f"exit {self.status}"

    def describe(self, phase: str, timeout: float) -> str:
        if self.problem == "timeout":
            return f"hook {self.hook} did not finish within {timeout:g} s at {phase} and was killed"
        if self.problem:
            return f"hook {self.hook} could not run at {phase}: {self.problem}"
        said = last_line(self.output)
        how = f"exit {self.status}" if self.status is not None and self.status >= 0 \
            else f"killed by signal {-(self.status or 0)}"
        return f"hook {self.hook} refused at {phase} ({how})" + (f": {said}" if said else "")


# A call waiting in its domain's lane: what to tell when it ran, and the scope that
# abandons it (its hooks killed) when nobody waits for it any more.
_Queued = tuple[Call, Callable[[list[Outcome]], Any], trio.CancelScope]


class Hooks:
    """The hooks of one daemon: the directory, the timeout, and a lane per domain."""

    def __init__(self, directory: str | None = DEFAULT_DIR,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self.directory = directory
        self.timeout = timeout
        self.nursery: trio.Nursery | None = None
        # Told of every hook that failed (the registry makes it an event).
        self.on_failed: Callable[[Call, Outcome], None] = lambda call, outcome: None
        self._lanes: dict[str, deque[_Queued]] = {}

    def scripts(self) -> list[str]:
        """The hooks that run now, in order: looked up at every phase, as run-parts does."""
        if not self.directory:
            return []
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return []        # no directory: no hooks
        return sorted(e.path for e in entries
                      if is_hook_name(e.name) and e.is_file() and os.access(e.path, os.X_OK))

    def active(self, domain: str) -> bool:
        """Whether a phase of *domain* has hooks to run, or to wait for: the common case,
        no hooks, costs one scandir and no Call."""
        return domain in self._lanes or bool(self.scripts())

    async def refuse_unless_allowed(self, call: Call, what: str) -> None:
        """Run a refusing phase's hooks (after the domain's earlier ones); the first that
        fails refuses: VzfsError(EPERM, "WHAT: hook H refused at PHASE (exit N): REASON")."""
        assert call.phase in REFUSING
        done = trio.Event()
        outcomes: list[Outcome] = []

        def finished(result: list[Outcome]) -> None:
            outcomes.extend(result)
            done.set()

        abandon = trio.CancelScope()
        self._enqueue(call, finished, abandon)
        try:
            await done.wait()
        finally:
            if not done.is_set():
                abandon.cancel()     # its waiter went (a kill cut the start short): so do they
        for outcome in outcomes:
            if outcome.failed():
                raise VzfsError(errno.EPERM, f"{what}: {outcome.describe(call.phase, self.timeout)}")

    def notify(self, call: Call, then: Callable[[], Any] | None = None) -> None:
        """Run a phase's hooks in the background, after the domain's earlier ones; *then*
        runs after them."""
        self._enqueue(call, lambda outcomes: then() if then is not None else None,
                      trio.CancelScope())

    def _enqueue(self, call: Call, finished: Callable[[list[Outcome]], Any],
                 abandon: trio.CancelScope) -> None:
        lane = self._lanes.get(call.domain)
        if lane is None:
            lane = self._lanes[call.domain] = deque()
            assert self.nursery is not None, "hooks run once the daemon runs"
            self.nursery.start_soon(self._drain, call.domain, lane)
        lane.append((call, finished, abandon))

    async def _drain(self, domain: str, lane: deque[_Queued]) -> None:
        try:
            while lane:
                call, finished, abandon = lane[0]
                outcomes: list[Outcome] = []
                with abandon:
                    outcomes = await self.run(call)
                lane.popleft()
                finished(outcomes)
        finally:
            del self._lanes[domain]

    async def run(self, call: Call) -> list[Outcome]:
        """Each hook in turn; at a refusing phase the first failure ends the run."""
        outcomes = []
        for path in self.scripts():
            outcome = await self._run_one(path, call)
            outcomes.append(outcome)
            level = logging.WARNING if outcome.failed() else logging.INFO
            log.log(level, "hook %s %s %s (%s): %s%s", os.path.basename(path), call.domain,
                    call.phase, call.reason, outcome.summary(),
                    "".join(f"\n  | {line}" for line in
                            outcome.output.decode("utf-8", errors="replace").splitlines()))
            if outcome.failed():
                self.on_failed(call, outcome)
                if call.phase in REFUSING:
                    break
        return outcomes

    async def _run_one(self, path: str, call: Call) -> Outcome:
        name = os.path.basename(path)
        env = {**os.environ, **call.env, "VZFS_DOMAIN": call.domain, "VZFS_PHASE": call.phase,
               "VZFS_REASON": call.reason, "VZFS_CONFIG": call.config_path}
        try:
            proc = await trio.lowlevel.open_process(
                [path, call.domain, call.phase, call.config_path], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd="/",
                start_new_session=True)
        except OSError as exc:
            return Outcome(name, None, b"", exc.strerror or str(exc))
        assert proc.stdin is not None and proc.stdout is not None
        stdin, stdout = proc.stdin, proc.stdout
        output = bytearray()
        drained = trio.Event()

        async def feed() -> None:
            try:
                await stdin.send_all(call.config_text.encode())
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass         # a hook need not read its stdin
            finally:
                await stdin.aclose()

        async def drain() -> None:
            try:
                async for chunk in stdout:
                    if len(output) < OUTPUT_LIMIT:
                        output.extend(chunk[:OUTPUT_LIMIT - len(output)])
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            drained.set()

        problem = ""
        try:
            with trio.move_on_after(self.timeout) as limit:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(feed)
                    nursery.start_soon(drain)
                    await proc.wait()
                    with trio.move_on_after(EOF_GRACE):
                        await drained.wait()
                    nursery.cancel_scope.cancel()
            if limit.cancelled_caught and proc.returncode is None:
                problem = "timeout"
        finally:
            if proc.returncode is None:
                # Timed out, or abandoned (a kill cut the start short): the hook and
                # what it started go.
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                with trio.CancelScope(shield=True):
                    await proc.wait()
            with trio.CancelScope(shield=True):
                await stdout.aclose()
        return Outcome(name, None if problem else proc.returncode, bytes(output), problem)

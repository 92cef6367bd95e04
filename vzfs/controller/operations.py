"""What a controller does to its running domain when the daemon asks: stop and kill, live
mounts, pause and resume (the cgroup freezer), suspend (a CRIU checkpoint) and the glue
to a migration (migrate/source.py).

Theory of operation
-------------------
Each operation is a handler of the request server (server.py): it takes its typed
request and returns its typed reply, or raises VzfsError with the sentence the daemon
puts after its own "cannot VERB domain NAME: ". An operation that changes what the
domain is doing first takes the verb on in the controller's state machine
(states.py), which refuses it when the domain is busy with something else, and moves
the state on with the outcome (`frozen`, `dumped`, `moved`…) once it is known.

A dump — a suspend's, or the one a migration's move makes — ends the tree once its
images are written (or once the target has every page), and init's end is then its
doing: `dump_settled` is clear while one is under way, and the wait for init
(controller.py) waits for the verdict before it says how the domain ended.
"""

import errno
import signal
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import trio

from ..base.errors import VzfsError
from ..kernel import mounts as kmounts
from ..wire import messages as m
from . import checkpoint, states
from .states import State

if TYPE_CHECKING:
    from ..migrate.source import Migration
    from .controller import Controller

NO_CRIU = "no CRIU was found (set VZFS_CRIU or run ./bootstrap)"


def _settled() -> trio.Event:
    event = trio.Event()
    event.set()
    return event


@contextmanager
def _refused(what: str = "", bad: str = "") -> Iterator[None]:
    """An OSError of the kernel as a refusal in its own words (after *what*); with *bad*,
    a value the kernel cannot take (a NUL in a path) as EINVAL after *bad*."""
    try:
        yield
    except OSError as exc:
        raise VzfsError(exc.errno or errno.EIO, what + (exc.strerror or str(exc))) from exc
    except (KeyError, TypeError, ValueError) as exc:
        if not bad:
            raise
        raise VzfsError(errno.EINVAL, f"{bad}{exc}") from exc


async def _await_helper(pending: kmounts.Pending) -> None:
    # Shielded: the helper only makes a few syscalls, and must be reaped whatever happens.
    with trio.CancelScope(shield=True):
        await trio.lowlevel.wait_readable(pending.fd)
    pending.finish()


class Operations:
    """The operations on *ctl*'s domain (module docstring)."""

    def __init__(self, ctl: "Controller") -> None:
        self.ctl = ctl
        self.migration: "Migration | None" = None     # the outgoing one under way
        self.migration_target = ""
        self.dump_settled = _settled()

    # -- stop and kill --------------------------------------------------------------
    async def stop(self, req: m.Stop) -> m.Ended:
        """The stop signal to init, then SIGTERM, then SIGKILL at the timeout
        (INTERFACE.md); the reply once the domain has ended."""
        ctl = self.ctl
        timeout = ctl.cfg.stop_timeout if req.timeout_s is None else req.timeout_s
        sig = ctl.cfg.stop_signal if req.signal is None else req.signal
        before = ctl.begin("stop")
        if before in (State.RUNNING, State.PAUSED):
            if before is State.PAUSED:
                ctl.cgroup.thaw()           # a frozen init cannot hear the stop signal
            ctl.signal_init(sig)
            ctl.nursery.start_soon(self._escalate, timeout, sig)
        return await self._end()

    async def _escalate(self, timeout: float, sig: int) -> None:
        if sig != signal.SIGTERM:
            await trio.sleep(timeout / 2)
            self.ctl.signal_init(signal.SIGTERM)
            await trio.sleep(timeout / 2)
        else:
            await trio.sleep(timeout)
        self.kill_now()

    async def kill(self, req: m.Kill) -> m.Ended:
        self.kill_now()
        return await self._end()

    def kill_now(self) -> None:
        """Every process of the domain SIGKILLed, whatever else is under way (unless its
        tree is ending by itself already)."""
        ctl = self.ctl
        before = ctl.begin("kill")
        if ctl.state is not State.STOPPING:
            return
        ctl.signal_init(signal.SIGKILL)
        ctl.cgroup.kill_all()
        if before in (State.PAUSED, State.SUSPENDING_PAUSED):
            # The v1 freezer holds even a SIGKILLed task until it is thawed.
            ctl.cgroup.thaw()

    async def _end(self) -> m.Ended:
        ctl = self.ctl
        await ctl.ended.wait()
        return m.Ended(ctl.state.value, ctl.exit_reason, ctl.console.term.text())

    # -- live mounts ----------------------------------------------------------------
    # kernel.mounts forks, from this (the loop's) thread, a helper that joins the
    # container's mount namespace; the loop goes on until it reports.
    async def mounts(self, req: m.Mounts) -> m.MountLines:
        ctl = self.ctl
        with _refused(bad="bad mount request: "):
            present = await trio.to_thread.run_sync(kmounts.mounted_targets, ctl.pid)
        return m.MountLines(tuple(spec.line() for spec in ctl.mounts if spec.target in present))

    async def mount_add(self, req: m.MountAdd) -> None:
        ctl = self.ctl
        spec = req.spec()
        with _refused(bad="bad mount request: "):
            await _await_helper(kmounts.start_inject(ctl.pid, spec, ctl.idmap))
            ctl.mounts.append(spec)
            ctl.record_mounts()

    async def mount_del(self, req: m.MountDel) -> None:
        ctl = self.ctl
        with _refused(bad="bad mount request: "):
            await _await_helper(kmounts.start_eject(ctl.pid, req.target))
            ctl.mounts = [spec for spec in ctl.mounts if spec.target != req.target]
            ctl.record_mounts()

    # -- pause and resume -----------------------------------------------------------
    async def pause(self, req: m.Pause) -> m.FreezerState:
        return await self._freeze("pause", self.ctl.cgroup.freeze, "frozen")

    async def resume(self, req: m.Resume) -> m.FreezerState:
        return await self._freeze("resume", self.ctl.cgroup.thaw, "thawed")

    async def _freeze(self, verb: str, act: Callable[[], None], done: str) -> m.FreezerState:
        ctl = self.ctl
        ctl.begin(verb)               # (the state moves once the freezer has done it)
        with _refused("the cgroup freezer refused: "):
            await trio.to_thread.run_sync(act)
        ctl.outcome(done)
        return m.FreezerState(states.SHOWN[ctl.state])

    # -- suspend --------------------------------------------------------------------
    def _check_criu(self, verb: str) -> None:
        """Refuse *verb* as the state machine would, then for want of CRIU."""
        ctl = self.ctl
        states.begin(ctl.state, verb)
        if not ctl.criu:
            code, _, why = ctl.criu_error.partition(" ")
            raise VzfsError(int(code) if code.isdigit() else errno.ENOENT, why or NO_CRIU)

    async def suspend(self, req: m.Suspend) -> m.Suspended:
        """Checkpoint the domain to disk and end it; on failure it runs on as it was.

        CRIU stops a running tree itself (ptrace: a millisecond, where its cgroup
        freezer path waits 100 ms before it first looks); a paused domain's frozen
        cgroup is handed to it as it is. The screen is saved on the root before the
        dump and, once CRIU has ended the tree and its last output is read, again:
        the screen after the resume is the screen at the checkpoint."""
        ctl = self.ctl
        self._check_criu("suspend")
        ctl.begin("suspend")
        settled = self.dump_settled = trio.Event()
        started = time.monotonic()
        dumped = False
        try:
            with _refused():
                ctl.save_screen()
                meta = ctl.checkpoint_meta()
                freezer = ctl.cgroup.freezer_dir() if ctl.state is State.SUSPENDING_PAUSED \
                    else None
                figures = await trio.to_thread.run_sync(
                    checkpoint.dump, ctl.criu, ctl.domain_dir, ctl.pid, ctl.rootfs, freezer, meta)
                await ctl.settle_console()
                try:
                    ctl.save_screen()
                except OSError:
                    traceback.print_exc()      # the one saved before the dump stays
                checkpoint.commit(ctl.domain_dir, meta)
            figures["suspend_ms"] = (time.monotonic() - started) * 1000
            figures["dumped_at"] = meta.dumped_at
            try:
                checkpoint.record(ctl.domain_dir, figures, fresh=True)
            except OSError:
                traceback.print_exc()
            dumped = True
        finally:
            ctl.outcome("dumped" if dumped else "dump_failed")
            settled.set()
        await ctl.ended.wait()
        return m.Suspended(ctl.state.value, ctl.exit_reason, ctl.console.term.text(), figures)

    # -- migration ------------------------------------------------------------------
    async def migrate(self, req: m.Migrate) -> m.MigrateRecord:
        """Move the running domain to another vzfs (migrate/source.py): reply once the
        preflight passed (or failed), go on with the move in the background, and tell
        the daemon its phases as events."""
        from ..migrate import source
        from ..migrate import target as targetmod
        ctl = self.ctl
        self._check_criu("migrate")
        target = targetmod.parse(req.target)
        ctl.begin("migrate")
        mig = source.Migration(ctl, target, ctl.server.broadcast,
                               list(req.ssh) if req.ssh else None)
        self.migration = mig
        try:
            await mig.preflight(ctl.nursery)
        except Exception:
            await self._let_go(mig, "refused")
            raise
        if req.dry_run:
            mig.record["status"] = "checked"
            await self._let_go(mig, "checked")
            return m.MigrateRecord(mig.public_record())
        ctl.outcome("passed")
        if ctl.state is not State.MIGRATING:
            # Killed during the preflight: nothing to move.
            await mig.close()
            self.migration = None
            raise VzfsError(errno.EBUSY, f"it is {states.WORDS[ctl.state]}")
        self.migration_target = str(target)
        settled = self.dump_settled = trio.Event()
        # The preflight's outcome as the first phase event, ahead of the reply (which
        # the daemon may take after the next phase's event).
        await ctl.server.broadcast(m.MigrateProgress(mig.public_record()))
        ctl.nursery.start_soon(self._move, mig, settled)
        return m.MigrateRecord(mig.public_record())

    async def _let_go(self, mig: "Migration", outcome: str) -> None:
        await mig.close()
        self.migration = None
        self.ctl.outcome(outcome)

    async def _move(self, mig: "Migration", settled: trio.Event) -> None:
        moved = False
        try:
            moved = await mig.move()
        finally:
            if not moved:
                self.migration = None
            self.ctl.outcome("moved" if moved else "undone")
            settled.set()

    async def migrate_cancel(self, req: m.MigrateCancel) -> None:
        ctl = self.ctl
        ctl.begin("migrate_cancel")
        assert self.migration is not None
        settled = self.dump_settled
        if not self.migration.cancel():
            raise VzfsError(errno.EBUSY, "it is too late: the target has all of it")
        await settled.wait()

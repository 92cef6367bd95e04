"""The source's side of a migration, run by the domain's controller.

Theory of operation
-------------------
One SSH session to the target carries everything (`mux`): the control requests
to the receiving end (`receiver`), rsync's streams and CRIU's page stream. It is
opened by the preflight, before anything changes, because each new ssh command
costs a fifth of a second here. Phases, each timed in the record that
`migrate_target` shows:

  preflight  the session, CRIU on both sides (versions, lazy restore), the name, id,
             mount sources and space free on the target. A failure changes nothing.
  reserve    the target defines the domain, `migrating`, with an empty root
  copy       rsync of the root while the domain runs
  freeze     `criu dump --lazy-pages`: the tree is stopped and dumped without its
             memory, which stays pinned for the page stream; once every task is
             stopped, the screen is saved and rsync copies what changed in the root
             since the copy, while CRIU still dumps
  transfer   the images
  restore    the target's lazy-pages daemon and `criu restore --lazy-pages`: the
             domain runs there (the downtime ends), its memory follows on demand
  pages      the rest of the memory, in the background; when the last page is
             there the dump ends the source's tree
  done       the target keeps the domain; the source forgets it

Undo: until the last page has arrived the source's tree exists (stopped while the
dump serves pages). On any failure before then (or `cancel`) the target first
removes all it made (asked to, or by itself when the session ends), then a bad
request on the page stream makes CRIU's dump fail and resume the tree as it was
(an end of the stream would be taken for success). After it, the domain lives
on the target whatever happens to the session (the receiver commits on its own).
A domain is never running on both hosts: the target's processes run only once
the source's are stopped, and are killed before the source's resume.
"""

import base64
import datetime
import errno
import itertools
import os
import shutil
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import trio

from ..base.errors import VzfsError
from ..controller import checkpoint, screenstate
from ..kernel import criu as criumod
from ..kernel.cgroups import Cgroup
from ..model import config as configmod
from ..model.idmap import IdMap
from ..model.mountspec import MountSpec
from ..wire import messages
from . import target as targetmod
from .mux import Mux

# rsync's remote shell during a migration. rsync runs `RSH HOST rsync --server ARGS…`
# and talks to its stdin and stdout; this stands in for ssh: it writes that command
# line (NUL after each word, then a newline) to the socket it inherits as fd {w},
# then copies rsync's bytes there and what comes from the socket it inherits as fd
# {r} back: the two ends of a channel of the migration's open SSH session (one socket
# per direction, so that each direction's end reaches the other side as an EOF when
# its cat exits: a shell cannot half-close a socket). The relay ends when the other
# side's rsync has (rsync waits for its remote shell). A shell and two cats start in a
# few milliseconds, where a new ssh costs 200 ms and a Python relay 30 (the delta is copied
# while the domain is frozen). bash, not sh: dash takes one-digit fds only; without
# BASH_ENV, which would have it run a start-up file of the environment's first. rsync
# splits this on spaces and keeps quoted parts whole.
RELAY = ("env -u BASH_ENV bash --noprofile --norc -c 'shift; printf \"%s\\000\" \"$@\" >&{w}; "
         "printf \"\\n\" >&{w}; cat <&0 >&{w} {r}<&- & exec cat <&{r} {w}>&-' relay")
OUT = "migration.out"              # the dump's images, in the domain's directory
LOG = "migration.log"              # CRIU's log of the dump
RESTORE_LOG = "migration-restore.log"   # the target's logs of a restore that failed
PAGES_CHANNEL = 1
# What ends a lazy dump in failure: CRIU's page server takes an end of its stream for
# the end of the transfer (and ends the tree), but an unknown command for an error,
# after which it resumes the tree as it was. Three headers of 24 bytes: whatever part
# of a request the stream held, one whole bad one follows.
BAD_PAGE_REQUEST = b"\xff" * 72
PUT_CHUNK = 512 << 10             # base64 in one message: within protocol.MAX_LINE
PROGRESS_EVERY_S = 0.25
# --timeout: a session that stalls fails the copy (and the undo runs) within a minute.
RSYNC_FLAGS = ("-aHAX", "--numeric-ids", "--delete", "--timeout=60")
# CRIU's lazy dump splices pages into pipes of up to 4 MB; without CAP_SYS_RESOURCE
# (root in these VMs lacks it) a smaller fs.pipe-max-size fails the dump (FACTS.md).
PIPE_MAX = 4 << 20
PIPE_MAX_FILE = "/proc/sys/fs/pipe-max-size"
CONNECT_TIMEOUT = 60.0
FREEZE_POLL_S = 0.001
# For fault-injection tests: a directory; the move waits before phase P while DIR/P
# exists (what CRIU_FAULT is to CRIU). Unset in normal use.
HOLD_ENV = "VZFS_MIGRATE_HOLD"
RESTORE_TIMEOUT = 600.0


def raise_pipe_max() -> None:
    try:
        with open(PIPE_MAX_FILE) as f:
            current = int(f.read())
        if current < PIPE_MAX:
            with open(PIPE_MAX_FILE, "w") as f:
                f.write(str(PIPE_MAX))
    except (OSError, ValueError):
        pass        # the dump will say what is wrong


def all_stopped(pids: list[int]) -> bool:
    """Every task of *pids* is stopped (ptrace or job control) or dead."""
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except FileNotFoundError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    state = f.read().rpartition(")")[2].split()[0]
            except (FileNotFoundError, IndexError):
                continue
            if state not in ("t", "T", "Z", "X"):
                return False
    return bool(pids)


def tree_bytes(path: str) -> int:
    """The size of the files under *path* (what rsync copies of a root)."""
    total = 0
    for top, dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(top, name)).st_size
            except OSError:
                pass
    return total


class Source(Protocol):
    """What a migration needs of the domain's controller (controller/controller.py):
    the domain as it runs, and the console's screen and the checkpoint's meta made
    as a suspend makes them."""

    @property
    def name(self) -> str: ...

    @property
    def cfg(self) -> configmod.DomainConfig: ...

    @property
    def criu(self) -> str: ...

    @property
    def rootfs(self) -> str: ...

    @property
    def domain_dir(self) -> str: ...

    @property
    def pid(self) -> int: ...

    @property
    def cgroup(self) -> Cgroup: ...

    @property
    def idmap(self) -> IdMap | None: ...

    @property
    def mounts(self) -> Sequence[MountSpec]: ...

    async def settle_console(self) -> None: ...

    def save_screen(self) -> str: ...

    def checkpoint_meta(self, netns: str = "") -> checkpoint.Meta: ...


class Migration:
    """One outgoing migration of *ctl*'s domain to *target* (module docstring); its
    phases and its end are told with *emit* (the controller's broadcast)."""

    def __init__(self, ctl: Source, target: targetmod.Target,
                 emit: Callable[[messages.Event], Awaitable[None]],
                 ssh: list[str] | None = None) -> None:
        self.ctl = ctl
        self.target = target
        self.ssh_command = ssh
        self.emit = emit
        self.record: dict[str, Any] = {
            "target": str(target), "status": "migrating", "phase": "preflight",
            "started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="milliseconds").replace("+00:00", "Z")}
        self.phase_started = time.monotonic()
        self.started = time.monotonic()
        self.mux: Mux | None = None
        self.ssh: trio.Process | None = None
        self.ssh_errors: list[str] = []
        self.scope = trio.CancelScope()          # the session's
        self.move_scope = trio.CancelScope()     # the move's (cancel)
        self.session_over = trio.Event()
        self.channels = itertools.count(PAGES_CHANNEL + 1)
        self.reserved = False
        self.dump: trio.Process | None = None
        self.pages_stream: trio.SocketStream | None = None
        self.pages_complete = False
        self.pages_over = trio.Event()          # complete, or failed (pages_error says why)
        self.pages_error = ""
        self.progress: tuple[int, int] = (0, 0)     # (bytes done, bytes in all) of the phase
        self.progress_channel = 0
        self.last_emit = 0.0

    # -- the record ---------------------------------------------------------------
    def public_record(self) -> dict[str, Any]:
        out = dict(self.record)
        done, total = self.progress
        if self.record.get("status") == "migrating" and total:
            out["bytes_done"] = done
            out["bytes_total"] = total
            out["percent"] = min(99, int(done * 100 / total)) if done < total else 100
        return out

    def _end_phase(self) -> None:
        """Record how long the current phase took."""
        now = time.monotonic()
        self.record[f"{self.record['phase']}_ms"] = round((now - self.phase_started) * 1000, 1)
        self.phase_started = now

    async def _phase(self, name: str) -> None:
        self._end_phase()
        self.record["phase"] = name
        self.progress = (0, 0)
        self.progress_channel = 0
        await self.emit(messages.MigrateProgress(self.public_record()))
        hold = os.environ.get(HOLD_ENV)
        if hold and self.record.get("status") == "migrating":
            while os.path.exists(os.path.join(hold, name)):
                await trio.sleep(0.02)

    async def _report_progress(self) -> None:
        while True:
            await trio.sleep(PROGRESS_EVERY_S)
            if self.mux is not None and self.progress_channel and \
                    self.record.get("status") == "migrating":
                _, total = self.progress
                self.progress = (self.mux.sent[self.progress_channel], total)
                await self.emit(messages.MigrateProgress(self.public_record()))

    def _what(self) -> str:
        return f"{self.record['phase']} failed"

    # -- the session ----------------------------------------------------------------
    async def preflight(self, nursery: trio.Nursery) -> None:
        ctl = self.ctl
        await nursery.start(self._session)
        assert self.mux is not None
        info = await self._ask("info", timeout=CONNECT_TIMEOUT)
        if info.get("criu_error"):
            raise VzfsError(errno.ENOTSUP, f"preflight failed: the target has no usable CRIU "
                                           f"({info['criu_error']})")
        if info.get("lazy_error"):
            raise VzfsError(errno.ENOTSUP, f"preflight failed: {info['lazy_error']}")
        try:
            ours = criumod.parse_version(criumod.version(ctl.criu))
            theirs = criumod.parse_version(str(info.get("criu_version", "")))
        except ValueError:
            ours, theirs = (1,), (0,)
        if theirs[:1] != ours[:1] or theirs < ours:
            raise VzfsError(errno.ENOTSUP, f"preflight failed: the target's CRIU "
                                           f"{info.get('criu_version')} cannot restore what "
                                           f"CRIU {criumod.version(ctl.criu)} dumps here")
        self.root_bytes = await trio.to_thread.run_sync(tree_bytes, ctl.rootfs)
        self.memory_bytes = ctl.cgroup.stats().get("memory_bytes", 0)
        mounts = [m.to_json() for m in ctl.mounts]
        await self._ask("check", name=ctl.name, id_=ctl.cfg.id, mounts=mounts,
                        need_bytes=self.root_bytes + self.memory_bytes)
        self.record["kernel"] = info.get("kernel", "")

    async def _session(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The ssh process and the mux over it, until close() or the session ends."""
        ours, theirs = socket.socketpair()
        argv = targetmod.ssh_argv(self.target, targetmod.receiver_command(self.target),
                                  self.ssh_command)
        with self.scope:
            try:
                self.ssh = await trio.lowlevel.open_process(
                    argv, stdin=theirs.fileno(), stdout=theirs.fileno(), stderr=subprocess.PIPE,
                    start_new_session=True)
            except OSError as exc:
                ours.close()
                raise VzfsError(errno.ENOENT, f"preflight failed: cannot run {argv[0]} "
                                              f"({exc.strerror or exc})") from exc
            finally:
                theirs.close()
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
            self.mux = Mux(stream, stream, on_event=self._on_event)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read_ssh_errors)
                await nursery.start(self.mux.run)
                nursery.start_soon(self._report_progress)
                task_status.started()
                await self.mux.closed.wait()
                nursery.cancel_scope.cancel()
        # ssh's exit status says why the session ended (97: no vzfs there): reaped
        # before anyone is told it is over.
        if self.ssh is not None:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(5):
                    await self.ssh.wait()
                if self.ssh.returncode is None:
                    self.ssh.kill()
                    await self.ssh.wait()
        self.session_over.set()

    async def _read_ssh_errors(self) -> None:
        assert self.ssh is not None and self.ssh.stderr is not None
        buf = b""
        async for data in self.ssh.stderr:
            buf = (buf + data)[-8192:]
            self.ssh_errors = [line.strip() for line in buf.decode(errors="replace").splitlines()
                               if line.strip()][-3:]

    def _on_event(self, msg: dict[str, Any]) -> None:
        if msg.get("event") == "pages_complete":
            self.pages_complete = True
            self.pages_over.set()
        elif msg.get("event") == "pages_failed":
            self.pages_error = str(msg.get("error", ""))
            self.pages_over.set()

    async def _ask(self, op: str, timeout: float = 60.0, **fields: Any) -> dict[str, Any]:
        assert self.mux is not None
        try:
            return await self.mux.request(self._what(), op, timeout=timeout, **fields)
        except VzfsError as exc:
            if self.mux.closed.is_set():
                # Say why the session ended: ssh's own words, or the receiver's.
                with trio.move_on_after(2):
                    await self.session_over.wait()
                said = "; ".join(self.ssh_errors)
                code = self.ssh.returncode if self.ssh is not None else None
                if code == targetmod.NO_VZFS_EXIT:
                    raise VzfsError(errno.ENOENT, f"{self._what()}: {said or 'no vzfs serves '}"
                                    f"{'' if said else self.target.mountpoint} on "
                                    f"{self.target.host}") from exc
                raise VzfsError(errno.EHOSTUNREACH if self.record["phase"] == "preflight"
                                else errno.EIO,
                                f"{self._what()}: the SSH session to {self.target.host} ended"
                                + (f" ({said})" if said else
                                   f" (ssh exit status {code})" if code else "")) from exc
            raise

    async def close(self) -> None:
        if self.mux is not None:
            await self.mux.close()
        with trio.move_on_after(5):
            await self.session_over.wait()
        self.scope.cancel()

    # -- the move -------------------------------------------------------------------
    async def move(self) -> bool:
        """The phases after the preflight; True when the domain runs on the target."""
        ctl = self.ctl
        try:
            with self.move_scope:
                await self._steps()
            if self.move_scope.cancelled_caught:
                raise VzfsError(errno.ECANCELED, f"{self._what()}: cancelled "
                                                 "(cancel written to migrate_target)")
        except (VzfsError, OSError) as exc:
            sentence = exc.sentence if isinstance(exc, VzfsError) else \
                f"{self._what()}: {exc.strerror or exc}"
            await self._undo(sentence)
            return False
        except Exception as exc:
            # A bug here must cost the migration, never the domain (the controller
            # would go with it): undo like any failure, and keep the traceback.
            traceback.print_exc()
            await self._undo(f"{self._what()}: internal error ({exc!r}; see controller.log)")
            return False
        # The dump ended the tree here: the domain lives on the target.
        await self._phase("done")
        self.record["status"] = "done"
        self.record["total_ms"] = round((time.monotonic() - self.started) * 1000, 1)
        try:
            # CRIU's log of the dump goes with the domain (the target keeps it as LOG).
            with open(os.path.join(ctl.domain_dir, LOG), "rb") as f:
                await self._put([(LOG, f.read()[-PUT_CHUNK:], False)])
        except (OSError, VzfsError):
            pass
        try:
            await self._ask("commit", record={**self.public_record(), "source_host":
                                              os.uname().nodename, "direction": "in"})
        except VzfsError:
            pass          # the receiver commits by itself once it has every page
        await self.close()
        shutil.rmtree(os.path.join(ctl.domain_dir, OUT), ignore_errors=True)
        await self.emit(messages.MigrateProgress(self.public_record()))
        return True

    def cancel(self) -> bool:
        """Stop the move and undo it; False once it is past undoing (the target has
        every page of the domain's memory)."""
        if self.pages_complete or self.record.get("status") != "migrating":
            return False
        self.move_scope.cancel()
        return True

    async def _steps(self) -> None:
        ctl = self.ctl
        await self._phase("reserve")
        reply = await self._ask("reserve", name=ctl.name, config=configmod.to_dict(ctl.cfg),
                                source=os.uname().nodename)
        self.reserved = True
        self.remote_root = str(reply["rootfs"])
        await self._phase("copy")
        self.progress = (0, self.root_bytes)
        await self._rsync()
        await self._phase("freeze")
        self.frozen = trio.Event()
        async with trio.open_nursery() as nursery:
            dump_started = await self._start_dump()
            # The root's delta as soon as every process is stopped, while CRIU still
            # dumps; the images, and the target's lazy-pages daemon (which reads
            # them), once the dump has written them.
            nursery.start_soon(self._watch_freeze)
            nursery.start_soon(self._delta)
            await self._dump_written()
            await self._phase("transfer")
            await self._images_and_lazy()
        await self._phase("restore")
        await self._timed("criu_restore_ms", self._ask("restore", timeout=RESTORE_TIMEOUT))
        self.record["downtime_ms"] = round((time.monotonic() - dump_started) * 1000, 1)
        await self._phase("pages")
        self.progress = (0, self.memory_bytes)
        self.progress_channel = PAGES_CHANNEL
        await self._wait_dump()

    async def _timed(self, key: str, step: Awaitable[Any]) -> None:
        started = time.monotonic()
        await step
        self.record[key] = round((time.monotonic() - started) * 1000, 1)

    async def _rsync(self) -> None:
        """rsync the root to the reserved one on the target, through the session."""
        assert self.mux is not None
        ctl = self.ctl
        channel = next(self.channels)
        from_rsync, relay_w = socket.socketpair()
        to_rsync, relay_r = socket.socketpair()
        rsh = RELAY.format(w=relay_w.fileno(), r=relay_r.fileno())
        argv = ["rsync", *RSYNC_FLAGS, "--rsh", rsh, ctl.rootfs.rstrip("/") + "/",
                f"target:{self.remote_root}/"]
        try:
            proc = await trio.lowlevel.open_process(
                argv, pass_fds=(relay_w.fileno(), relay_r.fileno()), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        finally:
            relay_w.close()
            relay_r.close()
        stream = trio.StapledStream(
            trio.SocketStream(trio.socket.from_stdlib_socket(to_rsync)),
            trio.SocketStream(trio.socket.from_stdlib_socket(from_rsync)))
        errors = b""
        try:
            first = b""
            while b"\n" not in first:
                data = await stream.receive_some(65536)
                if not data:
                    break
                first += data
            line, _, rest = first.partition(b"\n")
            if line:
                await self._ask("rsync", channel=channel,
                                argv=line.decode().rstrip("\0").split("\0"))
                self.mux.bind(channel, stream, prefix=rest)
                if self.record["phase"] == "copy":
                    self.progress_channel = channel
            assert proc.stderr is not None
            async for data in proc.stderr:
                errors = (errors + data)[-4096:]
            code = await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                with trio.CancelScope(shield=True):
                    await proc.wait()
        if code != 0:
            said = [line.strip() for line in errors.decode(errors="replace").splitlines()
                    if line.strip()]
            try:
                # The receiving side knows why, when it was its disk or its files.
                remote = await self._ask("rsync_status", channel=channel, timeout=10)
                said = [f"on the target: {line}" for line in remote.get("said", [])
                        if "error" in line.lower() or "failed" in line.lower()] + said
            except VzfsError:
                pass
            raise VzfsError(errno.ENOSPC if any("No space left" in s for s in said) else errno.EIO,
                            f"{self._what()}: rsync of its root exited with status {code}"
                            + (f" ({said[0]})" if said else ""))

    async def _watch_freeze(self) -> None:
        """Set `frozen` once CRIU has stopped every task of the domain (they stay so
        until the dump ends: the parasite it runs in them writes no files)."""
        cgroup = self.ctl.cgroup
        while not self.frozen.is_set():
            if all_stopped(cgroup.procs()):
                self.frozen.set()
                return
            await trio.sleep(FREEZE_POLL_S)

    async def _delta(self) -> None:
        await self.frozen.wait()
        started = time.monotonic()
        # What the console shows now is what it shows there (saved on the root).
        await self.ctl.settle_console()
        self.ctl.save_screen()
        await self._rsync()
        self.record["delta_ms"] = round((time.monotonic() - started) * 1000, 1)

    async def _start_dump(self) -> float:
        """Start CRIU's lazy dump; return the moment it started."""
        assert self.mux is not None
        ctl = self.ctl
        raise_pipe_max()
        out = os.path.join(ctl.domain_dir, OUT)
        shutil.rmtree(out, ignore_errors=True)
        os.mkdir(out, 0o700)
        log = os.path.join(ctl.domain_dir, LOG)
        meta = ctl.checkpoint_meta(
            # A fresh network namespace handed in at restore would be the host's user
            # namespace's: an unprivileged domain's must be the one CRIU restores, owned
            # by its own user namespace, so CRIU dumps it.
            netns="" if ctl.idmap is not None else checkpoint.plain_netns(ctl.pid))
        self.meta = meta
        ours, theirs = socket.socketpair()
        rfd, wfd = os.pipe()
        started = time.monotonic()
        try:
            with open(log, "wb") as logf:
                self.dump = await trio.lowlevel.open_process(
                    checkpoint.lazy_dump_args(ctl.criu, ctl.pid, out, log, ctl.rootfs, meta,
                                              theirs.fileno(), wfd),
                    pass_fds=(theirs.fileno(), wfd), stdin=subprocess.DEVNULL,
                    stdout=logf, stderr=subprocess.STDOUT, cwd=out)
        except BaseException:
            ours.close()
            os.close(rfd)
            raise
        finally:
            theirs.close()
            os.close(wfd)
        self.pages_stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
        self.status_fd = rfd
        self.dump_started = started
        return started

    async def _dump_written(self) -> None:
        """Until CRIU says its images are complete (the tree is stopped)."""
        assert self.mux is not None and self.dump is not None
        if not await criumod.ready(self.status_fd):
            await self.dump.wait()
            log = os.path.join(self.ctl.domain_dir, LOG)
            raise VzfsError(errno.EIO, f"{self._what()}: CRIU could not checkpoint it: "
                                       f"{checkpoint.reasons(log)} (its log is {LOG})")
        self.record["dump_ms"] = round((time.monotonic() - self.dump_started) * 1000, 1)
        self.frozen.set()
        assert self.pages_stream is not None        # made with the session (_connect)
        self.mux.bind(PAGES_CHANNEL, self.pages_stream, keep=True)

    async def _images_and_lazy(self) -> None:
        await self._timed("images_ms", self._send_images())
        await self._timed("lazy_ms", self._ask("lazy", channel=PAGES_CHANNEL))

    async def _send_images(self) -> None:
        """The dump's images (a few hundred KB in some 40 files: the memory is not in
        them) to the target, packed into as few requests as fit (each a round trip)."""
        out = os.path.join(self.ctl.domain_dir, OUT)
        pieces: list[tuple[str, bytes, bool]] = [
            (checkpoint.META, self.meta.to_json().encode(), False)]
        for entry in os.scandir(out):
            if entry.is_file(follow_symlinks=False) and not entry.name.endswith(".log"):
                with open(entry.path, "rb") as f:
                    data = f.read(PUT_CHUNK)
                    pieces.append((entry.name, data, False))
                    while data := f.read(PUT_CHUNK):
                        pieces.append((entry.name, data, True))
        batch: list[tuple[str, bytes, bool]] = []
        size = 0
        for piece in pieces:
            if batch and size + len(piece[1]) > PUT_CHUNK:
                await self._put(batch)
                batch, size = [], 0
            batch.append(piece)
            size += len(piece[1])
        await self._put(batch)

    async def _put(self, pieces: list[tuple[str, bytes, bool]]) -> None:
        await self._ask("put", files=[{"file": name, "append": append,
                                       "data": base64.b64encode(data).decode()}
                                      for name, data, append in pieces])

    async def _wait_dump(self) -> None:
        """Until the target has every page; then end the page stream, which ends the
        dump (and with it the tree here)."""
        assert self.dump is not None and self.mux is not None
        dump = self.dump
        async with trio.open_nursery() as nursery:
            async def dump_ended() -> None:
                await dump.wait()
                nursery.cancel_scope.cancel()

            async def session_ended() -> None:
                assert self.mux is not None
                await self.mux.closed.wait()
                # An event may still be on its way in: the receiver's last words.
                await trio.sleep(0.05)
                self.pages_over.set()

            nursery.start_soon(dump_ended)
            nursery.start_soon(session_ended)
            await self.pages_over.wait()
            nursery.cancel_scope.cancel()
        if dump.returncode is None:
            if not self.pages_complete:
                raise VzfsError(errno.EIO, f"{self._what()}: "
                                + (f"the target could not take the memory ({self.pages_error})"
                                   if self.pages_error else
                                   f"the SSH session to {self.target.host} ended"))
            if self.pages_stream is not None:
                await self.pages_stream.aclose()
            await dump.wait()
        if dump.returncode == 0:
            return                 # the tree here is gone: the domain runs there
        if self.pages_complete:
            # CRIU failed after the last page and resumed the tree here, but the target
            # has it all and runs it: ours must not come back.
            print(f"vzfs: {self.ctl.name}: the dump failed after the target had every page; "
                  "ending the tree here", file=sys.stderr, flush=True)
            self.ctl.cgroup.kill_all()
            return
        raise VzfsError(errno.EIO, f"{self._what()}: CRIU's dump ended with status "
                        f"{dump.returncode}: "
                        f"{checkpoint.reasons(os.path.join(self.ctl.domain_dir, LOG))}")

    async def _undo(self, sentence: str) -> None:
        """Put everything back: the tree runs here as before, the target has nothing."""
        ctl = self.ctl
        with trio.CancelScope(shield=True):
            self.record["status"] = "failed"
            self.record["error"] = sentence
            if self.reserved and self.mux is not None and not self.mux.closed.is_set():
                # First the target's processes go, then ours may run again.
                try:
                    logs = await self._ask("abort", reason=sentence, timeout=30)
                except VzfsError:
                    logs = {}
                if logs.get("restore_log") or logs.get("lazy_log"):
                    # The target's logs of a failed restore (its copy goes with the undo).
                    try:
                        with open(os.path.join(ctl.domain_dir, RESTORE_LOG), "w") as f:
                            f.write(str(logs.get("restore_log", "")))
                            if logs.get("lazy_log"):
                                f.write("\n--- CRIU lazy-pages ---\n" + str(logs["lazy_log"]))
                    except OSError:
                        pass
            if self.dump is not None and self.dump.returncode is None:
                # A bad request on the page stream: CRIU's dump fails and resumes the tree.
                if self.pages_stream is not None:
                    try:
                        await self.pages_stream.send_all(BAD_PAGE_REQUEST)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass
                    await self.pages_stream.aclose()
                with trio.move_on_after(30):
                    await self.dump.wait()
                if self.dump.returncode is None:
                    self.dump.kill()
                    await self.dump.wait()
            await self.close()
            try:
                with screenstate.root(ctl.rootfs) as root_fd:
                    screenstate.remove(root_fd)
            except OSError:
                pass
            shutil.rmtree(os.path.join(ctl.domain_dir, OUT), ignore_errors=True)
            self._end_phase()
            await self.emit(messages.MigrateFailed(sentence, self.public_record()))

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
             memory, which stays pinned for the page stream; the screen is saved
  transfer   rsync of what changed in the root since the copy, and the images
  restore    the target's lazy-pages daemon and `criu restore --lazy-pages`: the
             domain runs there (the downtime ends), its memory follows on demand
  pages      the rest of the memory, in the background; when the last page is
             there the dump ends the source's tree
  done       the target keeps the domain; the source forgets it

Undo: until the last page has arrived the source's tree exists (stopped while the
dump serves pages). Any failure before then closes the page stream, which makes
CRIU's dump fail and resume the tree as it was, and the target removes all it
made (asked to, or by itself when the session ends). After it, the domain lives
on the target whatever happens to the session (the receiver commits on its own).
A domain is never running on both hosts: the target's processes run only once
the source's are stopped, and are killed before the source's resume.
"""

import base64
import errno
import itertools
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from .. import config as configmod
from .. import criu as criumod
from ..controller import checkpoint, screenstate
from ..errors import VzfsError
from . import target as targetmod
from .mux import Mux

RELAY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "relay.py")
OUT = "migration.out"              # the dump's images, in the domain's directory
LOG = "migration.log"              # CRIU's log of the dump
PAGES_CHANNEL = 1
PUT_CHUNK = 256 << 10
PROGRESS_EVERY_S = 0.25
RSYNC_FLAGS = ("-aHAX", "--numeric-ids", "--delete")
# CRIU's lazy dump splices pages into pipes of up to 4 MB; without CAP_SYS_RESOURCE
# (root in these VMs lacks it) a smaller fs.pipe-max-size fails the dump (FACTS.md).
PIPE_MAX = 4 << 20
PIPE_MAX_FILE = "/proc/sys/fs/pipe-max-size"
CONNECT_TIMEOUT = 60.0
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


def tree_bytes(path: str) -> int:
    total = 0
    for top, dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(top, name)).st_size
            except OSError:
                pass
    return total


class Migration:
    def __init__(self, ctl: Any, target: targetmod.Target,
                 emit: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        self.ctl = ctl
        self.target = target
        self.emit = emit
        self.record: dict[str, Any] = {"target": str(target), "status": "migrating",
                                       "phase": "preflight", "started_at": round(time.time(), 3)}
        self.phase_started = time.monotonic()
        self.started = time.monotonic()
        self.mux: Mux | None = None
        self.ssh: trio.Process | None = None
        self.ssh_errors: list[str] = []
        self.scope = trio.CancelScope()
        self.session_over = trio.Event()
        self.channels = itertools.count(PAGES_CHANNEL + 1)
        self.reserved = False
        self.dump: trio.Process | None = None
        self.pages_stream: trio.SocketStream | None = None
        self.pages_complete = False
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

    async def _phase(self, name: str) -> None:
        now = time.monotonic()
        previous = self.record["phase"]
        self.record[f"{previous}_ms"] = round((now - self.phase_started) * 1000, 1)
        self.record["phase"] = name
        self.phase_started = now
        self.progress = (0, 0)
        self.progress_channel = 0
        await self.emit({"event": "migrate", "record": self.public_record()})
        hold = os.environ.get(HOLD_ENV)
        if hold and self.record.get("status") == "migrating":
            while os.path.exists(os.path.join(hold, name)):
                await trio.sleep(0.02)

    async def _report_progress(self) -> None:
        while True:
            await trio.sleep(PROGRESS_EVERY_S)
            if self.mux is not None and self.progress_channel:
                _, total = self.progress
                self.progress = (self.mux.sent[self.progress_channel], total)
                await self.emit({"event": "migrate", "record": self.public_record()})

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
        mounts = [{"source": m.source, "target": m.target} for m in ctl.mounts]
        await self._ask("check", name=ctl.name, id_=ctl.cfg.id, mounts=mounts,
                        need_bytes=self.root_bytes + self.memory_bytes)
        self.record["kernel"] = info.get("kernel", "")

    async def _session(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The ssh process and the mux over it, until close() or the session ends."""
        ours, theirs = socket.socketpair()
        argv = targetmod.ssh_argv(self.target, targetmod.receiver_command(self.target))
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
        self.session_over.set()
        if self.ssh is not None:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(5):
                    await self.ssh.wait()
                if self.ssh.returncode is None:
                    self.ssh.kill()
                    await self.ssh.wait()

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
            await self._phase("reserve")
            reply = await self._ask("reserve", name=ctl.name, config=configmod.to_dict(ctl.cfg))
            self.reserved = True
            self.remote_root = str(reply["rootfs"])
            await self._phase("copy")
            self.progress = (0, self.root_bytes)
            await self._rsync()
            await self._phase("freeze")
            dump_started = await self._dump()
            await self._phase("transfer")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._rsync)
                nursery.start_soon(self._send_images)
            await self._phase("restore")
            await self._ask("lazy", channel=PAGES_CHANNEL)
            await self._ask("restore", timeout=RESTORE_TIMEOUT)
            self.record["downtime_ms"] = round((time.monotonic() - dump_started) * 1000, 1)
            await self._phase("pages")
            self.progress = (0, self.memory_bytes)
            self.progress_channel = PAGES_CHANNEL
            await self._wait_dump()
        except (VzfsError, OSError) as exc:
            sentence = exc.sentence if isinstance(exc, VzfsError) else \
                f"{self._what()}: {exc.strerror or exc}"
            await self._undo(sentence)
            return False
        # The dump ended the tree here: the domain lives on the target.
        await self._phase("done")
        self.record["status"] = "done"
        self.record["total_ms"] = round((time.monotonic() - self.started) * 1000, 1)
        try:
            await self._ask("commit", record={**self.public_record(), "source_host":
                                              os.uname().nodename, "direction": "in"})
        except VzfsError:
            pass          # the receiver commits by itself once it has every page
        await self.close()
        shutil.rmtree(os.path.join(ctl.domain_dir, OUT), ignore_errors=True)
        await self.emit({"event": "migrate", "record": self.public_record()})
        return True

    async def _rsync(self) -> None:
        """rsync the root to the reserved one on the target, through the session."""
        assert self.mux is not None
        ctl = self.ctl
        channel = next(self.channels)
        ours, theirs = socket.socketpair()
        rsh = f"{sys.executable} -S {RELAY} {theirs.fileno()}"
        argv = ["rsync", *RSYNC_FLAGS, "--rsh", rsh, ctl.rootfs.rstrip("/") + "/",
                f"target:{self.remote_root}/"]
        try:
            proc = await trio.lowlevel.open_process(
                argv, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        finally:
            theirs.close()
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
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
                await self._ask("rsync", channel=channel, argv=line.decode().split("\0"))
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
            said = [line for line in errors.decode(errors="replace").splitlines() if line.strip()]
            raise VzfsError(errno.EIO, f"{self._what()}: rsync of its root exited with status "
                                       f"{code}" + (f" ({said[-1].strip()})" if said else ""))

    async def _dump(self) -> float:
        """Start CRIU's lazy dump; return when its images are complete (the tree is
        stopped), with the moment it started."""
        assert self.mux is not None
        ctl = self.ctl
        raise_pipe_max()
        out = os.path.join(ctl.domain_dir, OUT)
        shutil.rmtree(out, ignore_errors=True)
        os.mkdir(out, 0o700)
        log = os.path.join(ctl.domain_dir, LOG)
        meta = checkpoint.Meta(
            console_key=checkpoint.tty_key(os.fstat(ctl.slave)), devtty_key=ctl._devtty_key(),
            mounts=tuple(ctl.mounts), columns=ctl.columns, lines=ctl.lines,
            vnc_prefer=dict(ctl.vnc_prefer), dumped_at=time.time())
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
        finally:
            theirs.close()
            os.close(wfd)
        self.pages_stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
        try:
            await trio.lowlevel.wait_readable(rfd)
            ready = os.read(rfd, 1)
        finally:
            os.close(rfd)
        if not ready:
            await self.dump.wait()
            raise VzfsError(errno.EIO, f"{self._what()}: CRIU could not checkpoint it: "
                                       f"{checkpoint.reasons(log)} (its log is {LOG})")
        self.mux.bind(PAGES_CHANNEL, self.pages_stream)
        # The tree is stopped: what the console shows now is what it shows there.
        await ctl._settle_console()
        ctl._save_screen()
        return started

    async def _send_images(self) -> None:
        out = os.path.join(self.ctl.domain_dir, OUT)
        for entry in sorted(os.scandir(out), key=lambda e: e.name):
            if not entry.is_file(follow_symlinks=False) or entry.name.endswith(".log"):
                continue
            with open(entry.path, "rb") as f:
                first = True
                while True:
                    chunk = f.read(PUT_CHUNK)
                    if not chunk and not first:
                        break
                    await self._ask("put", file=entry.name, append=not first,
                                    data=base64.b64encode(chunk).decode())
                    first = False
                    if not chunk:
                        break
        await self._ask("put", file=checkpoint.META, append=False,
                        data=base64.b64encode(self.meta.to_json().encode()).decode())

    async def _wait_dump(self) -> None:
        assert self.dump is not None
        code = await self.dump.wait()
        if code != 0 and not self.pages_complete:
            raise VzfsError(errno.EIO, f"{self._what()}: CRIU's dump ended with status {code}: "
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
                    await self._ask("abort", reason=sentence, timeout=30)
                except VzfsError:
                    pass
            if self.dump is not None and self.dump.returncode is None:
                # The page stream ends: CRIU's dump fails and resumes the tree.
                if self.pages_stream is not None:
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
            await self._phase(self.record["phase"])
            await self.emit({"event": "migrate_failed", "error": sentence,
                             "record": self.public_record()})

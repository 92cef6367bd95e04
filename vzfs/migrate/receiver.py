"""The receiving end of a migration: `vzfs migrate-receive MOUNTPOINT`, started by the
source over SSH on the target host.

It speaks `mux` on its stdin and stdout (the SSH session) and asks the daemon
serving MOUNTPOINT for each step (`incoming`). It runs the processes that must
be on the target's side of the session: `rsync --server` for the root, and
CRIU's lazy-pages daemon, which fetches the domain's memory from the source's
dump as the restored processes touch it and in the background until all of it
is here. Everything it makes is removed again unless the migration completes:
when the session ends early, or a step fails, the source still has the domain.
"""

import base64
import errno
import fcntl
import os
import re
import socket
import subprocess
import sys
from typing import Any

import trio

from ..base.errors import VzfsError
from ..controller import checkpoint
from ..kernel import criu as criumod
from ..wire.framing import Decoder, Message
from ..wire.requests import Connection
from . import incoming
from .mux import Mux

_IMAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")
LAZY_LOG = "lazy-pages.log"
F_SETPIPE_SZ = 1031
PIPE_SIZE = 1 << 20
COMMIT_WAIT_S = 5.0
RSYNC_WAIT_S = 5.0
LOG_TAIL = 256 << 10


def state_dir_of(mountpoint: str) -> str:
    try:
        with open(os.path.join(mountpoint, "version")) as f:
            for line in f:
                key, _, value = line.rstrip("\n").partition(" ")
                if key == "state_dir":
                    return value
    except OSError as exc:
        raise VzfsError(errno.ENOENT, f"no vzfs serves {mountpoint} here ({exc.strerror})") from exc
    raise VzfsError(errno.EIO, f"the vzfs at {mountpoint} does not name its state dir")


class Receiver:
    def __init__(self, state_dir: str) -> None:
        self.state_dir = state_dir
        self.name = ""
        self.rootfs = ""
        self.images = ""
        self.done = False              # committed or aborted: nothing left to undo
        self.pages_complete = False
        self.committed = False
        self.record: dict[str, Any] = {}
        self.lazy: trio.Process | None = None
        self.procs: list[trio.Process] = []
        self.commit_asked = trio.Event()
        self.rsyncs: dict[int, tuple[trio.Process, trio.Event, list[str]]] = {}

    async def main(self) -> None:
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            await sock.connect(incoming.socket_path(self.state_dir))
        except OSError as exc:
            raise VzfsError(errno.ECONNREFUSED, f"the vzfs daemon of {self.state_dir} does not "
                                                f"answer ({exc.strerror})") from exc
        self.daemon = Connection(trio.SocketStream(sock), Decoder(), lambda msg: None,
                                 lost="lost the connection to the daemon",
                                 gone="the daemon went away", silent="the daemon did not answer")
        # The session is our stdin and stdout; nothing else may write to fd 1. sshd
        # gives pipes: larger ones carry the page stream in fewer, bigger reads.
        for fd in (0, 1):
            try:
                fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)
            except OSError:
                pass            # not a pipe, or over fs.pipe-max-size: as it is
        send = trio.lowlevel.FdStream(os.dup(1))
        receive = trio.lowlevel.FdStream(os.dup(0))
        os.dup2(2, 1)
        self.mux = Mux(send, receive, handler=self.handle)
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            nursery.start_soon(self.daemon.run)
            await self.mux.run()
            with trio.CancelScope(shield=True):
                await self.finish("the SSH session from the source ended")
            nursery.cancel_scope.cancel()

    async def ask(self, what: str, op: str, timeout: float = 60.0, **fields: Any) -> dict[str, Any]:
        reply = await self.daemon.request(what, op, timeout, fields)
        return {k: v for k, v in reply.items() if k not in ("id", "ok")}

    async def handle(self, msg: Message) -> dict[str, Any]:
        op = msg.get("op")
        what = f"the target cannot {op}"
        if op == "info":
            return await self.ask(what, "info")
        if op == "check":
            return await self.ask(what, "check", name=msg.get("name"), id_=msg.get("id_"),
                                  mounts=msg.get("mounts", []), need_bytes=msg.get("need_bytes", 0))
        if op == "reserve":
            if self.name:
                raise VzfsError(errno.EBUSY, "one domain per session")
            reply = await self.ask(what, "reserve", name=msg.get("name"), config=msg.get("config"),
                                   source=msg.get("source", ""))
            self.name, self.rootfs, self.images = str(msg["name"]), reply["rootfs"], reply["images"]
            return reply
        if not self.name:
            raise VzfsError(errno.EINVAL, f"{what}: no domain was reserved")
        if op == "rsync":
            await self.rsync(int(msg["channel"]), [str(w) for w in msg["argv"]])
            return {}
        if op == "rsync_status":
            return await self.rsync_status(int(msg["channel"]))
        if op == "put":
            for piece in msg["files"]:
                self.put(str(piece["file"]), base64.b64decode(piece["data"]),
                         bool(piece.get("append")))
            return {}
        if op == "lazy":
            await self.start_lazy(int(msg["channel"]))
            return {}
        if op == "restore":
            return await self.ask(what, "restore", timeout=600, name=self.name)
        if op == "commit":
            self.record = dict(msg.get("record") or {})
            self.commit_asked.set()
            await self.commit()
            return {}
        if op == "abort":
            return await self.abort(str(msg.get("reason", "the source gave up")))
        raise VzfsError(errno.EINVAL, f"unknown request {op!r}")

    # -- the root: rsync --server on our side of the session -------------------
    async def rsync(self, channel: int, argv: list[str]) -> None:
        """Start the receiving rsync the source's rsync asked for, writing into the
        reserved root whatever destination it named (and never sending: no --sender)."""
        if len(argv) < 3 or argv[0] != "rsync" or argv[1] != "--server" or "--sender" in argv:
            raise VzfsError(errno.EPERM, f"not a receiving rsync: {' '.join(argv)[:200]}")
        argv = argv[:-1] + [self.rootfs + "/"]
        ours, theirs = socket.socketpair()
        try:
            proc = await trio.lowlevel.open_process(argv, stdin=theirs.fileno(),
                                                    stdout=theirs.fileno(), cwd=self.rootfs,
                                                    stderr=subprocess.PIPE)
        finally:
            theirs.close()
        self.procs.append(proc)
        self.mux.bind(channel, trio.SocketStream(trio.socket.from_stdlib_socket(ours)))
        done = trio.Event()
        self.rsyncs[channel] = (proc, done, [])
        self.nursery.start_soon(self._reap_rsync, proc, done, self.rsyncs[channel][2])

    async def _reap_rsync(self, proc: trio.Process, done: trio.Event, said: list[str]) -> None:
        """Keep what the receiving rsync says (why it failed: a full disk is only told
        here, the sending one just sees the stream end)."""
        assert proc.stderr is not None
        buf = b""
        async for data in proc.stderr:
            buf = (buf + data)[-4096:]
        said[:] = [line.strip() for line in buf.decode(errors="replace").splitlines()
                   if line.strip()]
        await proc.wait()
        done.set()

    async def rsync_status(self, channel: int) -> dict[str, Any]:
        entry = self.rsyncs.get(channel)
        if entry is None:
            raise VzfsError(errno.ENOENT, f"no rsync on channel {channel}")
        proc, done, said = entry
        with trio.move_on_after(RSYNC_WAIT_S):
            await done.wait()
        return {"code": proc.returncode, "said": said[-3:]}

    # -- the images ---------------------------------------------------------------
    def put(self, name: str, data: bytes, append: bool) -> None:
        if not _IMAGE_NAME.fullmatch(name):
            raise VzfsError(errno.EINVAL, f"{name!r} is not an image name")
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        flags |= os.O_APPEND if append else os.O_TRUNC
        dir_fd = os.open(self.images, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)

    # -- the memory: CRIU's lazy-pages daemon ---------------------------------------
    async def start_lazy(self, channel: int) -> None:
        criu = criumod.find()
        log = os.path.join(self.images, LAZY_LOG)
        ours, theirs = socket.socketpair()
        rfd, wfd = os.pipe()
        try:
            self.lazy = await trio.lowlevel.open_process(
                [criu, "lazy-pages", "-D", self.images, "-o", log, "-v4", "--page-server",
                 "--ps-socket", str(theirs.fileno()), "--status-fd", str(wfd)],
                pass_fds=(theirs.fileno(), wfd), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.images)
        finally:
            theirs.close()
            os.close(wfd)
        self.mux.bind(channel, trio.SocketStream(trio.socket.from_stdlib_socket(ours)))
        if not await criumod.ready(rfd):
            await self.lazy.wait()
            raise VzfsError(errno.EIO, f"CRIU's lazy-pages daemon did not start: "
                                       f"{checkpoint.reasons(log)}")
        self.nursery.start_soon(self._watch_lazy, self.lazy, log)

    async def _watch_lazy(self, proc: trio.Process, log: str) -> None:
        code = await proc.wait()
        if self.done:
            return
        if code == 0:
            # Every page is here, so the source's dump is complete and ends the
            # domain there: from now on it lives here, whatever the session does.
            self.pages_complete = True
            await self.mux.event(event="pages_complete")
            # The source's commit brings the migration's record; without it, after
            # a moment, commit anyway (its session may be gone).
            with trio.move_on_after(COMMIT_WAIT_S):
                await self.commit_asked.wait()
            await self.commit()
        else:
            why = checkpoint.reasons(log)
            await self.mux.event(event="pages_failed", error=why)
            await self.abort(f"CRIU's lazy-pages daemon failed: {why}")

    # -- the end --------------------------------------------------------------------
    async def commit(self) -> None:
        if self.done:
            if self.committed and self.record:
                await self.ask("the target cannot keep the record", "record", name=self.name,
                               record=self.record)
            return
        await self.ask("the target cannot take the domain over", "commit", name=self.name,
                       record=self.record)
        self.done = self.committed = True

    async def abort(self, reason: str) -> dict[str, Any]:
        """Undo the reception; return the tail of CRIU's logs here (they go with it)."""
        if self.done:
            return {}
        self.done = True
        logs = {}
        for key, path in (("restore_log", os.path.join(self.state_dir, "domains", self.name,
                                                        checkpoint.LOG)),
                          ("lazy_log", os.path.join(self.images, LAZY_LOG))):
            try:
                with open(path, "rb") as f:
                    f.seek(max(0, os.fstat(f.fileno()).st_size - LOG_TAIL))
                    logs[key] = f.read().decode(errors="replace")
            except OSError:
                pass
        for proc in [self.lazy, *self.procs]:
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()
        try:
            await self.ask("the target cannot undo", "abort", name=self.name, reason=reason)
        except VzfsError as exc:
            print(f"vzfs migrate-receive: {exc.sentence}", file=sys.stderr)
        return logs

    async def finish(self, reason: str) -> None:
        if not self.name or self.done:
            return
        if self.pages_complete:
            await self.commit()
        else:
            await self.abort(reason)


def run(mountpoint: str) -> int:
    receiver = Receiver(state_dir_of(mountpoint))
    trio.run(receiver.main)
    return 0

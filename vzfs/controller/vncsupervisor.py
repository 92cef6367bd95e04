"""The supervision of a domain's VNC server by its controller: the listening sockets, the
server's process (forked by the spawner), its link, and its restarts.

Theory of operation
-------------------
The VNC server (vnc/process.py) is a process of its own, so that nothing it does can
take the controller down. The controller binds its listening sockets at the start
(`listen`: `vnc` holds its address when the start is reported, and a port that cannot
be had fails the start unless `[vnc] required = false`); the keeper holds them too, so
a restarted server — and the server of a controller that took over — serves the same
ports. Each server is forked by the spawner (vncspawn.py) and speaks to us over a
socketpair in consolestream's frames: we send it a snapshot of our emulator, then the
console's bytes after it, and a new snapshot when it fell behind the ring or the size
changed (`resync`); it sends what its clients type (I frames), where it listens, why
it cannot, and its clients' resize requests (J frames).

`supervise` runs a server for the domain's life: one that dies is started again at
once, then less and less often while it keeps dying (VNC_MAX_BACKOFF), and a server
that ran VNC_STABLE_S resets the backoff. Each restart and each change of address is
told to the daemon as an event. `settled` is set once the first server listens or has
failed to: the daemon's start waits for it (`vnc_wait`).
"""

import errno
import os
import signal
import socket
import sys
import traceback
from collections.abc import Awaitable, Callable

import trio

from ..model.config import Vnc
from ..vnc import process as vncprocess
from ..wire import messages
from ..wire.consolestream import FrameDecoder, data_frame, json_frame, parse_json_frame
from . import vncspawn
from .console import Console

VNC_CHUNK = 1 << 16
VNC_FAST_RESTART = 0.05    # the first restart after a crash is at once (issue 5: within a second)
VNC_MAX_BACKOFF = 60.0     # a server that keeps dying (or cannot listen) is tried less and less often
VNC_STABLE_S = 10.0        # a server that ran this long resets the backoff
STOP_WAIT_S = 0.5


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1]) if address else 0


class VncSupervisor:
    """The VNC server of domain *name* (module docstring): its configuration *config*,
    the *console* it shows, *log* its stderr's file, *broadcast* the daemon's events;
    *exited* is set when the domain has ended (no more restarts)."""

    def __init__(self, name: str, config: Vnc, console: Console, log: str,
                 broadcast: Callable[[messages.Event], Awaitable[None]],
                 exited: trio.Event) -> None:
        self.name = name
        self.config = config
        self.console = console
        self.log = log
        self.broadcast = broadcast
        self.exited = exited
        self.spawner: socket.socket | None = None   # vncspawn's request socket
        self.pid = 0
        self.pidfd = -1
        self.address = ""            # HOST:PORT while a server listens
        self.websocket = ""
        self.error = ""
        self.errno = 0
        self.settled = trio.Event()
        self.sockets: tuple[socket.socket, ...] = ()  # the listening sockets every server serves
        self.restarts = 0
        self.prefer: dict[str, int] = {}   # the ports it had: a restart keeps them
        self.resync_wanted = False

    # -- the sockets (synchronous: at the start, before trio runs) ----------------------
    def listen(self) -> None:
        """Bind the listening sockets now (vnc.process.listen); a port that cannot be had
        fails the start (OSError), unless `[vnc] required = false` (then the server tries
        itself, later)."""
        c = self.config
        try:
            rfb, ws = vncprocess.listen({"listen": c.listen, "port": c.port,
                                         "websocket": c.websocket,
                                         "websocket_port": c.websocket_port}, self.prefer)
        except OSError as exc:
            self.error = exc.strerror or str(exc)
            self.errno = exc.errno or errno.EIO
            if c.required:
                raise OSError(self.errno, f"its VNC server cannot listen: {self.error} "
                              "(with [vnc] required = false it starts without one)") from exc
            return
        self.sockets = (rfb,) + ((ws,) if ws is not None else ())
        self.address = vncprocess.address(c.listen, rfb.getsockname()[1])
        self.websocket = vncprocess.address(c.listen, ws.getsockname()[1]) if ws is not None else ""
        self.prefer = {"rfb": port_of(self.address), "websocket": port_of(self.websocket)}
        self.settled.set()

    def close_sockets(self) -> None:
        sockets, self.sockets = self.sockets, ()
        for sock in sockets:
            sock.close()

    # -- the server's life --------------------------------------------------------------
    async def supervise(self) -> None:
        """Keep a VNC server running for the domain's life; count and announce restarts."""
        backoff = VNC_FAST_RESTART
        while True:
            started = trio.current_time()
            await self._run()
            if self.address:
                self.address = self.websocket = ""
                await self._changed()
            self.settled.set()     # (a server that died before it said anything)
            if self.spawner is None or self.exited.is_set():
                return             # ended on purpose (stop): the domain is gone
            if trio.current_time() - started > VNC_STABLE_S:
                backoff = VNC_FAST_RESTART
            await trio.sleep(backoff)
            backoff = min(VNC_MAX_BACKOFF, backoff * 4)
            self.restarts += 1
            print(f"vzfs: restarting the VNC server of {self.name} "
                  f"(restart {self.restarts})", file=sys.stderr, flush=True)
            await self.broadcast(messages.VncRestarted(self.restarts))

    async def _changed(self) -> None:
        """Tell the daemon where the VNC server listens now, or why none does."""
        await self.broadcast(messages.VncChanged(self.address, self.websocket, self.error,
                                                 self.errno))

    async def _run(self) -> None:
        """Start one VNC server and serve its link until it ends."""
        assert self.spawner is not None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            vncspawn.request(self.spawner, self.name, theirs.fileno(), self.log,
                             tuple(sock.fileno() for sock in self.sockets))
        except OSError as exc:
            # The spawner was killed. Another cannot be forked from inside trio (see
            # vncspawn), so the domain runs on without VNC until its next start.
            self.error = f"the VNC spawner is gone ({exc.strerror or exc})"
            self.errno = exc.errno or errno.EIO
            print(f"vzfs: {self.name}: {self.error}", file=sys.stderr, flush=True)
            await self._changed()
            self.spawner.close()
            self.spawner = None
            ours.close()
            return
        finally:
            theirs.close()
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
        self.pidfd = -1
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._feed, stream)
                await self._read(stream)
                nursery.cancel_scope.cancel()
        except* (trio.BrokenResourceError, trio.ClosedResourceError):
            pass                           # the server died: restart it
        except* Exception:
            # Whatever goes wrong with a VNC server must never end the domain's controller.
            traceback.print_exc()
        finally:
            await stream.aclose()
            self.pid = 0
            if self.pidfd >= 0:
                # A server that broke the link but lives on would hold its ports.
                try:
                    signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                os.close(self.pidfd)
                self.pidfd = -1

    async def stop(self) -> None:
        """End the VNC server before the domain is reported stopped, so its ports are
        free again for the next start (a restart keeps its address)."""
        if self.pidfd < 0:
            return
        # Our own copy: the link's task closes its pidfd when the server dies.
        pidfd = os.dup(self.pidfd)
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            with trio.move_on_after(STOP_WAIT_S):
                await trio.lowlevel.wait_readable(pidfd)
        except ProcessLookupError:
            pass
        finally:
            os.close(pidfd)

    def resync(self) -> None:
        """Have the VNC server take our emulator's state (after a resize)."""
        self.resync_wanted = True
        self.console.wake()

    # -- the link ------------------------------------------------------------------------
    async def _feed(self, stream: trio.SocketStream) -> None:
        """The console to the VNC server: a snapshot of our emulator, then the bytes
        after it; a new snapshot when it fell behind the ring or was resized."""
        c, console = self.config, self.console
        # The snapshot and the offset it stands for are taken together: the emulator
        # moves on while we send.
        self.resync_wanted = False
        snapshot, cursor = console.term.snapshot(), console.fed
        await stream.send_all(json_frame({
            "op": "init", "snapshot": snapshot, "emulator": console.emulator,
            "vnc": {"listen": c.listen, "port": c.port, "password": c.password,
                    "websocket": c.websocket, "websocket_port": c.websocket_port},
            "prefer": self.prefer}))
        while True:
            changed = console.changed
            if self.resync_wanted or cursor < console.ring.start:
                self.resync_wanted = False
                snapshot, cursor = console.term.snapshot(), console.fed
                await stream.send_all(json_frame({"op": "snapshot", "snapshot": snapshot}))
            elif cursor < console.ring.end:
                data, new, _ = console.ring.read(cursor, VNC_CHUNK)
                await stream.send_all(data_frame(new - len(data), data))
                cursor = new
            else:
                await changed.wait()

    async def _read(self, stream: trio.SocketStream) -> None:
        frames = FrameDecoder()
        async for data in stream:
            for kind, _, payload in frames.feed(data):
                if kind == "I":
                    await self.console.write(payload)
                    continue
                if kind != "J":
                    continue
                msg = parse_json_frame(payload)
                if msg.get("event") == "listening":
                    self.pid = int(msg["pid"])
                    try:
                        self.pidfd = os.pidfd_open(self.pid)
                    except ProcessLookupError:
                        pass
                    self.address = str(msg["rfb"])
                    self.websocket = str(msg.get("websocket", ""))
                    self.error = ""
                    self.errno = 0
                    self.prefer = {"rfb": port_of(self.address),
                                   "websocket": port_of(self.websocket)}
                    await self._changed()
                    self.settled.set()
                elif msg.get("event") == "error":
                    self.error = str(msg.get("error", ""))
                    self.errno = int(msg.get("errno") or errno.EIO)
                    print(f"vzfs: the VNC server of {self.name} cannot start: {self.error}",
                          file=sys.stderr, flush=True)
                    await self._changed()
                    self.settled.set()
                elif msg.get("op") == "resize":
                    try:
                        self.console.resize(int(msg["columns"]), int(msg["lines"]))
                    except ValueError:
                        pass              # (out of range: the snapshot puts it back)
                    self.resync()

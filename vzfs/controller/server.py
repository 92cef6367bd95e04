"""The controller's request server: the daemon's connections on the domain's socket, their
requests answered by a table of handlers, and the events broadcast to every connection.

Theory of operation
-------------------
The daemon connects to the socket in the domain's directory (several daemons may be
connected at once: one that is going and its successor). Each connection carries
requests with ids (wire/messages.py) and, from us, their replies and the controller's
events, in the order written, one message at a time (`send` takes the stream's lock).
A connection whose first request is `console` carries the console stream from then on
(console.py). Each request is answered in a task of its own, so a long one (a stop
waits for the end) does not hold the others up: `handle` decodes it — a request that
is not what its schema says is refused there — and hands it to the handler its type
names in the table (`handlers`). `handle` is the request server's one error boundary:
a refusal (VzfsError) is sent back in its own words, anything else that goes wrong
becomes an error reply with an errno and a sentence; nothing a request holds or
causes ends the controller.
"""

import errno
import traceback
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import trio

from ..base.errors import VzfsError
from ..wire import messages as m
from ..wire.consolestream import FrameError
from ..wire.framing import Decoder, Message, ProtocolError, encode, reply_error
from .console import Console

if TYPE_CHECKING:
    from .controller import Controller

Handler = Callable[[Any], Awaitable[m.Reply | None]]
SEND_TIMEOUT_S = 1.0
MAX_SENTENCE = 400


class RequestServer:
    """The requests and events of one controller (module docstring). *handlers*: the
    handler of each request type; *console* serves console connections."""

    def __init__(self, handlers: Mapping[type, Handler], console: Console) -> None:
        self.handlers = handlers
        self.console = console
        self.streams: dict[trio.SocketStream, trio.Lock] = {}
        self.nursery: trio.Nursery | None = None

    def start(self, nursery: trio.Nursery, listener: trio.socket.SocketType,
              first: trio.SocketStream | None) -> None:
        """Serve *listener*'s connections, and *first* (the daemon's that asked for the
        start), in tasks of *nursery*."""
        self.nursery = nursery
        if first is not None:
            nursery.start_soon(self.serve_stream, first)
        nursery.start_soon(self._accept, listener)

    async def _accept(self, listener: trio.socket.SocketType) -> None:
        assert self.nursery is not None
        while True:
            conn, _ = await listener.accept()
            self.nursery.start_soon(self.serve_stream, trio.SocketStream(conn))

    async def send(self, stream: trio.SocketStream, msg: Message) -> None:
        """Send one message; replies and broadcasts share a stream, so take turns."""
        lock = self.streams.get(stream)
        if lock is None:
            return
        try:
            async with lock:
                with trio.move_on_after(SEND_TIMEOUT_S):
                    await stream.send_all(encode(msg))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.streams.pop(stream, None)

    async def broadcast(self, event: m.Event) -> None:
        msg = m.to_wire(event)
        for stream in list(self.streams):
            await self.send(stream, msg)

    async def serve_stream(self, stream: trio.SocketStream) -> None:
        assert self.nursery is not None
        self.streams[stream] = trio.Lock()
        decoder = Decoder()
        try:
            async for data in stream:
                for msg in decoder.feed(data):
                    if msg.get("op") == m.Console.NAME:
                        # This connection now carries the console stream.
                        self.streams.pop(stream, None)
                        await self.console.serve(stream, decoder.take_rest())
                        return
                    self.nursery.start_soon(self.handle, stream, msg)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ProtocolError, FrameError):
            pass
        finally:
            if self.streams.pop(stream, None) is not None:
                # (a console connection is the console's to close)
                with trio.CancelScope(shield=True):
                    await stream.aclose()

    async def handle(self, stream: trio.SocketStream, msg: Message) -> None:
        """Answer one request: the request server's one error boundary (module docstring)."""
        req_id = msg.get("id")
        try:
            request = m.decode(msg)
            reply = m.reply(req_id, await self.handlers[type(request)](request))
        except VzfsError as exc:
            # A refusal, or a request that is not what its schema says: in its own words.
            reply = reply_error(req_id, exc.errno, exc.sentence)
        except Exception as exc:        # noqa: BLE001 - the boundary
            traceback.print_exc()
            if isinstance(exc, (KeyError, ValueError, TypeError, OverflowError)):
                code, why = errno.EINVAL, f"a malformed request ({type(exc).__name__}: {exc})"
            else:
                code = getattr(exc, "errno", None) or errno.EIO
                why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            reply = reply_error(req_id, code, f"the controller could not carry out "
                                              f"{str(msg.get('op'))[:40]!r}: {why}"[:MAX_SENTENCE])
        await self.send(stream, reply)


def handlers(ctl: "Controller") -> dict[type, Handler]:
    """The handler of each request type: the queries here, the operations in
    operations.py."""
    ops = ctl.ops

    async def status(req: m.Status) -> m.StatusEvent:
        return ctl.status()

    async def vnc_wait(req: m.VncWait) -> m.StatusEvent:
        if ctl.vnc.spawner is not None:
            with trio.move_on_after(req.timeout_s):
                await ctl.vnc.settled.wait()
        return ctl.status()

    async def stats(req: m.Stats) -> m.Counters:
        return m.Counters(ctl.cgroup.stats())

    async def screen(req: m.Screen) -> m.ScreenText:
        console = ctl.console
        return m.ScreenText(console.term.text(), console.columns, console.lines,
                            console.term.title)

    async def save_screen(req: m.SaveScreen) -> m.ScreenSaved:
        try:
            return m.ScreenSaved(ctl.save_screen())
        except OSError as exc:
            raise VzfsError(exc.errno or errno.EIO,
                            f"cannot save the screen: {exc.strerror or exc}") from exc

    async def resize(req: m.Resize) -> m.Resized:
        ctl.resize(req.columns, req.lines)
        return m.Resized(ctl.console.columns, ctl.console.lines)

    table: dict[type, Handler] = {
        m.Status: status, m.VncWait: vnc_wait, m.Stats: stats, m.Screen: screen,
        m.SaveScreen: save_screen, m.Resize: resize,
        m.Stop: ops.stop, m.Kill: ops.kill,
        m.Mounts: ops.mounts, m.MountAdd: ops.mount_add, m.MountDel: ops.mount_del,
        m.Pause: ops.pause, m.Resume: ops.resume, m.Suspend: ops.suspend,
        m.Migrate: ops.migrate, m.MigrateCancel: ops.migrate_cancel,
    }
    assert set(table) == set(m.REQUESTS.values()) - {m.Console}
    return table

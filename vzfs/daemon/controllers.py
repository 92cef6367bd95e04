"""The daemon's side of its controllers: starting them, talking to them, finding them again.

Theory of operation
-------------------
A running domain has a controller process (controller/controller.py), and the
controller outlives the daemon. The daemon reaches it in three ways:

* **spawn** — a start asks the zygote (controller/zygote.py), over its SOCK_SEQPACKET
  socket, for a controller, handing it one end of a new socketpair; the first message
  on that pair is the controller's report (its status, or `start_failed`). A zygote
  that died under the request is replaced by the daemon (main._keep_zygote), and the
  request is tried once more on the new one.
* **the connection** — `ControllerClient`: typed requests (wire.messages) with ids
  and their replies read as the type `messages.ANSWERS` names (wire.requests), and the
  controller's unsolicited events, decoded, which go to the `Listener` (the registry)
  with the client they came on: a domain may have a newer controller by then. A
  second connection carries the console (`DomainConsole`).
* **re-attach** — each controller listens on STATE_DIR/domains/NAME/ctl.sock. A daemon
  that starts connects to every domain's (`attach`). A connection that ends without
  the domain's end having been told means its controller died: its keeper
  (controller/keeper.py) forks another in milliseconds, and the daemon connects to
  that one while the keeper lives (`Keeper`); when none comes, the domain's end is
  read from disk.

What the controllers say is the registry's to interpret: this module hands every
status and event to its Listener and never changes a domain's state itself.
"""

from __future__ import annotations

import errno
import json
import os
import select
import socket
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import trio

from ..base.errors import VzfsError, from_oserror
from ..controller import paths
from ..model import lifecycle
from ..wire.consolestream import FrameDecoder, FrameError, Ring, input_frame
from ..wire import messages as m
from ..wire.framing import Decoder, Message, encode
from ..wire.requests import Connection

if TYPE_CHECKING:
    from .domain import Domain

log = logging.getLogger("vzfs.registry")
R = TypeVar("R")
START_TIMEOUT = 30.0
ZYGOTE_WAIT = 10.0             # for a new zygote, when the last died under a start
CHECKPOINT_TIMEOUT = 900.0     # a dump or restore of many gigabytes takes minutes
CONSOLE_SCROLLBACK = 1 << 20
# Console input waits in the daemon while the domain does not read it: at most this
# much, and a write that finds no room waits this long for some, then fails (EAGAIN).
CONSOLE_INPUT_QUEUE = 256 << 10
CONSOLE_INPUT_WAIT = 5.0
REQUEST_TIMEOUT = 10.0
# A controller that died is replaced by its domain's keeper (controller/keeper.py) in
# milliseconds; the daemon re-attaches to the new one, waiting at most this long.
REATTACH_TIMEOUT = 10.0
REATTACH_POLL = 0.02
ATTACH_RETRY_S = 2.0           # a daemon that starts, for a controller being replaced
# What a controller's status says once the domain it ran has ended: the name of a
# state in which nothing runs, or that it moved away.
ENDED = frozenset({state.value for state in lifecycle.DOWN} | {"migrated"})


class ControllerClient:
    """The daemon's connection to one controller: typed requests with ids, events to a
    callback (which is told which client it came from: a domain may have a newer one
    by then)."""

    def __init__(self, stream: trio.SocketStream, decoder: Decoder,
                 on_event: Callable[[ControllerClient, m.Event], None]) -> None:
        self.on_event = on_event
        self.connection = Connection(stream, decoder, self._event,
                                     lost="lost the connection to its controller",
                                     gone="its controller went away",
                                     silent="its controller did not answer")
        self.closed = self.connection.closed

    async def run(self) -> None:
        await self.connection.run()

    def _event(self, msg: Message) -> None:
        try:
            event = m.decode_event(msg)
        except m.Malformed as exc:
            # One event the daemon cannot read costs that event, never the connection.
            log.warning("an event of a controller was dropped: %s", exc.sentence)
            return
        self.on_event(self, event)

    async def ask(self, what: str, req: m.Request, answer: type[R],
                  timeout: float = REQUEST_TIMEOUT) -> R:
        """Send *req*; its reply as *answer* (the type messages.ANSWERS names for it), or
        VzfsError: the controller's errno and sentence after *what*, or ours."""
        if m.ANSWERS[type(req)] is not answer:
            raise TypeError(f"a {req.NAME} request is answered with {m.ANSWERS[type(req)]}")
        reply = await self._call(what, req, timeout)
        try:
            return m.from_wire(answer, reply, f"the reply to {req.NAME}")
        except m.Malformed as exc:
            raise VzfsError(errno.EIO, f"{what}: its controller answered with a malformed "
                                       f"reply ({exc.sentence})") from None

    async def tell(self, what: str, req: m.Request, timeout: float = REQUEST_TIMEOUT) -> None:
        """Send *req*, one answered with a bare success (messages.ANSWERS), and wait for it."""
        if m.ANSWERS[type(req)] is not None:
            raise TypeError(f"a {req.NAME} request is answered with {m.ANSWERS[type(req)]}")
        await self._call(what, req, timeout)

    async def _call(self, what: str, req: m.Request, timeout: float) -> Message:
        fields = m.to_wire(req)
        op = fields.pop(req.KEY)
        return await self.connection.request(what, op, timeout, fields)


class DomainConsole:
    """The daemon's copy of a domain's console: a bounded ring that readers follow.

    It outlives controllers: the output of successive runs of the domain follows
    one another, so `cat console` shows the boots in order.
    """

    def __init__(self) -> None:
        self.ring = Ring(CONSOLE_SCROLLBACK)
        self.changed = trio.Event()
        self.stream: trio.SocketStream | None = None
        # Typed input on its way to the controller (input frames), sent by pump's
        # sender; `room` wakes writers waiting for the queue to drain.
        self.input = bytearray()
        self.input_ready = trio.Event()
        self.room = trio.Event()

    def append(self, data: bytes) -> None:
        self.ring.append(data)
        changed, self.changed = self.changed, trio.Event()
        changed.set()

    async def pump(self, stream: trio.SocketStream) -> None:
        """Copy a controller's console stream into the ring until it ends."""
        self.stream = stream
        frames = FrameDecoder()
        # The ring's offsets continue from run to run; within one controller's
        # stream they follow the controller's, so a gap (the controller lapped
        # us in a flood) becomes a jump that readers are told about exactly.
        base: int | None = None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._send_input, stream)
                async for data in stream:
                    for kind, offset, payload in frames.feed(data):
                        if kind != "D":
                            continue
                        if base is None:
                            base = self.ring.end - offset
                        self.ring.jump(base + offset)
                        self.append(payload)
                nursery.cancel_scope.cancel()
        except* (trio.BrokenResourceError, trio.ClosedResourceError, FrameError):
            pass
        finally:
            if self.stream is stream:
                self.stream = None
                self.input = bytearray()     # for a domain that ended: nobody will read it
                self._made_room()
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _send_input(self, stream: trio.SocketStream) -> None:
        """Hand the queued input to the controller, which types it as the console takes it."""
        while True:
            if not self.input:
                await self.input_ready.wait()
                self.input_ready = trio.Event()
                continue
            chunk, self.input = bytes(self.input), bytearray()
            await stream.send_all(chunk)
            self._made_room()

    def _made_room(self) -> None:
        room, self.room = self.room, trio.Event()
        room.set()

    async def send_input(self, name: str, data: bytes, nonblock: bool = False) -> None:
        """Queue *data* as typed input. While the domain does not read its console the
        queue fills: a write then waits CONSOLE_INPUT_WAIT for room, and fails with
        EAGAIN (at once with O_NONBLOCK) — a writer is never held for ever, and memory
        stays bounded."""
        what = f"cannot type into the console of domain {name}"
        deadline = trio.current_time() + CONSOLE_INPUT_WAIT
        while True:
            if self.stream is None:
                raise VzfsError(errno.EBUSY, f"{what}: it is not running")
            if not self.input or len(self.input) + len(data) <= CONSOLE_INPUT_QUEUE:
                break
            if nonblock:
                raise VzfsError(errno.EAGAIN, f"{what}: {len(self.input)} bytes typed "
                                              "before are still waiting to be read")
            room = self.room
            with trio.move_on_at(deadline):
                await room.wait()
            if trio.current_time() >= deadline:
                raise VzfsError(errno.EAGAIN, f"{what}: it has read none of the "
                                              f"{len(self.input)} bytes waiting for it in "
                                              f"{CONSOLE_INPUT_WAIT:g} s")
        self.input += input_frame(data)
        self.input_ready.set()


class Keeper:
    """A pidfd of a domain's keeper (controller/keeper.py) while the domain runs: while
    the keeper lives, a controller that went is being replaced."""

    def __init__(self, pidfd: int) -> None:
        self.pidfd = pidfd

    @classmethod
    def of(cls, pid: int) -> Keeper | None:
        """The keeper *pid* (0: none named), or None when it has ended already."""
        if not pid:
            return None
        try:
            return cls(os.pidfd_open(pid))
        except ProcessLookupError:
            return None

    def lives(self) -> bool:
        # A pidfd is readable once its process has ended (pidfd_open(2)).
        if self.pidfd < 0:
            return False
        poller = select.poll()
        poller.register(self.pidfd, select.POLLIN)
        return not poller.poll(0)

    def close(self) -> None:
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1


class Listener(Protocol):
    """What the registry makes of what controllers say (daemon/registry.py)."""

    def controller_event(self, dom: Domain, client: ControllerClient, event: m.Event) -> None:
        """An event from *client*, a controller of *dom* (maybe no longer its own)."""

    def controller_status(self, dom: Domain, client: ControllerClient,
                          status: m.StatusEvent) -> None:
        """A running controller was found again: its status is the domain's now."""

    def controller_gone(self, dom: Domain, lost: bool, why: str = "") -> None:
        """*dom* has no controller to attach to: its end is on disk. *lost*: one ran
        and died without telling it; *why*: one answered, but could not be taken."""

    def emit(self, domain: str, kind: str, detail: str = "") -> None:
        """A line of the `events` stream."""


class Controllers:
    """Spawns, connects to and re-attaches to the controllers of one daemon's domains."""

    def __init__(self, state_dir: str, zygote: socket.socket | None, listener: Listener) -> None:
        self.state_dir = state_dir
        self.zygote = zygote
        self.zygote_changed = trio.Event()   # set when the daemon replaced a dead zygote
        self.listener = listener
        self.nursery: trio.Nursery | None = None

    def new_zygote(self, sock: socket.socket) -> None:
        """The daemon started a zygote in place of one that died."""
        old, self.zygote = self.zygote, sock
        if old is not None:
            old.close()          # an orphaned spare of the dead one sees it and ends
        changed, self.zygote_changed = self.zygote_changed, trio.Event()
        changed.set()

    def _client(self, dom: Domain, stream: trio.SocketStream, decoder: Decoder) -> ControllerClient:
        return ControllerClient(stream, decoder,
                                lambda client, event: self.listener.controller_event(dom, client, event))

    # -- spawn ------------------------------------------------------------------------
    async def spawn(self, dom: Domain, request: dict[str, Any], what: str, restore: bool
                    ) -> tuple[ControllerClient, m.StatusEvent]:
        """A new controller for *dom*, carrying out *request* (a start or a restore):
        its client and its report."""
        for attempt in (1, 2):
            zygote, changed = self.zygote, self.zygote_changed
            if zygote is None:
                raise VzfsError(errno.EIO, f"{what}: this daemon cannot start controllers")
            try:
                return await self._ask_zygote(dom, zygote, request, what, restore)
            except _ZygoteLost as lost:
                # The zygote died under this start (or before it): the daemon starts
                # another (daemon.main._keep_zygote); the start is tried once more on it.
                if attempt == 2:
                    raise VzfsError(errno.EIO, f"{what}: {lost}") from None
                with trio.move_on_after(ZYGOTE_WAIT):
                    await changed.wait()
                if self.zygote is zygote:
                    raise VzfsError(errno.EIO, f"{what}: {lost}, and no other was started "
                                               f"within {ZYGOTE_WAIT:g} s") from None
        raise AssertionError("unreachable")

    async def _ask_zygote(self, dom: Domain, zygote: socket.socket, request: dict[str, Any],
                          what: str, restore: bool) -> tuple[ControllerClient, m.StatusEvent]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # A SOCK_SEQPACKET send of a small message does not block.
            socket.send_fds(zygote, [json.dumps(request).encode()], [theirs.fileno()])
        except OSError as exc:
            ours.close()
            if exc.errno in (errno.EPIPE, errno.ECONNREFUSED, errno.ECONNRESET, errno.EBADF):
                raise _ZygoteLost(f"the zygote is gone ({exc.strerror})") from exc
            raise from_oserror(exc, f"{what}: the zygote refused the request") from exc
        finally:
            theirs.close()
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
        decoder = Decoder()
        hello: Message | None = None
        ended = False
        timeout = CHECKPOINT_TIMEOUT if restore else START_TIMEOUT
        with trio.move_on_after(timeout):
            async for data in stream:
                # Take one message; any that follow stay buffered in the decoder
                # for the client, which drains it first.
                hello = next(iter(decoder.feed(data)), None)
                if hello is not None:
                    break
            else:
                ended = True
        if hello is None or hello.get("event") == "start_failed":
            await stream.aclose()
            if hello is None and ended:
                # The request's socket closed with no word: whoever took it died before
                # it could say anything (a zygote or spare killed under the request).
                raise _ZygoteLost("its controller-to-be died before it reported")
            if hello is None:
                raise VzfsError(errno.EIO, f"{what}: its controller did not report in "
                                           f"{timeout:g} s")
            try:
                failed = m.from_wire(m.StartFailed, hello)
            except m.Malformed as exc:
                raise VzfsError(errno.EIO, f"{what}: its controller failed, and its report is "
                                           f"malformed ({exc.sentence})") from None
            raise VzfsError(failed.errno, f"{what}: {failed.error}")
        try:
            status = m.from_wire(m.StatusEvent, hello, "its start's report")
        except m.Malformed as exc:
            await stream.aclose()
            raise VzfsError(errno.EIO, f"{what}: its controller's report is malformed "
                                       f"({exc.sentence})") from None
        return self._client(dom, stream, decoder), status

    # -- the connections --------------------------------------------------------------
    def connect(self, dom: Domain) -> socket.socket:
        """A connection to the controller of *dom* (OSError: none listens)."""
        ddir = paths.domain_dir(self.state_dir, dom.name)
        dir_fd = os.open(ddir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(paths.socket_path_via(dir_fd))
        except OSError:
            sock.close()
            raise
        finally:
            os.close(dir_fd)
        return sock

    async def open_console(self, dom: Domain) -> None:
        """Subscribe to the controller's console stream (its scrollback, then live)."""
        try:
            sock = self.connect(dom)
        except OSError:
            return
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        try:
            await stream.send_all(encode({"op": "console"}))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        assert self.nursery is not None
        self.nursery.start_soon(dom.console.pump, stream)

    def watch(self, dom: Domain, client: ControllerClient) -> None:
        """Serve *client*'s connection; should it end while it is still the domain's,
        find the controller that replaced it."""
        assert self.nursery is not None
        self.nursery.start_soon(self._watch, dom, client)

    async def _watch(self, dom: Domain, client: ControllerClient) -> None:
        await client.run()
        if dom.client is client:
            await self._lost(dom, client)

    async def _watch_attached(self, dom: Domain, client: ControllerClient) -> None:
        await client.closed.wait()
        if dom.client is client:
            await self._lost(dom, client)

    async def _lost(self, dom: Domain, client: ControllerClient) -> None:
        """The controller went without telling the domain's end. Its keeper forks another
        (controller/keeper.py): re-attach to that one while the keeper lives. Otherwise,
        if it recorded an outcome, that is the truth; else it died without one."""
        deadline = trio.current_time() + REATTACH_TIMEOUT
        while dom.keeper is not None and dom.keeper.lives() and trio.current_time() < deadline:
            try:
                sock = self.connect(dom)
            except OSError:
                await trio.sleep(REATTACH_POLL)
                continue
            if dom.client is client and not await self._take_over(dom, sock):
                self.listener.emit(dom.name, "controller", "replaced")
                return
            if dom.client is not client:
                return
            await trio.sleep(REATTACH_POLL)
        if dom.client is client:
            self.listener.controller_gone(dom, lost=True)

    # -- re-attaching after a daemon restart ---------------------------------
    async def attach(self, dom: Domain) -> None:
        """A daemon that starts: attach to the controller of *dom*, if one runs."""
        deadline = trio.current_time() + ATTACH_RETRY_S
        while True:
            try:
                sock = self.connect(dom)
                break
            except FileNotFoundError:
                self.listener.controller_gone(dom, lost=False)
                return
            except OSError:
                # A socket nobody listens on: its controller died, and a keeper may be
                # starting another (controller/keeper.py) — or it all died with no word.
                if trio.current_time() > deadline:
                    self.listener.controller_gone(dom, lost=True)
                    return
                await trio.sleep(REATTACH_POLL)
        failure = await self._take_over(dom, sock)
        if failure:
            self.listener.controller_gone(dom, lost=True, why=failure)

    async def _take_over(self, dom: Domain, sock: socket.socket) -> str:
        """Attach to the running controller connected on *sock*; if it does not answer,
        say why."""
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        client = self._client(dom, stream, Decoder())
        assert self.nursery is not None
        self.nursery.start_soon(client.run)
        try:
            status = await client.ask(f"cannot re-attach domain {dom.name}", m.Status(),
                                      m.StatusEvent)
        except VzfsError as exc:
            await stream.aclose()
            return exc.sentence
        if status.state in ENDED:
            # Reached in the moment between its end's record and its exit: the record
            # (last_exit.json) says how it ended, with the reason.
            await stream.aclose()
            return f"cannot re-attach domain {dom.name}: it has ended"
        self.listener.controller_status(dom, client, status)
        self.nursery.start_soon(self._watch_attached, dom, client)
        await self.open_console(dom)
        return ""


class _ZygoteLost(Exception):
    """A start request that nobody took or answered: the zygote died under it."""

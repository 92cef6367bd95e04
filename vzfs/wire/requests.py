"""Requests with ids over a stream that also carries other messages (events, the
other side's requests), and the wait for their replies: the daemon's connection to
a controller, the receiver's to its daemon and a migration's SSH session all speak
framing's JSON lines this way (`Requests`; `Connection` for a plain stream)."""

import errno
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ..base.errors import VzfsError
from .framing import Decoder, Message, ProtocolError, encode


class Requests:
    """The requests of one side of a connection that await their replies.

    *lost*: the sentence for a send that failed or a connection that ended first;
    *gone*: for one that ended while waiting; *silent*/*silent_errno*: for a reply
    that did not come in time."""

    def __init__(self, lost: str, gone: str, silent: str, silent_errno: int = errno.EIO) -> None:
        self.lost, self.gone, self.silent, self.silent_errno = lost, gone, silent, silent_errno
        self.pending: dict[int, tuple[trio.Event, list[Message]]] = {}
        self.next_id = 1
        self.ended = False

    def take(self, msg: Message) -> bool:
        """Hand *msg* to the request it answers; False when it answers none of ours."""
        req_id = msg.get("id")
        if req_id is None or req_id not in self.pending:
            return False
        event, slot = self.pending[req_id]
        slot.append(msg)
        event.set()
        return True

    def end(self) -> None:
        """The connection ended: every waiting request fails now."""
        self.ended = True
        for event, _ in self.pending.values():
            event.set()

    async def ask(self, send: Callable[[bytes], Awaitable[None]], what: str, op: str,
                  timeout: float, fields: dict[str, Any]) -> Message:
        """Send request *op* with *send*; its reply's fields, or VzfsError (the other
        side's errno and sentence after *what*, or ours)."""
        req_id = self.next_id
        self.next_id += 1
        event, slot = trio.Event(), list[Message]()
        self.pending[req_id] = (event, slot)
        try:
            try:
                await send(encode({"id": req_id, "op": op, **fields}))
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise VzfsError(errno.EIO, f"{what}: {self.lost}") from exc
            with trio.move_on_after(timeout):
                await event.wait()
        finally:
            del self.pending[req_id]
        if not slot:
            if self.ended:
                raise VzfsError(errno.EIO, f"{what}: {self.gone}")
            raise VzfsError(self.silent_errno, f"{what}: {self.silent} in {timeout:g} s")
        reply = slot[0]
        if not reply.get("ok"):
            raise VzfsError(int(reply.get("errno", errno.EIO)), f"{what}: {reply.get('error')}")
        return reply


class Connection:
    """A stream of framing's JSON lines on which this side asks with ids: replies go to
    the request they answer, every other message to *on_message*. `run` reads until
    the stream ends, then fails what still waits (the sentences are Requests')."""

    def __init__(self, stream: trio.SocketStream, decoder: Decoder,
                 on_message: Callable[[Message], None], lost: str, gone: str,
                 silent: str) -> None:
        self.stream = stream
        self.decoder = decoder
        self.on_message = on_message
        self.requests = Requests(lost=lost, gone=gone, silent=silent)
        self.closed = trio.Event()
        self.send_lock = trio.Lock()     # concurrent requests take turns on the stream

    async def run(self) -> None:
        try:
            for msg in self.decoder.feed(b""):
                self._dispatch(msg)
            async for data in self.stream:
                for msg in self.decoder.feed(data):
                    self._dispatch(msg)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ProtocolError):
            pass
        finally:
            self.closed.set()
            self.requests.end()
            with trio.CancelScope(shield=True):
                await self.stream.aclose()

    def _dispatch(self, msg: Message) -> None:
        if not self.requests.take(msg) and msg.get("id") is None:
            self.on_message(msg)

    async def _send(self, data: bytes) -> None:
        async with self.send_lock:
            await self.stream.send_all(data)

    async def request(self, what: str, op: str, timeout: float, fields: dict[str, Any]) -> Message:
        """Ask *op* with *fields*; the reply, or VzfsError (Requests.ask)."""
        return await self.requests.ask(self._send, what, op, timeout, fields)

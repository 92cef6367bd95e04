"""Requests with ids over a stream that also carries other messages (events, the
other side's requests), and the wait for their replies: the daemon's connection to
a controller and a migration's SSH session both speak `protocol` this way."""

import errno
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ..base.errors import VzfsError
from .framing import Message, encode


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

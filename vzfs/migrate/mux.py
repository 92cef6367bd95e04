"""Channels over one SSH session: a control channel of JSON requests and replies,
and byte channels (rsync, CRIU's page server) beside it.

Every new ssh command costs 150-250 ms on these machines (FACTS.md; measured
again for the migration issue), so a migration opens one session to the target
before the domain is frozen and runs everything through it. A frame is one byte
of channel, four of length (big-endian), then the payload; a frame of length 0
is the end of that channel's bytes in this direction (a half-close). Channel 0
carries `wire.framing` messages. Nothing here listens anywhere: the session is
OpenSSH's, authenticated by it.
"""

import errno
import struct
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import trio

from ..wire.framing import (EXPECTED_FAILURES, Decoder, Message, ProtocolError, encode,
                            reply_failure, reply_ok)
from ..wire.requests import Requests

HEADER = struct.Struct(">BI")
MAX_FRAME = 1 << 20
CHUNK = 1 << 18                    # a channel's reads, and so its largest frames
RECEIVE = 1 << 20                  # the session's reads
CONTROL = 0
QUEUE_FRAMES = 64


def frame(channel: int, payload: bytes | bytearray) -> bytes:
    return HEADER.pack(channel, len(payload)) + payload


class FrameError(Exception):
    pass


class Deframer:
    """Bytes in, (channel, payload) out; an empty payload is that channel's end."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes | bytearray) -> Iterator[tuple[int, bytes]]:
        # Pages stream through here: slice whole frames out of what arrived (one copy
        # each) and keep only the unfinished tail, never shifting a big buffer.
        buf = self._buf + data if self._buf else data
        view = memoryview(buf)
        pos = 0
        try:
            while len(buf) - pos >= HEADER.size:
                channel, length = HEADER.unpack_from(buf, pos)
                if length > MAX_FRAME:
                    raise FrameError(f"a frame of {length} bytes (at most {MAX_FRAME})")
                end = pos + HEADER.size + length
                if end > len(buf):
                    break
                yield channel, bytes(view[pos + HEADER.size:end])
                pos = end
        finally:
            self._buf = bytes(view[pos:])
            view.release()


Handler = Callable[[Message], Awaitable[dict[str, Any]]]


class Mux:
    """One end of the session. `run` reads until the session ends; requests go either
    way (each side may serve a *handler*); `bind` joins a local stream to a channel."""

    def __init__(self, send: trio.abc.SendStream, receive: trio.abc.ReceiveStream,
                 handler: Handler | None = None,
                 on_event: Callable[[Message], None] = lambda msg: None) -> None:
        self.send_stream = send
        self.receive_stream = receive
        self.handler = handler
        self.on_event = on_event
        self.send_lock = trio.Lock()
        self.channels: dict[int, trio.abc.Stream] = {}
        self.requests = Requests(lost="the SSH session to the target ended",
                                 gone="the SSH session to the target ended",
                                 silent="the target did not answer", silent_errno=errno.ETIMEDOUT)
        self.sent: Counter[int] = Counter()       # payload bytes per channel, each way
        self.received: Counter[int] = Counter()
        self.closed = trio.Event()
        self.nursery: trio.Nursery | None = None
        # Channels whose local end this side closes itself (bind(keep=True)): the
        # other end's EOF is not passed on, nor is the stream closed with the session.
        self.kept: set[int] = set()
        # What arrived for each channel, in order, for its writer. A channel the other
        # end began before this end bound it (CRIU's page server may speak first)
        # keeps up to QUEUE_FRAMES frames until it is bound.
        self.queues: dict[int, tuple[trio.MemorySendChannel[bytes],
                                     trio.MemoryReceiveChannel[bytes]]] = {}

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        deframer, decoder = Deframer(), Decoder()
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                task_status.started()
                try:
                    while data := await self.receive_stream.receive_some(RECEIVE):
                        for channel, payload in deframer.feed(data):
                            self.received[channel] += len(payload)
                            if channel == CONTROL:
                                for msg in decoder.feed(payload):
                                    self._dispatch(msg)
                            else:
                                await self._deliver(channel, payload)
                except (trio.BrokenResourceError, trio.ClosedResourceError, FrameError,
                        ProtocolError):
                    pass
                nursery.cancel_scope.cancel()
        finally:
            self.closed.set()
            self.requests.end()
            with trio.CancelScope(shield=True):
                for channel, stream in list(self.channels.items()):
                    if channel not in self.kept:
                        await stream.aclose()

    def _dispatch(self, msg: Message) -> None:
        req_id = msg.get("id")
        if "op" in msg and self.handler is not None:
            assert self.nursery is not None
            self.nursery.start_soon(self._serve, msg)
        elif self.requests.take(msg):
            pass
        elif req_id is None:
            self.on_event(msg)

    async def _serve(self, msg: Message) -> None:
        assert self.handler is not None
        try:
            reply = reply_ok(msg.get("id"), **await self.handler(msg))
        except EXPECTED_FAILURES as exc:
            reply = reply_failure(msg.get("id"), exc)
        except Exception as exc:        # noqa: BLE001 - the boundary: a bug costs this request
            traceback.print_exc()
            reply = reply_failure(msg.get("id"), exc)
        await self.send_control(reply)

    def _queue(self, channel: int) -> tuple[trio.MemorySendChannel[bytes],
                                            trio.MemoryReceiveChannel[bytes]]:
        if channel not in self.queues:
            self.queues[channel] = trio.open_memory_channel[bytes](QUEUE_FRAMES)
        return self.queues[channel]

    async def _deliver(self, channel: int, payload: bytes) -> None:
        """Queue what arrived for *channel*, in order; a bound channel's writer drains it
        (and a slow one holds the session back), an unbound one's waits within limits."""
        send, _ = self._queue(channel)
        if channel in self.channels:
            try:
                await send.send(payload)
            except trio.BrokenResourceError:
                pass                    # its writer is gone: the local end closed
            return
        try:
            send.send_nowait(payload)
        except trio.WouldBlock:
            raise FrameError(f"channel {channel} sent too much before it was opened") from None

    async def _write(self, channel: int, stream: trio.abc.Stream) -> None:
        _, receive = self._queue(channel)
        try:
            async for payload in receive:
                if payload:
                    await stream.send_all(payload)
                elif isinstance(stream, trio.abc.HalfCloseableStream) and \
                        channel not in self.kept:
                    await stream.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            receive.close()

    async def _send_frame(self, channel: int, payload: bytes | bytearray) -> None:
        async with self.send_lock:
            await self.send_stream.send_all(frame(channel, payload))
        self.sent[channel] += len(payload)

    async def send_control(self, msg: Message) -> None:
        try:
            await self._send_frame(CONTROL, encode(msg))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def event(self, **fields: Any) -> None:
        await self.send_control(fields)

    async def request(self, what: str, op: str, timeout: float = 30.0, **fields: Any) -> Message:
        """Ask the other end; its reply's fields, or VzfsError (its errno and sentence,
        or EIO when the session ended or it did not answer in *timeout* s)."""
        return await self.requests.ask(self._send_control, what, op, timeout, fields)

    async def _send_control(self, data: bytes) -> None:
        await self._send_frame(CONTROL, data)

    def bind(self, channel: int, stream: trio.abc.Stream, prefix: bytes = b"",
             keep: bool = False) -> None:
        """Join *stream* to *channel*: what arrives goes to it, what it says is sent
        (after *prefix*: bytes already read from it). A *keep* stream is never closed
        nor half-closed by the mux: its owner decides how it ends."""
        assert self.nursery is not None and channel != CONTROL
        if keep:
            self.kept.add(channel)
        self.channels[channel] = stream
        self.nursery.start_soon(self._write, channel, stream)
        self.nursery.start_soon(self._pump, channel, stream, prefix)

    async def _pump(self, channel: int, stream: trio.abc.Stream, prefix: bytes) -> None:
        try:
            if prefix:
                await self._send_frame(channel, prefix)
            while True:
                data = await stream.receive_some(CHUNK)
                await self._send_frame(channel, data)
                if not data:
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def close(self) -> None:
        with trio.CancelScope(shield=True):
            await self.send_stream.aclose()

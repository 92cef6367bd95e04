"""The daemon's side of the controller protocol (daemon/controllers.py) against the
controller's (controller/server.py): requests go out typed and their replies come back
as the type wire.messages.ANSWERS names, on both sides; what a controller says that the
daemon cannot read costs that message, never the connection. In-process, over a real
socketpair; the controller's end is written by hand, byte for byte."""

import errno
import types
import typing

import pytest
import trio

from vzfs.base.errors import VzfsError
from vzfs.controller import operations, server
from vzfs.daemon.controllers import ControllerClient
from vzfs.wire import messages as m
from vzfs.wire.framing import Decoder, encode

STATUS = m.StatusEvent("running", 42, 1.5, 7, 6, False, "127.0.0.1:5900", "", 9, 0, "", 0)


def test_each_controller_handler_returns_what_the_daemon_reads() -> None:
    # handlers() only gathers the functions; their annotations are the contract.
    table = server.handlers(types.SimpleNamespace(ops=operations.Operations))  # type: ignore[arg-type]
    assert set(table) == set(m.ANSWERS)
    for kind, handler in table.items():
        returned = typing.get_type_hints(handler)["return"]
        assert returned is (m.ANSWERS[kind] or type(None)), kind.__name__


async def _peer(sock: trio.SocketStream, answer: "typing.Callable[[dict], list[bytes]]") -> None:
    """The controller's end: each request answered with the lines *answer* gives."""
    decoder = Decoder()
    async for data in sock:
        for msg in decoder.feed(data):
            for line in answer(msg):
                await sock.send_all(line)


async def _client(nursery: trio.Nursery, answer: "typing.Callable[[dict], list[bytes]]",
                  events: list[m.Event]) -> ControllerClient:
    ours, theirs = _socketpair()
    client = ControllerClient(ours, Decoder(), lambda c, event: events.append(event))
    nursery.start_soon(client.run)
    nursery.start_soon(_peer, theirs, answer)
    return client


def _socketpair() -> tuple[trio.SocketStream, trio.SocketStream]:
    a, b = trio.socket.socketpair()
    return trio.SocketStream(a), trio.SocketStream(b)


@pytest.mark.trio
async def test_a_request_goes_out_as_its_line_and_its_reply_comes_back_typed() -> None:
    seen: list[dict] = []

    def answer(msg: dict) -> list[bytes]:
        seen.append(msg)
        return [encode(m.reply(msg["id"], STATUS))]

    async with trio.open_nursery() as nursery:
        client = await _client(nursery, answer, [])
        assert await client.ask("cannot ask", m.VncWait(timeout_s=3), m.StatusEvent) == STATUS
        assert seen == [{"id": 1, "op": "vnc_wait", "timeout_s": 3}]
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_a_request_asked_for_the_wrong_answer_is_refused_before_it_is_sent() -> None:
    seen: list[dict] = []
    async with trio.open_nursery() as nursery:
        client = await _client(nursery, lambda msg: seen.append(msg) or [], [])
        with pytest.raises(TypeError):
            await client.ask("x", m.Stop(), m.StatusEvent)
        with pytest.raises(TypeError):
            await client.tell("x", m.Stop())
        await trio.sleep(0.05)
        assert seen == []
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_an_error_reply_is_the_controllers_errno_and_sentence() -> None:
    def answer(msg: dict) -> list[bytes]:
        return [encode({"id": msg["id"], "ok": False, "errno": errno.EBUSY, "error": "it is paused"})]

    async with trio.open_nursery() as nursery:
        client = await _client(nursery, answer, [])
        with pytest.raises(VzfsError) as caught:
            await client.ask("cannot suspend domain d", m.Suspend(), m.Suspended)
        assert (caught.value.errno, caught.value.sentence) == \
            (errno.EBUSY, "cannot suspend domain d: it is paused")
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_a_malformed_reply_is_eio_and_the_connection_goes_on() -> None:
    replies = iter([{"ok": True, "state": "stopped"},             # no reason, no screen
                    {"ok": True, "state": "stopped", "reason": "", "screen": 5},
                    {"ok": True, "state": "stopped", "reason": "r", "screen": "s"}])

    def answer(msg: dict) -> list[bytes]:
        return [encode({"id": msg["id"], **next(replies)})]

    async with trio.open_nursery() as nursery:
        client = await _client(nursery, answer, [])
        for field in ("reason", "screen"):
            with pytest.raises(VzfsError) as caught:
                await client.ask("cannot stop domain d", m.Stop(), m.Ended)
            assert caught.value.errno == errno.EIO
            assert "malformed" in caught.value.sentence and field in caught.value.sentence
        assert await client.ask("cannot stop domain d", m.Stop(), m.Ended) == m.Ended("stopped", "r", "s")
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_events_come_typed_and_a_malformed_one_is_dropped_alone() -> None:
    events: list[m.Event] = []

    def answer(msg: dict) -> list[bytes]:
        return [encode({"event": "vnc_restarted", "restarts": "three"}),
                encode({"event": "no_such_event"}),
                encode(m.to_wire(m.Rebooted(pid=99, started_at=2.5))),
                encode(m.reply(msg["id"], m.Counters({"memory_current": 1})))]

    async with trio.open_nursery() as nursery:
        client = await _client(nursery, answer, events)
        assert await client.ask("x", m.Stats(), m.Counters) == m.Counters({"memory_current": 1})
        assert events == [m.Rebooted(pid=99, started_at=2.5)]
        nursery.cancel_scope.cancel()


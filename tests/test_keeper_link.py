"""The keeper ⇄ controller link's messages (controller/keeper.py), byte for byte: each is
the datagram the two have always exchanged, decodes back to itself, and anything else
is Malformed (the link's end for the side that reads it)."""

import socket

import pytest

from vzfs.controller import keeper
from vzfs.model.mountspec import MountSpec
from vzfs.wire.messages import Malformed

TO_CONTROLLER = [
    (keeper.InitExit(256), b'{"event": "exit", "status": 256}'),
    (keeper.Spawned(4242, 1700000000.5), b'{"event": "spawned", "pid": 4242, "started_at": 1700000000.5}'),
    (keeper.SpawnFailed(2, "no init"), b'{"event": "spawn_failed", "errno": 2, "error": "no init"}'),
]
TO_KEEPER = [
    (keeper.Spawn((MountSpec("/srv", "/data", ("ro", "nodev")),)),
     b'{"op": "spawn", "mounts": [{"source": "/srv", "target": "/data", "options": ["ro", "nodev"]}]}'),
    (keeper.Spawn(()), b'{"op": "spawn", "mounts": []}'),
    (keeper.Done(), b'{"op": "done"}'),
]


def sent(msg: keeper.ToController | keeper.ToKeeper) -> bytes:
    """The datagram keeper.send puts on a link like the keeper's (SOCK_SEQPACKET)."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with a, b:
        keeper.send(a, msg)
        return b.recv(keeper.MAX_MESSAGE)


@pytest.mark.parametrize("msg,datagram", TO_CONTROLLER)
def test_to_the_controller(msg: keeper.ToController, datagram: bytes) -> None:
    assert sent(msg) == datagram
    assert keeper.decode_for_controller(datagram) == msg


@pytest.mark.parametrize("msg,datagram", TO_KEEPER)
def test_to_the_keeper(msg: keeper.ToKeeper, datagram: bytes) -> None:
    assert sent(msg) == datagram
    assert keeper.decode_for_keeper(datagram) == msg


def test_an_empty_read_is_the_end_of_the_link() -> None:
    assert keeper.decode_for_controller(b"") is None
    assert keeper.decode_for_keeper(b"") is None


@pytest.mark.parametrize("datagram", [
    b"\xff", b"[1]", b'{"event": "exit"}', b'{"event": "exit", "status": "0"}',
    b'{"event": "spawned", "pid": 1}', b'{"event": "nothing"}', b'{"op": "done"}'])
def test_anything_else_is_malformed_for_the_controller(datagram: bytes) -> None:
    with pytest.raises(Malformed):
        keeper.decode_for_controller(datagram)


@pytest.mark.parametrize("datagram", [
    b"\xff", b"{}", b'{"op": "spawn"}', b'{"op": "spawn", "mounts": [{"source": "/s"}]}',
    b'{"op": "spawn", "mounts": "/s"}', b'{"event": "exit", "status": 0}'])
def test_anything_else_is_malformed_for_the_keeper(datagram: bytes) -> None:
    with pytest.raises(Malformed):
        keeper.decode_for_keeper(datagram)

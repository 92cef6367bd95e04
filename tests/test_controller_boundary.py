"""A malformed or failing request never ends a controller nor touches its container.

The controller's socket is the daemon's (root-only), but the daemon and the controller
may be of different versions, and a bug on either side must cost one error reply,
not a domain. Every request kind goes in with wrong types, missing fields, values out
of range, and the line-level garbage the framing must survive.
"""

import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from tests.system import Instance, wait_for
from tests.test_keeper import controller_of

BAD_VALUES = [None, "x", -1, 1e308, float("nan"), [], {}, "9" * 400, True]
# Every request that takes arguments, with each of its fields.
FIELDS = {
    "vnc_wait": ["timeout_s"],
    "stop": ["timeout_s", "signal"],
    "resize": ["columns", "lines"],
    "mount_add": ["source", "target", "options"],
    "mount_del": ["target"],
    "migrate": ["target", "ssh", "dry_run"],
}


@contextmanager
def connected(inst: Instance, name: str) -> Iterator[socket.socket]:
    ddir = os.open(inst.state / "domains" / name, os.O_PATH | os.O_DIRECTORY)
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(30)
            s.connect(f"/proc/self/fd/{ddir}/ctl.sock")
            yield s
    finally:
        os.close(ddir)


def ask(s: socket.socket, raw: bytes) -> dict:
    """Send one request; its reply (events the controller broadcasts meanwhile skipped)."""
    s.sendall(raw + b"\n")
    data = b""
    while True:
        while b"\n" not in data:
            chunk = s.recv(65536)
            assert chunk, "the controller closed the connection"
            data += chunk
        line, _, data = data.partition(b"\n")
        msg = json.loads(line)
        if "id" in msg:
            assert not data or b'"id"' not in data, "one reply per request"
            return msg



def request(op: str, **fields: object) -> bytes:
    return json.dumps({"id": 7, "op": op, **fields}).encode()


def test_malformed_requests_get_error_replies_and_the_domain_runs_on(instance: Instance) -> None:
    instance.quick("b1")
    instance.write("b1", "state", "start")
    init = int(instance.read("b1", "pid"))
    ctl = controller_of(instance, "b1")
    replies = 0
    with connected(instance, "b1") as s:
        for op, fields in FIELDS.items():
            for field in fields:
                for bad in BAD_VALUES:
                    if op == "migrate" and (field != "target" or isinstance(bad, str)):
                        # No host is ever contacted: a string target would be one (and
                        # dry_run is a truth value, any value is one), so these go with
                        # a target that does not parse.
                        raw = request(op, **{"target": "", field: bad})
                    else:
                        raw = request(op, **{field: bad})
                    reply = ask(s, raw)
                    replies += 1
                    if reply.get("ok"):
                        # Only what is harmless may succeed (a wait).
                        assert op in ("vnc_wait",), (op, field, bad, reply)
                    else:
                        assert isinstance(reply.get("errno"), int) and reply.get("error"), reply
            if op not in ("vnc_wait", "stop"):   # (those two have defaults for all)
                reply = ask(s, request(op))        # every field missing
                replies += 1
                assert reply.get("ok") is False, (op, reply)
        for raw in (b'{"id": 1, "op": "nothing-like-it"}', b'{"id": [1, 2], "op": "status"}',
                    b'{"id": {"a": 1}, "op": "resize", "columns": "x"}'):
            reply = ask(s, raw)
            replies += 1
            assert "id" in reply
    # Line-level garbage ends that connection (closed at once), and only it.
    for raw in (b"\xff\xfe not json", b"[1, 2, 3]", b"{" * 10_000, b"x" * (2 << 20)):
        with connected(instance, "b1") as s:
            s.settimeout(5)
            try:
                s.sendall(raw + b"\n")
                assert s.recv(1) == b""
            except (ConnectionResetError, BrokenPipeError):
                pass                     # (closed while we still sent, our bytes unread)
    print(f"{replies} malformed requests answered")
    assert controller_of(instance, "b1") == ctl            # the same controller
    assert int(instance.read("b1", "pid")) == init        # the same container
    assert instance.read("b1", "state").strip() == "running"
    with connected(instance, "b1") as s:
        assert ask(s, request("status"))["ok"] is True
    instance.write("b1", "state", "stop")
    wait_for(lambda: instance.read("b1", "state").strip() == "stopped", what="the stop")

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
from vzfs.wire import messages

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


# Every request kind (wire/messages.py) with each field it declares, and what a bad
# value of it is: the wrong JSON type, out of range, huge. A kind without fields is
# sent with its name as the wrong type, and with fields it does not have (ignored:
# only the harmless ones, since they are then carried out).
HUGE = [10 ** 30, 1e308, -1e308, "/" + "x" * 100_000, ["w"] * 10_000, {"k": "v" * 100_000}]
WRONG = [None, True, "1", 1.5, [], {}, -1]
KINDS: dict[str, dict[str, object]] = {
    # kind: a good value of each field (the others go in with it, so that only the
    # one under test is wrong)
    "status": {}, "stats": {}, "screen": {}, "mounts": {}, "save_screen": {},
    "pause": {}, "resume": {}, "suspend": {}, "migrate_cancel": {},
    "vnc_wait": {"timeout_s": 0.0},
    "stop": {"signal": 15, "timeout_s": 5.0},
    "kill": {"signal": 15, "timeout_s": 5.0},
    "mount_add": {"source": "/nonexistent-vzfs-source", "target": "/mnt", "options": "ro"},
    "mount_del": {"target": "/nonexistent-vzfs-target"},
    "resize": {"columns": 80, "lines": 25},
    "migrate": {"target": "", "dry_run": True, "ssh": ["ssh"]},
}
HARMLESS = ("status", "stats", "screen", "mounts", "save_screen", "vnc_wait")


def fine(good: object, bad: object) -> bool:
    """*bad* of WRONG is a good value for *good*'s field after all: the same JSON type
    (a string, a list, a truth value), a number in range (every int field's range is
    positive, every float field's 0 to MAX_TIMEOUT_S)."""
    if isinstance(good, (bool, str, list)):
        return type(bad) is type(good)
    if isinstance(good, float):
        return isinstance(bad, float) and 0 <= bad <= messages.MAX_TIMEOUT_S
    return False


def test_every_request_kind_refuses_what_its_schema_does_not_allow(instance: Instance) -> None:
    """Wrong types, missing fields and huge values for every field of every request kind
    (a kill and a stop among them, whose refusal leaves the domain running): each gets
    EINVAL with a sentence, the domain runs on with the same init, and the next good
    request on the same connection is answered."""
    assert set(KINDS) == set(messages.REQUESTS) - {"console"}, "a request kind is not tested"
    instance.quick("b2")
    instance.write("b2", "state", "start")
    init = int(instance.read("b2", "pid"))
    ctl = controller_of(instance, "b2")
    refused = 0
    with connected(instance, "b2") as s:
        def refuses(op: object, fields: dict[str, object], field: str) -> None:
            nonlocal refused
            reply = ask(s, json.dumps({"id": 9, "op": op, **fields}).encode())
            assert reply["id"] == 9 and reply.get("ok") is False, (op, field, reply)
            assert reply["errno"] == 22, (op, field, reply)           # EINVAL
            assert field in reply["error"] and len(reply["error"]) < 400, reply["error"]
            refused += 1
            # The next good request on this connection is answered.
            assert ask(s, request("status"))["ok"] is True

        for op, good in KINDS.items():
            for field in good:
                for bad in WRONG + HUGE:
                    if bad in WRONG and fine(good[field], bad):
                        continue
                    refuses(op, {**good, field: bad}, field)
                if op not in ("stop", "kill", "vnc_wait", "migrate") or field == "target":
                    # (stop, kill, vnc_wait and a dry run have defaults: a field left out
                    # is not missing)
                    if not (op == "mount_add" and field == "options"):
                        refuses(op, {k: v for k, v in good.items() if k != field}, field)
            for bad_op in ([op], {op: 1}, op.upper(), f" {op}", 7):
                refuses(bad_op, good, "request")
            if op in HARMLESS:
                reply = ask(s, json.dumps({"id": 9, "op": op, **good, "junk": [1, {}]}).encode())
                assert reply["ok"] is True, (op, reply)
        # The freezer with fields it does not have: carried out, and undone.
        assert ask(s, request("pause", junk=1))["state"] == "paused"
        assert ask(s, request("resume", junk=None))["state"] == "running"
    print(f"{refused} malformed requests refused")
    assert controller_of(instance, "b2") == ctl            # the same controller
    assert int(instance.read("b2", "pid")) == init        # the same container
    assert instance.read("b2", "state").strip() == "running"
    assert "pids 0\n" not in instance.read("b2", "stats")
    instance.write("b2", "state", "kill")
    assert instance.read("b2", "state").strip() == "stopped"

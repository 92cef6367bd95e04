"""The typed daemon ⇄ controller messages (wire/messages.py), byte for byte: each message
encodes to exactly the line the daemon and the controller have always exchanged,
decodes back to itself whole, split byte by byte and with trailing bytes, and a
malformed one is refused with EINVAL and a sentence naming the field."""

import errno
import json

from typing import get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vzfs.model.mountspec import MountSpec
from vzfs.wire import messages as m
from vzfs.wire.framing import Decoder, encode

# (message, the line as the daemon's Requests.ask writes it: {"id", "op", **fields}).
REQUESTS = [
    (m.Status(), b'{"id":7,"op":"status"}\n'),
    (m.VncWait(10.0), b'{"id":7,"op":"vnc_wait","timeout_s":10.0}\n'),
    (m.Stop(37, 10.0), b'{"id":7,"op":"stop","signal":37,"timeout_s":10.0}\n'),
    (m.Stop(), b'{"id":7,"op":"stop"}\n'),
    (m.Kill(30, 2.5), b'{"id":7,"op":"kill","signal":30,"timeout_s":2.5}\n'),
    (m.Stats(), b'{"id":7,"op":"stats"}\n'),
    (m.Screen(), b'{"id":7,"op":"screen"}\n'),
    (m.Mounts(), b'{"id":7,"op":"mounts"}\n'),
    (m.MountAdd("/srv/data", "/data", "ro,nosuid"),
     b'{"id":7,"op":"mount_add","source":"/srv/data","target":"/data","options":"ro,nosuid"}\n'),
    (m.MountAdd("tmpfs", "/t", ""),
     b'{"id":7,"op":"mount_add","source":"tmpfs","target":"/t","options":""}\n'),
    (m.MountDel("/data"), b'{"id":7,"op":"mount_del","target":"/data"}\n'),
    (m.Pause(), b'{"id":7,"op":"pause"}\n'),
    (m.Resume(), b'{"id":7,"op":"resume"}\n'),
    (m.Suspend(), b'{"id":7,"op":"suspend"}\n'),
    (m.Migrate("ssh://root@host2:2222/run/vzfs", True, ("ssh", "-F", "/etc/ssh/x")),
     b'{"id":7,"op":"migrate","target":"ssh://root@host2:2222/run/vzfs","dry_run":true,'
     b'"ssh":["ssh","-F","/etc/ssh/x"]}\n'),
    (m.MigrateCancel(), b'{"id":7,"op":"migrate_cancel"}\n'),
    (m.SaveScreen(), b'{"id":7,"op":"save_screen"}\n'),
    (m.Resize(100, 30), b'{"id":7,"op":"resize","columns":100,"lines":30}\n'),
]

# (event, the line the controller broadcasts).
EVENTS = [
    (m.StatusEvent("running", 4242, 1700000000.25, 4300, 4241, False, "127.0.0.1:5901",
                   "127.0.0.1:5701", 4310, 0, "", 0),
     b'{"event":"status","state":"running","pid":4242,"started_at":1700000000.25,'
     b'"controller_pid":4300,"keeper_pid":4241,"rootfs_shifted":false,"vnc":"127.0.0.1:5901",'
     b'"vnc_websocket":"127.0.0.1:5701","vnc_pid":4310,"vnc_restarts":0,"vnc_error":"",'
     b'"vnc_errno":0}\n'),
    (m.StartFailed(errno.ENOENT, "no init"),
     b'{"event":"start_failed","errno":2,"error":"no init"}\n'),
    (m.Exited("crashed", "init exited with status 1", "$ \u00fc\n"),
     b'{"event":"exited","state":"crashed","reason":"init exited with status 1",'
     b'"screen":"$ \\u00fc\\n"}\n'),
    (m.Rebooted(99, 1.5), b'{"event":"rebooted","pid":99,"started_at":1.5}\n'),
    (m.VncChanged("", "", "Address in use", 98),
     b'{"event":"vnc","vnc":"","vnc_websocket":"","vnc_error":"Address in use","vnc_errno":98}\n'),
    (m.VncRestarted(3), b'{"event":"vnc_restarted","restarts":3}\n'),
    (m.MigrateProgress({"target": "h", "phase": "copy", "percent": 40}),
     b'{"event":"migrate","record":{"target":"h","phase":"copy","percent":40}}\n'),
    (m.MigrateFailed("copy failed: x", {"status": "failed"}),
     b'{"event":"migrate_failed","error":"copy failed: x","record":{"status":"failed"}}\n'),
]

# (reply payload, the reply to request 7 as the controller has always written it).
REPLIES = [
    (None, b'{"id":7,"ok":true}\n'),
    (m.Ended("stopped", "init exited with status 0", "bye"),
     b'{"id":7,"ok":true,"state":"stopped","reason":"init exited with status 0","screen":"bye"}\n'),
    (m.Suspended("suspended", "suspended to disk", "", {"dump_ms": 12.5, "dumped_at": 3.0}),
     b'{"id":7,"ok":true,"state":"suspended","reason":"suspended to disk","screen":"",'
     b'"dump_ms":12.5,"dumped_at":3.0}\n'),
    (m.Counters({"cpu_ns": 5, "memory_bytes": 4096, "pids": 2}),
     b'{"id":7,"ok":true,"cpu_ns":5,"memory_bytes":4096,"pids":2}\n'),
    (m.ScreenText("a\nb", 80, 25, "t"),
     b'{"id":7,"ok":true,"text":"a\\nb","columns":80,"lines":25,"title":"t"}\n'),
    (m.MountLines(("/srv /data ro",)), b'{"id":7,"ok":true,"lines":["/srv /data ro"]}\n'),
    (m.FreezerState("paused"), b'{"id":7,"ok":true,"state":"paused"}\n'),
    (m.MigrateRecord({"status": "checked"}), b'{"id":7,"ok":true,"record":{"status":"checked"}}\n'),
    (m.ScreenSaved("/.vzfs/screen.json"), b'{"id":7,"ok":true,"path":"/.vzfs/screen.json"}\n'),
    (m.Resized(100, 30), b'{"id":7,"ok":true,"columns":100,"lines":30}\n'),
    (EVENTS[0][0], b'{"id":7,"ok":true,' + EVENTS[0][1][1:]),
]


@pytest.mark.parametrize("req,line", REQUESTS, ids=[r.NAME for r, _ in REQUESTS])
def test_a_request_is_the_line_the_daemon_sends(req: m.Request, line: bytes) -> None:
    assert encode(m.request(7, req)) == line
    assert m.decode(json.loads(line)) == req
    assert encode(m.request(7, m.decode(json.loads(line)))) == line


def test_the_console_request_has_no_id() -> None:
    assert encode(m.to_wire(m.Console())) == b'{"op":"console"}\n'
    assert m.decode({"op": "console"}) == m.Console()


@pytest.mark.parametrize("event,line", EVENTS, ids=[e.NAME for e, _ in EVENTS])
def test_an_event_is_the_line_the_controller_broadcasts(event: m.Event, line: bytes) -> None:
    assert encode(m.to_wire(event)) == line
    assert m.decode_event(json.loads(line)) == event


@pytest.mark.parametrize("payload,line", REPLIES, ids=[type(p).__name__ for p, _ in REPLIES])
def test_a_reply_is_the_line_the_controller_writes(payload: m.Reply | None, line: bytes) -> None:
    assert encode(m.reply(7, payload)) == line
    if payload is not None:
        assert m.from_wire(type(payload), json.loads(line)) == payload


def test_every_kind_is_in_the_tables() -> None:
    assert {r.NAME for r, _ in REQUESTS} | {"console"} == set(m.REQUESTS)
    assert {e.NAME for e, _ in EVENTS} == set(m.EVENTS)


def test_a_stream_of_them_decodes_whole_byte_by_byte_and_with_trailing_bytes() -> None:
    lines = [line for _, line in REQUESTS]
    data = b"".join(lines)
    d = Decoder()
    got = []
    for i in range(len(data)):
        got.extend(d.feed(data[i:i + 1]))
    assert [m.decode(msg) for msg in got] == [r for r, _ in REQUESTS]
    d = Decoder()
    assert [m.decode(msg) for msg in d.feed(data + lines[0][:9])] == [r for r, _ in REQUESTS]
    assert d.take_rest() == lines[0][:9]


def test_integers_in_number_fields_stay_as_they_came() -> None:
    # (REQUEST_TIMEOUT may be written 10 or 10.0: the bytes go back as they came)
    line = b'{"id":7,"op":"vnc_wait","timeout_s":10}\n'
    assert encode(m.request(7, m.decode(json.loads(line)))) == line


def test_mount_add_gives_its_spec() -> None:
    assert m.MountAdd("/s", "/t", "ro,,nodev").spec() == MountSpec("/s", "/t", ("ro", "nodev"))
    spec = MountSpec("/s", "/t", ("ro", "nodev"))
    assert m.MountAdd.of(spec) == m.MountAdd("/s", "/t", "ro,nodev")
    assert m.MountAdd.of(spec).spec() == spec


def test_every_request_says_what_answers_it() -> None:
    assert set(m.ANSWERS) == set(m.REQUESTS.values()) - {m.Console}
    assert set(m.ANSWERS.values()) - {None} <= set(get_args(m.Reply))


def test_unknown_fields_are_ignored() -> None:
    assert m.decode({"id": 1, "op": "kill", "signal": 9, "timeout_s": 1, "future": [1]}) == \
        m.Kill(9, 1)


# (request, the field that is wrong, what the sentence says about it)
MALFORMED = [
    ({"op": "resize", "columns": 1, "lines": 30}, "columns", "from 2 to 1000, not 1"),
    ({"op": "resize", "columns": 80}, "lines", "needs lines"),
    ({"op": "resize", "columns": "80", "lines": 30}, "columns", "an integer"),
    ({"op": "resize", "columns": 80.0, "lines": 30}, "columns", "an integer"),
    ({"op": "resize", "columns": True, "lines": 30}, "columns", "not True"),
    ({"op": "resize", "columns": 10 ** 30, "lines": 30}, "columns", "from 2 to 1000"),
    ({"op": "stop", "signal": 65}, "signal", "from 1 to 64"),
    ({"op": "stop", "signal": 15, "timeout_s": None}, "timeout_s", "not null"),
    ({"op": "stop", "timeout_s": 1e308}, "timeout_s", "from 0 to 86400"),
    ({"op": "stop", "timeout_s": float("nan")}, "timeout_s", "not nan"),
    ({"op": "kill", "signal": "9"}, "signal", "an integer"),
    ({"op": "vnc_wait", "timeout_s": -1}, "timeout_s", "from 0 to 86400"),
    ({"op": "vnc_wait", "timeout_s": []}, "timeout_s", "a number"),
    ({"op": "mount_add", "target": "/t"}, "source", "needs source"),
    ({"op": "mount_add", "source": 5, "target": "/t"}, "source", "a string"),
    ({"op": "mount_add", "source": "/s", "target": "/" * 5000}, "target", "at most 4096"),
    ({"op": "mount_add", "source": "/s", "target": "/t", "options": ["ro"]}, "options",
     "a string"),
    ({"op": "mount_del"}, "target", "needs target"),
    ({"op": "migrate"}, "target", "needs target"),
    ({"op": "migrate", "target": {}}, "target", "a string"),
    ({"op": "migrate", "target": "h", "dry_run": 1}, "dry_run", "true or false"),
    ({"op": "migrate", "target": "h", "ssh": "ssh"}, "ssh", "a list"),
    ({"op": "migrate", "target": "h", "ssh": ["ssh", 1]}, "ssh[1]", "a string"),
    ({"op": "migrate", "target": "h", "ssh": ["x"] * 65}, "ssh", "at most 64"),
]


@pytest.mark.parametrize("msg,field,says", MALFORMED)
def test_a_malformed_request_is_einval_naming_the_field(msg: dict, field: str, says: str) -> None:
    with pytest.raises(m.Malformed) as info:
        m.decode(msg)
    assert info.value.errno == errno.EINVAL
    assert f"a {msg['op']} request" in info.value.sentence
    assert field in info.value.sentence and says in info.value.sentence, info.value.sentence
    assert len(info.value.sentence) < 200


@pytest.mark.parametrize("op", [None, 5, "nothing-like-it", ["kill"], "x" * 10_000])
def test_an_unknown_op_is_einval(op: object) -> None:
    with pytest.raises(m.Malformed) as info:
        m.decode({"id": 1, "op": op})
    assert info.value.sentence.startswith("unknown controller request ")
    assert len(info.value.sentence) < 100


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=8)
FIELDS = sorted({f for cls in m.REQUESTS.values() for f in cls.__dataclass_fields__})


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(m.REQUESTS)) | JSON,
       st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=4), JSON, max_size=4))
def test_any_json_object_decodes_or_is_malformed(op: object, fields: dict) -> None:
    try:
        req = m.decode({**fields, "op": op})
    except m.Malformed as exc:
        assert exc.errno == errno.EINVAL and exc.sentence
        return
    # What decodes goes back as it came (the fields the request declares; the others
    # are dropped, and absent ones take their defaults).
    wire = m.to_wire(req)
    assert m.decode(wire) == req
    declared = req.__dataclass_fields__
    assert {k: v for k, v in fields.items() if k in declared} == \
        {k: v for k, v in wire.items() if k in fields and k != "op"}

"""The daemon ⇄ controller messages as types (pure): one frozen dataclass per request, per
event and per reply that has fields, decoded with their types and ranges checked.

Theory of operation
-------------------
framing.py carries JSON objects; this module says what they may hold. Each message
is a frozen dataclass, and its annotations are its schema:

* the JSON type: ``int``, ``float`` (a JSON integer is one too, and stays as it came,
  so that a message decoded and encoded again is the same bytes), ``bool``, ``str``,
  ``tuple[X, ...]`` (a JSON list of X), ``dict[str, V]`` (an object), or a class with
  ``to_json``/``from_json`` (a MountSpec);
* ``Annotated[T, Range(lo, hi)]`` bounds a number's value, or a text's or a list's
  length;
* a field with a default may be absent; one whose default is None is left out of the
  wire form while it is None (absent is not ``null``: a ``null`` is a wrong type);
* ``Annotated[dict[str, V], FLAT]`` spreads its items among the other fields (the
  figures of a suspend, the counters of `stats`).

A request names itself with ``op`` (``NAME``), an event with ``event``; a reply's
payload has no name of its own: it is spread into ``{"id": …, "ok": true, …}`` after
the request it answers. `decode` turns a request object into its dataclass or raises
`Malformed` (EINVAL, a sentence that names the request and the field), which the
controller's one error boundary sends back as the reply: a wrong type, a missing
field, a value out of range or an unknown op costs one error reply, never more.
Fields a message does not declare are ignored (a daemon newer than its controller
may send more; the daemon sends a kill its stop's fields). `to_wire` is the inverse
and gives, key for key and in the same order, the objects the daemon and the
controller have always exchanged (tests/test_messages.py holds them byte for byte).
"""

import dataclasses
import math
import types
from collections.abc import Callable, Mapping
from errno import EINVAL
from typing import Annotated, Any, ClassVar, TypeVar, Union, get_args, get_origin, get_type_hints

from ..base.errors import VzfsError
from ..model.mountspec import MountSpec
from .framing import Message, reply_ok

MAX_TEXT = 4096                  # a request's text field: a path, a host (PATH_MAX)
MAX_WORDS = 64                   # a request's list of words: an ssh command
MAX_TIMEOUT_S = 86400.0          # a day: no wait of the protocol is longer
MAX_INT = 1 << 63                # no int the protocol carries comes near


@dataclasses.dataclass(frozen=True)
class Range:
    """The bounds of a number, or of a text's or a list's length (both included)."""
    lo: float
    hi: float


FLAT = "flat"                     # Annotated marker: the dict's items sit among the fields


class Malformed(VzfsError):
    """A message that is not what its schema says: EINVAL, and why in a sentence."""

    def __init__(self, sentence: str) -> None:
        super().__init__(EINVAL, sentence)


# -- requests (daemon → controller) -----------------------------------------------

class _Request:
    KEY: ClassVar[str] = "op"
    NAME: ClassVar[str]


@dataclasses.dataclass(frozen=True)
class Status(_Request):
    NAME = "status"


@dataclasses.dataclass(frozen=True)
class VncWait(_Request):
    """Reply (a status) once the first VNC server listens or failed to, or after timeout_s."""
    NAME = "vnc_wait"
    timeout_s: Annotated[float, Range(0, MAX_TIMEOUT_S)] = 10.0


@dataclasses.dataclass(frozen=True)
class Stop(_Request):
    """Init's stop signal, SIGTERM, SIGKILL at timeout_s (None: the config's)."""
    NAME = "stop"
    signal: Annotated[int, Range(1, 64)] | None = None
    timeout_s: Annotated[float, Range(0, MAX_TIMEOUT_S)] | None = None


@dataclasses.dataclass(frozen=True)
class Kill(_Request):
    """SIGKILL to every process now. The daemon sends it its stop's fields, unused."""
    NAME = "kill"
    signal: Annotated[int, Range(1, 64)] | None = None
    timeout_s: Annotated[float, Range(0, MAX_TIMEOUT_S)] | None = None


@dataclasses.dataclass(frozen=True)
class Stats(_Request):
    NAME = "stats"


@dataclasses.dataclass(frozen=True)
class Screen(_Request):
    NAME = "screen"


@dataclasses.dataclass(frozen=True)
class Mounts(_Request):
    NAME = "mounts"


@dataclasses.dataclass(frozen=True)
class MountAdd(_Request):
    """Mount *source* at *target* in the running container; *options* comma-separated."""
    NAME = "mount_add"
    source: Annotated[str, Range(0, MAX_TEXT)]
    target: Annotated[str, Range(0, MAX_TEXT)]
    options: Annotated[str, Range(0, MAX_TEXT)] = ""

    def spec(self) -> MountSpec:
        return MountSpec(self.source, self.target, tuple(o for o in self.options.split(",") if o))

    @classmethod
    def of(cls, spec: MountSpec) -> "MountAdd":
        return cls(spec.source, spec.target, ",".join(spec.options))


@dataclasses.dataclass(frozen=True)
class MountDel(_Request):
    NAME = "mount_del"
    target: Annotated[str, Range(0, MAX_TEXT)]


@dataclasses.dataclass(frozen=True)
class Pause(_Request):
    NAME = "pause"


@dataclasses.dataclass(frozen=True)
class Resume(_Request):
    NAME = "resume"


@dataclasses.dataclass(frozen=True)
class Suspend(_Request):
    NAME = "suspend"


@dataclasses.dataclass(frozen=True)
class Migrate(_Request):
    """Move the domain to *target* (migrate/target.py's syntax); *ssh*: the daemon's
    ssh command; *dry_run*: the preflight alone."""
    NAME = "migrate"
    target: Annotated[str, Range(0, MAX_TEXT)]
    dry_run: bool = False
    ssh: Annotated[tuple[Annotated[str, Range(0, MAX_TEXT)], ...], Range(0, MAX_WORDS)] | None = None


@dataclasses.dataclass(frozen=True)
class MigrateCancel(_Request):
    NAME = "migrate_cancel"


@dataclasses.dataclass(frozen=True)
class SaveScreen(_Request):
    NAME = "save_screen"


@dataclasses.dataclass(frozen=True)
class Resize(_Request):
    NAME = "resize"
    columns: Annotated[int, Range(2, 1000)]
    lines: Annotated[int, Range(2, 1000)]


@dataclasses.dataclass(frozen=True)
class Console(_Request):
    """The connection carries the console stream from now on (consolestream.py); sent
    without an id, never answered."""
    NAME = "console"


Request = Union[Status, VncWait, Stop, Kill, Stats, Screen, Mounts, MountAdd, MountDel, Pause,
                Resume, Suspend, Migrate, MigrateCancel, SaveScreen, Resize, Console]
REQUESTS: dict[str, type[Request]] = {cls.NAME: cls for cls in get_args(Request)}


# -- events (controller → daemon, no id) ---------------------------------------------

class _Event:
    KEY: ClassVar[str] = "event"
    NAME: ClassVar[str]


@dataclasses.dataclass(frozen=True)
class StatusEvent(_Event):
    """The running domain as the controller sees it: its start's report (the first
    message on the start's socket) and the reply to `status` and `vnc_wait`."""
    NAME = "status"
    state: str
    pid: int
    started_at: float
    controller_pid: int
    keeper_pid: int
    rootfs_shifted: bool
    vnc: str
    vnc_websocket: str
    vnc_pid: int
    vnc_restarts: int
    vnc_error: str
    vnc_errno: int


@dataclasses.dataclass(frozen=True)
class StartFailed(_Event):
    NAME = "start_failed"
    errno: int
    error: str


@dataclasses.dataclass(frozen=True)
class Exited(_Event):
    """The domain ended: *state* stopped, crashed, suspended or migrated."""
    NAME = "exited"
    state: str
    reason: str
    screen: str


@dataclasses.dataclass(frozen=True)
class Rebooted(_Event):
    NAME = "rebooted"
    pid: int
    started_at: float


@dataclasses.dataclass(frozen=True)
class VncChanged(_Event):
    """Where the VNC server listens now ("" when none), or why none can."""
    NAME = "vnc"
    vnc: str
    vnc_websocket: str
    vnc_error: str
    vnc_errno: int


@dataclasses.dataclass(frozen=True)
class VncRestarted(_Event):
    NAME = "vnc_restarted"
    restarts: int


@dataclasses.dataclass(frozen=True)
class MigrateProgress(_Event):
    """A migration's record (migrate/source.py) at a phase, or its progress."""
    NAME = "migrate"
    record: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class MigrateFailed(_Event):
    NAME = "migrate_failed"
    error: str
    record: dict[str, Any]


Event = Union[StatusEvent, StartFailed, Exited, Rebooted, VncChanged, VncRestarted,
              MigrateProgress, MigrateFailed]
EVENTS: dict[str, type[Event]] = {cls.NAME: cls for cls in get_args(Event)}


# -- replies' payloads (spread after "id" and "ok") -------------------------------------

class _Reply:
    KEY: ClassVar[str] = ""
    NAME: ClassVar[str] = ""


@dataclasses.dataclass(frozen=True)
class Ended(_Reply):
    """To stop and kill: how the domain ended."""
    state: str
    reason: str
    screen: str


@dataclasses.dataclass(frozen=True)
class Suspended(_Reply):
    """To suspend: the end, and the checkpoint's figures (checkpoint.dump)."""
    state: str
    reason: str
    screen: str
    figures: Annotated[dict[str, float], FLAT]


@dataclasses.dataclass(frozen=True)
class Counters(_Reply):
    """To stats: the cgroup's counters (cgroups.Cgroup.stats)."""
    values: Annotated[dict[str, int], FLAT]


@dataclasses.dataclass(frozen=True)
class ScreenText(_Reply):
    text: str
    columns: int
    lines: int
    title: str


@dataclasses.dataclass(frozen=True)
class MountLines(_Reply):
    """To mounts: the live mounts, one fstab-like line each."""
    lines: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class FreezerState(_Reply):
    """To pause and resume: the state after."""
    state: str


@dataclasses.dataclass(frozen=True)
class MigrateRecord(_Reply):
    record: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class ScreenSaved(_Reply):
    path: str


@dataclasses.dataclass(frozen=True)
class Resized(_Reply):
    columns: int
    lines: int


Reply = Union[StatusEvent, Ended, Suspended, Counters, ScreenText, MountLines, FreezerState,
              MigrateRecord, ScreenSaved, Resized]

# What each request is answered with: a reply's payload, or None for a bare
# {"id": …, "ok": true}. The controller's handlers return it (controller/server.py, whose
# table a test holds to this one) and the daemon reads the reply as it (daemon/controllers.py).
ANSWERS: dict[type[Request], type[Reply] | None] = {
    Status: StatusEvent, VncWait: StatusEvent, Stop: Ended, Kill: Ended, Stats: Counters,
    Screen: ScreenText, Mounts: MountLines, MountAdd: None, MountDel: None,
    Pause: FreezerState, Resume: FreezerState, Suspend: Suspended, Migrate: MigrateRecord,
    MigrateCancel: None, SaveScreen: ScreenSaved, Resize: Resized,
}


# -- the codec --------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Kind:
    """What one value must be: its Python type, bounds, and (lists, objects) its items'."""
    base: Any
    bounds: Range | None = None
    item: "_Kind | None" = None


@dataclasses.dataclass(frozen=True)
class _Field:
    name: str
    kind: _Kind
    flat: bool
    required: bool


def _kind(hint: Any) -> tuple[_Kind, bool]:
    """A field's annotation as a _Kind, and whether it is FLAT."""
    bounds, flat = None, False
    if get_origin(hint) is Annotated:
        hint, *extras = get_args(hint)
        bounds = next((e for e in extras if isinstance(e, Range)), None)
        flat = FLAT in extras
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        inner = [a for a in get_args(hint) if a is not type(None)]
        assert len(inner) == 1, hint
        return _kind(inner[0])[0], flat
    if origin is tuple:
        return _Kind(tuple, bounds, _kind(get_args(hint)[0])[0]), flat
    if origin is dict:
        return _Kind(dict, bounds, _kind(get_args(hint)[1])[0]), flat
    return _Kind(hint, bounds), flat


_SCHEMAS: dict[type, tuple[_Field, ...]] = {}


def _schema(cls: type) -> tuple[_Field, ...]:
    """The fields of message type *cls*, read from its annotations once."""
    found = _SCHEMAS.get(cls)
    if found is None:
        hints = get_type_hints(cls, include_extras=True)
        found = _SCHEMAS[cls] = tuple(
            _Field(f.name, *_kind(hints[f.name]),
                   required=f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING)
            for f in dataclasses.fields(cls))
    return found


def _expected(kind: _Kind) -> str:
    b = kind.bounds
    if kind.base is bool:
        return "true or false"
    if kind.base in (int, float):
        what = "an integer" if kind.base is int else "a number"
        return f"{what} from {b.lo:g} to {b.hi:g}" if b else what
    if kind.base is str:
        return f"a string of at most {b.hi:g} characters" if b else "a string"
    if kind.base is tuple:
        return f"a list of at most {b.hi:g} items" if b else "a list"
    if kind.base is dict:
        return "an object"
    return f"a {kind.base.__name__} object"


def _check(kind: Any, value: Any, where: str) -> Any:
    """*value* as *kind* says, or Malformed naming *where*."""
    base, b = kind.base, kind.bounds
    if base is Any:
        return value
    ok = True
    if base is bool:
        ok = isinstance(value, bool)
    elif base is int:
        ok = isinstance(value, int) and not isinstance(value, bool) and \
            (b.lo <= value <= b.hi if b else -MAX_INT < value < MAX_INT)
    elif base is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and \
            math.isfinite(value) and (b is None or b.lo <= value <= b.hi)
    elif base in (str, tuple, dict):
        ok = isinstance(value, {str: str, tuple: list, dict: dict}[base]) and \
            (b is None or b.lo <= len(value) <= b.hi)
        if ok and base is tuple:
            value = tuple(_check(kind.item, v, f"{where}[{i}]") for i, v in enumerate(value))
        elif ok and base is dict:
            value = {str(k): _check(kind.item, v, f"{where}.{k}") for k, v in value.items()}
    else:
        if not isinstance(value, dict):
            ok = False
        else:
            try:
                value = base.from_json(value)
            except (KeyError, TypeError, ValueError) as exc:
                raise Malformed(f"{where} is not {_expected(kind)} ({exc})") from None
    if not ok:
        raise Malformed(f"{where} must be {_expected(kind)}, not {_show(value)}")
    return value


def _show(value: Any, show: Callable[[Any], str] = lambda v: "null" if v is None else repr(v)
          ) -> str:
    """*value* for a sentence, as JSON would call it (or by *show*), at most 40 characters."""
    text = show(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _encode(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_encode(v) for v in value]
    if hasattr(value, "to_json"):
        return value.to_json()
    return value


W = TypeVar("W")


def from_wire(cls: type[W], msg: Mapping[str, Any], what: str = "") -> W:
    """*msg* as a *cls* (a message dataclass), or Malformed. *what* names the message in
    the sentence (default: its NAME)."""
    what = what or getattr(cls, "NAME", "") or cls.__name__
    schema = _schema(cls)
    values: dict[str, Any] = {}
    for f in schema:
        if f.flat:
            taken = {g.name for g in schema} | {"id", "ok", "op", "event"}
            values[f.name] = _check(f.kind, {k: v for k, v in msg.items() if k not in taken},
                                    f"{what}'s {f.name}")
        elif f.name in msg:
            values[f.name] = _check(f.kind, msg[f.name], f"{what}'s {f.name}")
        elif f.required:
            raise Malformed(f"{what} needs {f.name} ({_expected(f.kind)})")
    return cls(**values)


def to_wire(obj: Any) -> Message:
    """The JSON object of a message: its name under its KEY (a request's op, an event's
    event), then its fields in order, None ones left out, FLAT ones spread."""
    out: Message = {obj.KEY: obj.NAME} if obj.KEY else {}
    for f in _schema(type(obj)):
        value = getattr(obj, f.name)
        if value is None:
            continue
        if f.flat:
            out.update(value)
        else:
            out[f.name] = _encode(value)
    return out


def decode_named(msg: Mapping[str, Any], key: str, kinds: Mapping[str, type[W]],
                 what: str) -> W:
    """The message of *kinds* that *msg* names under *key* (its op, its event), checked
    whole; *what* names such messages in the sentence ("controller request")."""
    name = msg.get(key)
    cls = kinds.get(name) if isinstance(name, str) else None
    if cls is None:
        raise Malformed(f"unknown {what} {_show(name, repr)}")
    return from_wire(cls, msg, f"a {name} {what.rpartition(' ')[2]}")


def decode(msg: Mapping[str, Any]) -> Request:
    """A request (its id is not checked: the reply echoes whatever it was)."""
    return decode_named(msg, "op", REQUESTS, "controller request")


def decode_event(msg: Mapping[str, Any]) -> Event:
    return decode_named(msg, "event", EVENTS, "controller event")


def request(req_id: Any, req: Request) -> Message:
    """A request as sent: its id first (wire.requests)."""
    return {"id": req_id, **to_wire(req)}


def reply(req_id: Any, payload: Reply | None) -> Message:
    """A success reply to request *req_id*, with *payload*'s fields."""
    return reply_ok(req_id, **(to_wire(payload) if payload is not None else {}))


def prepare(*classes: type) -> None:
    """Read the schemas of message types *classes* now, not at their first use: the first
    message a controller sends (its start's report) is on the start's path, and a
    controller forked from the zygote inherits what the zygote read."""
    for cls in classes:
        _schema(cls)


prepare(*REQUESTS.values(), *EVENTS.values(), *get_args(Reply))

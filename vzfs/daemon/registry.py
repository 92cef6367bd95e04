"""The daemon's model of its domains: definitions on disk, states, and their controllers.

The registry owns every domain's `DomainConfig` (stored as TOML in the state
dir), its lifecycle state, and the connection to its controller. Verbs check the
lifecycle table first and change the state before their first await, so of two
concurrent `start`s one wins and the other gets EBUSY.
"""

import dataclasses
import errno
import json
import logging
import os
import select
import shutil
import socket
import time
from collections.abc import Callable
from typing import Any

import trio

from ..base.atomicfile import atomic_write
from ..base.errors import VzfsError, from_oserror
from ..controller import checkpoint, paths
from ..kernel import cgroups
from ..kernel import criu as criumod
from ..model import config as configmod
from ..model import idmap as idmapmod
from ..model import lifecycle, mountspec
from ..model.config import DomainConfig, Mount
from ..model.lifecycle import State
from ..wire.consolestream import FrameDecoder, FrameError, Ring, input_frame
from ..wire.framing import Decoder, Message, ProtocolError, encode
from ..wire.requests import Requests
from . import hooks as hooksmod
from . import idclaims, templates
from .events import EventLog
from .events import line as events_line

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

log = logging.getLogger("vzfs.registry")
# What a controller's status says once the domain it ran has ended.
ENDED = frozenset({"stopped", "crashed", "suspended", "migrated"})
MIGRATE_PREFLIGHT_TIMEOUT = 120.0  # ssh to the target, its checks; the move then goes on


class ControllerClient:
    """The daemon's connection to one controller: requests with ids, events to a callback
    (which is told which client it came from: a domain may have a newer one by then)."""

    def __init__(self, stream: trio.SocketStream, decoder: Decoder,
                 on_event: Callable[["ControllerClient", Message], None]) -> None:
        self.stream = stream
        self.decoder = decoder
        self.on_event = on_event
        self.requests = Requests(lost="lost the connection to its controller",
                                 gone="its controller went away",
                                 silent="its controller did not answer")
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
            self.on_event(self, msg)

    async def _send(self, data: bytes) -> None:
        async with self.send_lock:
            await self.stream.send_all(data)

    async def request(self, what: str, op: str, timeout: float = REQUEST_TIMEOUT,
                      **fields: Any) -> Message:
        return await self.requests.ask(self._send, what, op, timeout, fields)


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


# The fields the kernel-cached control files (state, pid, id) are made from.
SHOWN_CACHED = frozenset({"state", "pid", "config"})
# The fields whose changes are noticed, whoever changes them: the files that show them
# are touched (inotify), and all but FILES_ONLY are events and wake pollers.
NOTICED = frozenset({"state", "error", "vnc_restarts", "pid", "migration", "vnc_address",
                     "vnc_websocket"})
FILES_ONLY = frozenset({"pid", "migration", "vnc_address", "vnc_websocket"})
# The control files whose content a change of each NOTICED field changes.
FILES_OF = {"state": ("state", "events"), "error": ("error", "events"),
            "vnc_restarts": ("vnc", "vnc_websocket", "events"),
            "pid": ("pid", "stats"), "migration": ("migrate_target",),
            "vnc_address": ("vnc",), "vnc_websocket": ("vnc_websocket",)}


@dataclasses.dataclass(eq=False)
class Underway:
    """The start or stop a domain is in the middle of, which a `kill` cuts short.

    A start still in its hooks has begun nothing outside the daemon: its `hooks` scope
    is cancelled. One whose controller the zygote was asked for cannot be called back
    (the controller would run on unheard): the kill waits until the start `settled` —
    its controller reported, or it failed — and kills what runs. A stop is already in
    its controller's hands, which takes the kill as the end of its escalation. The
    verb cut short then fails with ECANCELED and `sentence`."""
    verb: str
    hooks: trio.CancelScope = dataclasses.field(default_factory=trio.CancelScope)
    settled: trio.Event = dataclasses.field(default_factory=trio.Event)
    killed: bool = False

    def sentence(self, name: str) -> str:
        return f"cannot {self.verb} domain {name}: it was cut short by kill"


@dataclasses.dataclass(eq=False)
class Domain:
    name: str
    config: DomainConfig
    state: State = State.STOPPED
    pid: int | None = None
    started_at: float | None = None
    error: str = ""
    # An `error` that tells of a condition, not of a failed command (a crash, a VNC
    # server that cannot listen): a command during which it came does not clear it.
    condition: str = ""
    client: ControllerClient | None = None
    keeper: int = -1           # a pidfd of its keeper while it runs (controller/keeper.py)
    rootfs_shifted: bool = False   # its root's ids shifted on disk, as its controller said
    changed_at: float = dataclasses.field(default_factory=time.time)
    console: DomainConsole = dataclasses.field(default_factory=DomainConsole)
    last_screen: str = ""      # the screen when the domain last stopped
    vnc_restarts: int = 0      # times the controller restarted the VNC server this run
    vnc_address: str = ""      # HOST:PORT of its VNC server, as its controller last said
    vnc_websocket: str = ""
    mounts_lock: trio.Lock = dataclasses.field(default_factory=trio.Lock)
    busy: str = ""             # a long verb under way ("suspended"): other verbs wait their turn
    underway: Underway | None = None   # the start or stop being carried out, for a kill
    incoming: bool = False     # being received by a migration: not ours until committed
    migration: dict[str, Any] = dataclasses.field(default_factory=dict)  # the last one's record
    # The per-domain `events` file: bumped when a value it shows changes, with the
    # poll(2) handles of its readers waiting for that (the filesystem's, opaque here).
    events_generation: int = 0
    pollers: dict[int, Any] = dataclasses.field(default_factory=dict)   # open file → handle
    # Called after any of SHOWN_CACHED is assigned: the filesystem lets the kernel
    # cache the files that show them, and must drop those copies at every change.
    watcher: Callable[["Domain"], None] | None = dataclasses.field(default=None, repr=False)
    # Called with the field and its old value after one of NOTICED is assigned.
    notice: Callable[["Domain", str, Any], None] | None = dataclasses.field(default=None,
                                                                           repr=False)

    def __setattr__(self, name: str, value: Any) -> None:
        old = self.__dict__.get(name)
        object.__setattr__(self, name, value)
        if name in SHOWN_CACHED:
            watcher = self.__dict__.get("watcher")
            if watcher is not None:
                watcher(self)
        if name in NOTICED and old != value:
            notice = self.__dict__.get("notice")
            if notice is not None:
                notice(self, name, old)

    def set_state(self, state: State) -> None:
        if state != self.state:
            self.state = state
            self.changed_at = time.time()


class Registry:
    def __init__(self, state_dir: str, layout: cgroups.Layout, zygote: socket.socket | None,
                 hooks: hooksmod.Hooks | None = None) -> None:
        self.state_dir = os.path.abspath(state_dir)
        self.layout = layout
        self.zygote = zygote
        self.zygote_changed = trio.Event()   # set when the daemon replaced a dead zygote
        self.domains: dict[str, Domain] = {}
        self._nursery: trio.Nursery | None = None
        self.mountpoint = ""             # set by the daemon: hooks and the toucher use it
        self.hooks = hooks or hooksmod.Hooks(None)
        self.hooks.on_failed = self._hook_failed
        self.on_change: Callable[[Domain], None] = lambda dom: None
        # Set by the filesystem: a domain's SHOWN_CACHED fields changed.
        self.on_shown_change: Callable[[Domain], None] = lambda dom: None
        # Set by the filesystem: the content of these control files of a domain changed
        # (it makes inotify see it).
        self.on_files_changed: Callable[[Domain, tuple[str, ...]], None] = \
            lambda dom, names: None
        # Set by the filesystem: a domain came or went without a mkdir or rmdir (a
        # migration brought it or took it away).
        self.on_added: Callable[[Domain], Any] = lambda dom: None
        self.on_removed: Callable[[str], None] = lambda name: None
        for sub in ("domains", "private", "templates"):
            os.makedirs(os.path.join(self.state_dir, sub), mode=0o700, exist_ok=True)
        self.events = EventLog()
        self.events_changed = trio.Event()
        self.events_at = 0.0             # when the last event came (the file's mtime)
        # Set by the filesystem: an event was added (it makes inotify see it).
        self.on_emitted: Callable[[], None] = lambda: None

    @property
    def nursery(self) -> trio.Nursery | None:
        return self._nursery

    @nursery.setter
    def nursery(self, nursery: trio.Nursery | None) -> None:
        self._nursery = self.hooks.nursery = nursery

    # -- hooks ----------------------------------------------------------------
    def _hook_call(self, dom: Domain, phase: str, reason: str, **env: str) -> hooksmod.Call:
        extra = {"VZFS_ID": str(dom.config.id), "VZFS_ROOTFS": self.rootfs(dom),
                 "VZFS_STATE_DIR": self.state_dir, "VZFS_MOUNT": self.mountpoint, **env}
        if dom.pid is not None:
            extra["VZFS_PID"] = str(dom.pid)
        return hooksmod.Call(dom.name, phase, reason,
                             paths.config_file(self.state_dir, dom.name),
                             configmod.dumps(dom.config), extra)

    async def _hooks_allow(self, dom: Domain, phase: str, reason: str, what: str,
                           **env: str) -> None:
        """A refusing phase: its hooks may refuse with VzfsError(EPERM)."""
        if self.hooks.active(dom.name):
            await self.hooks.refuse_unless_allowed(self._hook_call(dom, phase, reason, **env),
                                                   what)

    def _hooks_tell(self, dom: Domain, phase: str, reason: str,
                    then: Callable[[], Any] | None = None, **env: str) -> None:
        """A phase that cannot refuse: its hooks run in the background, then *then*."""
        if self.hooks.active(dom.name):
            self.hooks.notify(self._hook_call(dom, phase, reason, **env), then)
        elif then is not None:
            then()

    def _hook_failed(self, call: hooksmod.Call, outcome: hooksmod.Outcome) -> None:
        self.emit(call.domain, "hook", f"{call.phase} {outcome.hook} failed: {outcome.summary()}")

    # -- events ---------------------------------------------------------------
    def emit(self, domain: str, kind: str, detail: str = "") -> None:
        """One line of the `events` stream; readers blocked on it wake."""
        self.events.append(events_line(domain, kind, detail))
        self.events_at = time.time()
        changed, self.events_changed = self.events_changed, trio.Event()
        changed.set()
        self.on_emitted()

    def _noticed(self, dom: Domain, field: str, old: Any) -> None:
        if self.domains.get(dom.name) is not dom:
            return                     # not (or no longer) one of ours
        self.on_files_changed(dom, FILES_OF[field])
        if field in FILES_ONLY:
            return
        dom.events_generation += 1
        pollers, dom.pollers = dom.pollers, {}
        for handle in pollers.values():
            handle.notify()
        if field == "state":
            self.emit(dom.name, "state", dom.state.value)
        elif field == "error" and dom.error:
            self.emit(dom.name, "error", dom.error)
        elif field == "vnc_restarts" and dom.vnc_restarts > (old or 0):
            self.emit(dom.name, "vnc", f"restarted {dom.vnc_restarts}")

    def _domain(self, name: str, cfg: DomainConfig, **fields: Any) -> Domain:
        return Domain(name, cfg, watcher=self._shown_changed, notice=self._noticed, **fields)

    # -- definitions ----------------------------------------------------------
    def load(self) -> None:
        base = os.path.join(self.state_dir, "domains")
        for name in sorted(os.listdir(base)):
            path = paths.config_file(self.state_dir, name)
            if not configmod.is_valid_name(name) or not os.path.exists(path):
                continue
            with open(path, "rb") as f:
                cfg = configmod.parse(f.read(), name=name, default_id=None)
            self.domains[name] = self._domain(name, cfg)
            if cfg.idmap is not None:
                try:
                    idclaims.claim(self.state_dir, name, cfg.idmap)
                except OSError:
                    pass         # the claim is a courtesy to other instances

    def get(self, name: str) -> Domain:
        try:
            return self.domains[name]
        except KeyError:
            raise VzfsError(errno.ENOENT, f"there is no domain {name!r}") from None

    def _free_id(self) -> int:
        used = {d.config.id for d in self.domains.values()}
        dom_id = configmod.FIRST_ID
        while dom_id in used:
            dom_id += 1
        return dom_id

    def _taken_idmaps(self, name: str, moving: idmapmod.IdMap | None = None
                      ) -> dict[str, idmapmod.IdMap]:
        """Every block held on this host but *name*'s: this instance's domains' and
        (idclaims) other instances' — but the source's of a domain *moving* here."""
        taken = idclaims.foreign(self.state_dir, None if moving is None else (name, moving))
        taken.update({other.name: other.config.idmap for other in self.domains.values()
                      if other.name != name and other.config.idmap is not None})
        return taken

    def _store(self, name: str, cfg: DomainConfig) -> None:
        """The config on disk, atomically, and the host-wide claim on its block."""
        atomic_write(paths.config_file(self.state_dir, name), configmod.dumps(cfg))
        if cfg.idmap is not None:
            idclaims.claim(self.state_dir, name, cfg.idmap)
        else:
            idclaims.release(self.state_dir, name)

    def with_idmap(self, name: str, cfg: DomainConfig, what: str,
                   keep: idmapmod.IdMap | None = None, moving: bool = False) -> DomainConfig:
        """*cfg* with the block of host ids its user namespace gets: the one it names
        (EEXIST if another domain holds any of it, EINVAL outside root's subuid and
        subgid ranges), else *keep* (the block it had), else a free one. A privileged
        domain gets none, but keeps the one it names."""
        if cfg.privileged and cfg.idmap is None:
            return cfg
        taken = self._taken_idmaps(name, cfg.idmap if moving else None)
        uids, gids = host_subid_ranges()
        try:
            if cfg.idmap is None:
                if keep is not None and not any(keep.overlaps(t) for t in taken.values()):
                    return dataclasses.replace(cfg, idmap=keep)
                return dataclasses.replace(cfg, idmap=idmapmod.pick(taken.values(), uids, gids))
            if (uids or gids) and not idmapmod.inside(cfg.idmap, uids or idmapmod.DEFAULT_RANGE,
                                                       gids or idmapmod.DEFAULT_RANGE):
                raise VzfsError(errno.EINVAL, f"idmap: uid {cfg.idmap.uid}/gid {cfg.idmap.gid} "
                                              f"(+{cfg.idmap.size}) is outside root's ranges in "
                                              "/etc/subuid and /etc/subgid")
            idmapmod.check_free(name, cfg.idmap, taken)
        except VzfsError as exc:
            raise VzfsError(exc.errno, f"{what}: {exc.sentence}") from exc
        return cfg

    def define(self, name: str) -> Domain:
        if not configmod.is_valid_name(name):
            raise VzfsError(errno.EINVAL, f"cannot define domain {name!r}: a name is 1-63 letters, "
                                          "digits, '_', '.' or '-', starting with a letter or digit")
        if name in self.domains:
            raise VzfsError(errno.EEXIST, f"cannot define domain {name}: it exists")
        ddir = paths.domain_dir(self.state_dir, name)
        with idclaims.locked():
            cfg = self.with_idmap(name, configmod.default(name, self._free_id()),
                                  f"cannot define domain {name}")
            os.makedirs(ddir, mode=0o700, exist_ok=True)
            self._store(name, cfg)
        dom = self._domain(name, cfg)
        self.domains[name] = dom
        self.emit(name, "defined", f"id {cfg.id}")
        return dom

    def new_zygote(self, sock: socket.socket) -> None:
        """The daemon started a zygote in place of one that died."""
        old, self.zygote = self.zygote, sock
        if old is not None:
            old.close()          # an orphaned spare of the dead one sees it and ends
        changed, self.zygote_changed = self.zygote_changed, trio.Event()
        changed.set()

    def _shown_changed(self, dom: Domain) -> None:
        self.on_shown_change(dom)

    def undefine(self, name: str) -> None:
        dom = self.get(name)
        if dom.state not in (State.STOPPED, State.CRASHED):
            how = ("resume it, or kill it to forget its checkpoint" if dom.state == State.SUSPENDED
                   else "stop it first")
            raise VzfsError(errno.EBUSY, f"cannot undefine domain {name}: it is {dom.state.value} "
                                         f"({how})")
        rootfs = self.rootfs(dom)
        if dom.config.rootfs_path is None:
            # The private area vzfs made from a template goes with the domain
            # (vzctl destroy); a rootfs the user pointed us at is theirs to keep.
            shutil.rmtree(rootfs, ignore_errors=True)
        shutil.rmtree(paths.domain_dir(self.state_dir, name), ignore_errors=True)
        self._remove_cgroup(dom)           # whatever a crash of its processes left
        idclaims.release(self.state_dir, name)
        del self.domains[name]
        self.emit(name, "undefined")

    def rootfs(self, dom: Domain) -> str:
        return dom.config.rootfs_path or paths.default_rootfs(self.state_dir, dom.config.id)

    def cgroup(self, dom: Domain) -> cgroups.Cgroup:
        return cgroups.Cgroup(self.layout, paths.cgroup_relpath(self.state_dir, dom.config.id))

    def replace_config(self, dom: Domain, text: bytes) -> None:
        """Validate a whole new definition and store it atomically; the old one stays on error."""
        cfg = self._validate_config(dom, text, complete=True)
        assert cfg is not None
        with idclaims.locked():
            self._replace_config(dom, cfg)

    def _replace_config(self, dom: Domain, cfg: DomainConfig) -> None:
        what = f"cannot replace the config of domain {dom.name}"
        cfg = self.with_idmap(dom.name, cfg, what, keep=dom.config.idmap)
        running = dom.state not in (State.STOPPED, State.CRASHED)
        if running and (cfg.id != dom.config.id or cfg.rootfs_path != dom.config.rootfs_path
                        or cfg.privileged != dom.config.privileged
                        or cfg.idmap != dom.config.idmap):
            raise VzfsError(errno.EBUSY, f"{what}: its id, rootfs, privilege and idmap cannot "
                                         f"change while it is {dom.state.value}")
        if running and cfg.limits != dom.config.limits and dom.state != State.SUSPENDED:
            try:
                self.cgroup(dom).set_limits(cfg.limits.memory, cfg.limits.cpus, cfg.limits.pids)
            except OSError as exc:
                raise from_oserror(exc, f"cannot apply the new limits to domain {dom.name}") from exc
        self._store(dom.name, cfg)
        dom.config = cfg
        dom.changed_at = time.time()
        self.emit(dom.name, "config", "replaced")
        self.on_files_changed(dom, ("config",))

    def _real_mountpoint(self) -> str:
        """The mountpoint, resolved without a lookup of the mount itself (see resolve_outside)."""
        if not self.mountpoint:
            return ""
        parent, base = os.path.split(os.path.abspath(self.mountpoint))
        return os.path.join(os.path.realpath(parent), base)

    def check_config_prefix(self, dom: Domain, text: bytes) -> None:
        """Refuse what a writer has written so far to `config` when no more text can
        make it valid (a bad value, a TOML error before the end); pass it otherwise."""
        self._validate_config(dom, text, complete=False)

    def _validate_config(self, dom: Domain, text: bytes, complete: bool) -> DomainConfig | None:
        what = f"cannot replace the config of domain {dom.name}"
        try:
            cfg = configmod.parse(text, name=dom.name, default_id=dom.config.id,
                                  complete=complete)
            configmod.check_template(cfg.rootfs_template, templates.available(self.state_dir))
            self._check_rootfs(dom, cfg)
        except VzfsError as exc:
            if not complete and configmod.could_grow_valid(exc):
                return None
            raise VzfsError(exc.errno, f"{what}: {exc.sentence}") from exc
        for other in self.domains.values():
            if other is not dom and other.config.id == cfg.id:
                raise VzfsError(errno.EEXIST, f"{what}: id {cfg.id} belongs to domain {other.name}")
        return cfg

    def _check_rootfs(self, dom: Domain, cfg: DomainConfig) -> None:
        """Where cfg's rootfs.path leads, after symlinks, `.` and `..`: a directory (or
        one its template will make) that is no system directory, no other domain's root
        and not in the state dir's other trees (config.rootfs_refusal)."""
        if cfg.rootfs_path is None:
            return
        mountpoint = self._real_mountpoint()
        resolved = resolve_outside(cfg.rootfs_path, mountpoint)
        if not _within(resolved, mountpoint):
            if os.path.lexists(resolved) and not os.path.isdir(resolved):
                raise VzfsError(errno.ENOTDIR, f"rootfs.path: {cfg.rootfs_path} is not a directory")
            if not os.path.exists(resolved) and not cfg.rootfs_template:
                raise VzfsError(errno.ENOENT, f"rootfs.path: {cfg.rootfs_path} does not exist "
                                              "(and no template is named to fill it)")
        others = {o.name: resolve_outside(self.rootfs(o), mountpoint)
                  for o in self.domains.values() if o is not dom}
        refusal = configmod.rootfs_refusal(
            resolved, state_dir=resolve_outside(self.state_dir, mountpoint),
            own_private=resolve_outside(paths.default_rootfs(self.state_dir, cfg.id), mountpoint),
            mountpoint=mountpoint, others=others)
        if refusal:
            shown = cfg.rootfs_path if resolved == cfg.rootfs_path else \
                f"{cfg.rootfs_path} (which is {resolved})"
            raise VzfsError(errno.EINVAL, f"rootfs.path: {shown}: {refusal}")

    # -- verbs -----------------------------------------------------------------
    def check_command(self, dom: Domain, verb: str) -> State:
        """Whether *verb* may be carried out on *dom* now: the state it leads to, or
        VzfsError. Without an await, so a write is refused at once, before its verb
        runs (fs.operations). A kill is taken during a move out (it cancels it)."""
        nxt = lifecycle.begin(dom.name, dom.state, verb)
        if dom.busy and not (verb == "kill" and dom.busy == "migrated"):
            raise VzfsError(errno.EBUSY, f"cannot {verb} domain {dom.name}: it is being {dom.busy}")
        return nxt

    async def command(self, dom: Domain, verb: str) -> None:
        nxt = self.check_command(dom, verb)
        if dom.state == State.SUSPENDED and verb in ("start", "resume"):
            await self.start(dom, nxt, restore=True)
        elif dom.state == State.SUSPENDED and verb == "kill":
            self.discard_checkpoint(dom)
        elif verb == "kill":
            await self.kill(dom, nxt)
        elif verb == "start":
            await self.start(dom, nxt)
        elif verb == "stop":
            await self.stop(dom, verb, nxt)
        elif verb in ("pause", "resume"):
            await self.freeze(dom, verb, nxt)
        elif verb == "suspend":
            await self.suspend(dom)
        elif verb == "restart":
            await self.stop(dom, "stop", nxt)
            await self.start(dom, lifecycle.begin(dom.name, dom.state, "start"))

    async def start(self, dom: Domain, starting: State, restore: bool = False) -> None:
        underway = dom.underway = Underway("resume" if restore else "start")
        try:
            await self._start(dom, starting, restore, underway)
        finally:
            underway.settled.set()
            if dom.underway is underway:
                dom.underway = None

    async def _start(self, dom: Domain, starting: State, restore: bool,
                     underway: Underway) -> None:
        previous = dom.state
        dom.set_state(starting)
        self.on_change(dom)
        reason = "resume" if restore else "boot"
        what = f"cannot {'resume' if restore else 'start'} domain {dom.name}"
        try:
            if not dom.config.privileged and dom.config.idmap is None:
                # A definition from before user namespaces: its block, kept from now on.
                with idclaims.locked():
                    cfg = self.with_idmap(dom.name, dom.config, what)
                    self._store(dom.name, cfg)
                dom.config = cfg
            with underway.hooks:     # all a kill may cancel: nothing outside has begun
                await self._hooks_allow(dom, "prepare", reason, what)
                rootfs = self._prepare_rootfs(dom)
                await self._hooks_allow(dom, "start", reason, what)
            if underway.killed:
                raise VzfsError(errno.ECANCELED, underway.sentence(dom.name))
            client, hello = await self._spawn_controller(dom, restore, rootfs=rootfs)
        except BaseException:
            # A kill leaves the domain stopped (a suspended one's kill then forgets
            # its checkpoint: Registry.kill).
            killed = underway.killed and previous != State.SUSPENDED
            dom.set_state(State.STOPPED if killed else previous)
            self.on_change(dom)
            raise
        self._attach(dom, client, hello, state=starting)
        underway.settled.set()       # a kill now has a controller to ask
        # Queued before the next await: an init that ends at once is `stopped` after it.
        self._hooks_tell(dom, "started", reason)
        await self._open_console(dom)
        if hello.get("vnc") or hello.get("vnc_error"):
            # The controller binds the VNC sockets before it reports the start (a port it
            # could not have failed the start unless [vnc] required = false).
            self._vnc_from(dom, hello)
        else:
            await self._wait_vnc(dom, client, what)
        if underway.killed:
            raise VzfsError(errno.ECANCELED, underway.sentence(dom.name))
        if dom.client is client and dom.state == starting:
            dom.set_state(_state_of(hello))
            self.on_change(dom)

    async def _wait_vnc(self, dom: Domain, client: ControllerClient, what: str) -> None:
        """Hold the start until the domain's VNC server listens, so that `vnc` and
        `vnc_websocket` hold their values when the write returns. One that cannot listen
        fails the start (the domain is killed), unless `[vnc] required = false`."""
        try:
            reply = await client.request(what, "vnc_wait", timeout=REQUEST_TIMEOUT + 5,
                                         timeout_s=REQUEST_TIMEOUT)
        except VzfsError:
            return               # the controller went: its end is told as an event
        self._vnc_from(dom, reply)
        error = str(reply.get("vnc_error") or "")
        if not error or not dom.config.vnc.required or dom.client is not client:
            return
        code = int(reply.get("vnc_errno") or errno.EIO)
        await self.stop(dom, "kill", State.STOPPING)
        raise VzfsError(code, f"{what}: its VNC server cannot listen: {error} "
                              "(with [vnc] required = false it starts without one)")

    def _vnc_from(self, dom: Domain, msg: Message) -> None:
        """Where the domain's VNC server listens, from its controller's status or event;
        while it cannot listen (required = false), `error` says why."""
        dom.vnc_address = str(msg.get("vnc") or "")
        dom.vnc_websocket = str(msg.get("vnc_websocket") or "")
        error = str(msg.get("vnc_error") or "")
        prefix = f"domain {dom.name} runs without its VNC server: "
        if error and not dom.config.vnc.required:
            dom.error = dom.condition = prefix + error
        elif not error and dom.error.startswith(prefix):
            dom.error = ""

    def _prepare_rootfs(self, dom: Domain) -> str:
        rootfs = self.rootfs(dom)
        what = f"cannot start domain {dom.name}"
        try:
            # Checked again: a symlink on the way may have changed since the write.
            self._check_rootfs(dom, dom.config)
        except VzfsError as exc:
            raise VzfsError(exc.errno, f"{what}: {exc.sentence}") from None
        try:
            if dom.config.rootfs_template:
                templates.fill(self.state_dir, dom.config.rootfs_template, rootfs, dom.config.hostname)
        except OSError as exc:
            raise from_oserror(exc, f"{what}: cannot fill its rootfs {rootfs}") from exc
        except VzfsError as exc:
            raise VzfsError(exc.errno, f"{what}: {exc.sentence}") from exc
        if not os.path.isdir(rootfs):
            raise VzfsError(errno.ENOENT, f"{what}: its rootfs {rootfs} does not exist")
        init = os.path.join(rootfs, dom.config.init[0].lstrip("/"))
        if not os.path.lexists(init):
            raise VzfsError(errno.ENOENT, f"{what}: init {dom.config.init[0]} does not exist in "
                                          f"its rootfs {rootfs}")
        return rootfs

    async def _spawn_controller(self, dom: Domain, restore: bool = False,
                                extra: dict[str, Any] | None = None, rootfs: str | None = None
                                ) -> tuple[ControllerClient, Message]:
        what = f"cannot {'resume' if restore else 'start'} domain {dom.name}"
        if rootfs is None:
            rootfs = self._prepare_rootfs(dom)
        criu, criu_error = "", ""
        try:
            criu = criumod.find()
        except OSError as exc:
            if restore:
                raise from_oserror(exc, what) from exc
            # The domain runs; a suspend will say what is wrong with CRIU.
            criu_error = f"{exc.errno or errno.EIO} {exc.strerror or exc}"
        request = {
            "name": dom.name,
            "state_dir": self.state_dir,
            "config": configmod.to_dict(dom.config),
            "rootfs": rootfs,
            "layout": dataclasses.asdict(self.layout),
            "cgroup": paths.cgroup_relpath(self.state_dir, dom.config.id),
            "criu": criu,
            "criu_error": criu_error,
            "restore": restore,
            **(extra or {}),
        }
        for attempt in (1, 2):
            zygote, changed = self.zygote, self.zygote_changed
            if zygote is None:
                raise VzfsError(errno.EIO, f"{what}: this daemon cannot start controllers")
            try:
                return await self._ask_zygote(dom, zygote, request, what, restore)
            except _ZygoteLost as lost:
                # The zygote died under this start (or before it): the daemon starts
                # another (daemon._keep_zygote); the start is tried once more on it.
                if attempt == 2:
                    raise VzfsError(errno.EIO, f"{what}: {lost}") from None
                with trio.move_on_after(ZYGOTE_WAIT):
                    await changed.wait()
                if self.zygote is zygote:
                    raise VzfsError(errno.EIO, f"{what}: {lost}, and no other was started "
                                               f"within {ZYGOTE_WAIT:g} s") from None
        raise AssertionError("unreachable")

    async def _ask_zygote(self, dom: Domain, zygote: socket.socket, request: dict[str, Any],
                          what: str, restore: bool) -> tuple[ControllerClient, Message]:
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
            raise VzfsError(int(hello.get("errno", errno.EIO)), f"{what}: {hello.get('error')}")
        client = ControllerClient(stream, decoder,
                                  lambda client, msg: self._on_event(dom, client, msg))
        return client, hello

    def _attach(self, dom: Domain, client: ControllerClient, status: Message,
                state: State | None = None) -> None:
        """Take a controller that reported in; the state is its (or *state*)."""
        self._take_status(dom, client, status)
        dom.set_state(state or _state_of(status))
        assert self.nursery is not None
        self.nursery.start_soon(self._watch, dom, client)
        self.on_change(dom)

    def _take_status(self, dom: Domain, client: ControllerClient, status: Message) -> None:
        """What a controller's status tells of the running domain, and the controller
        as the domain's (its start's report, or a re-attach's answer)."""
        dom.client = client
        dom.pid = int(status["pid"])
        dom.started_at = float(status["started_at"])
        dom.vnc_restarts = int(status.get("vnc_restarts", 0))
        dom.rootfs_shifted = bool(status.get("rootfs_shifted"))
        self._forget_keeper(dom)
        pid = int(status.get("keeper_pid") or 0)
        if pid:
            try:
                dom.keeper = os.pidfd_open(pid)
            except ProcessLookupError:
                pass

    @staticmethod
    def _forget_keeper(dom: Domain) -> None:
        if dom.keeper >= 0:
            os.close(dom.keeper)
            dom.keeper = -1

    @staticmethod
    def _keeper_lives(dom: Domain) -> bool:
        # A pidfd is readable once its process has ended (pidfd_open(2)).
        if dom.keeper < 0:
            return False
        poller = select.poll()
        poller.register(dom.keeper, select.POLLIN)
        return not poller.poll(0)

    async def _watch(self, dom: Domain, client: ControllerClient) -> None:
        await client.run()
        if dom.client is client:
            await self._lost(dom, client)

    async def _lost(self, dom: Domain, client: ControllerClient) -> None:
        """The controller went without telling the domain's end. Its keeper forks another
        (controller/keeper.py): re-attach to that one while the keeper lives. Otherwise,
        if it recorded an outcome, that is the truth; else it died without one."""
        deadline = trio.current_time() + REATTACH_TIMEOUT
        while self._keeper_lives(dom) and trio.current_time() < deadline:
            try:
                sock = self._connect(dom)
            except OSError:
                await trio.sleep(REATTACH_POLL)
                continue
            if dom.client is client and not await self._take_over(dom, sock):
                self.emit(dom.name, "controller", "replaced")
                return
            if dom.client is not client:
                return
            await trio.sleep(REATTACH_POLL)
        if dom.client is client:
            self._settle_from_disk(dom, lost_controller=True)

    def _on_event(self, dom: Domain, client: ControllerClient, msg: Message) -> None:
        if dom.client is not client:
            # A controller whose end was already taken from its reply (stop, suspend):
            # its "exited" must not undo a verb that came after.
            return
        event = msg.get("event")
        if event == "exited":
            if isinstance(msg.get("screen"), str):
                dom.last_screen = msg["screen"]
            self._exited(dom, str(msg.get("state")), str(msg.get("reason", "")))
        elif event == "vnc":
            self._vnc_from(dom, msg)
        elif event == "vnc_restarted":
            dom.vnc_restarts = int(msg.get("restarts", dom.vnc_restarts + 1))
            dom.changed_at = time.time()
        elif event == "migrate":
            record = dict(msg.get("record") or {})
            target = record.get("target", "")
            if record.get("status") == "done" and dom.migration.get("status") != "done":
                self.emit(dom.name, "migrate", f"done {target} downtime_ms "
                                               f"{record.get('downtime_ms')} total_ms "
                                               f"{record.get('total_ms')}")
            elif record.get("status") == "migrating" and record.get("phase") != "done" and \
                    (record.get("phase"), record.get("started_at")) != \
                    (dom.migration.get("phase"), dom.migration.get("started_at")):
                phase = record.get("phase")
                outcome = "passed " if phase == "preflight" else ""
                self.emit(dom.name, "migrate", f"{phase} {outcome}{target}")
            dom.migration = record
            dom.changed_at = time.time()
        elif event == "migrate_failed":
            self.emit(dom.name, "migrate", f"failed {msg.get('error')}")
            dom.migration = dict(msg.get("record") or {})
            dom.error = f"domain {dom.name} was not migrated: {msg.get('error')}"
            dom.busy = ""
            if dom.state == State.MIGRATING:
                dom.set_state(State.RUNNING)
            self.on_change(dom)
        elif event == "rebooted":
            dom.pid = int(msg["pid"])
            dom.started_at = float(msg["started_at"])
            dom.changed_at = time.time()
            self.on_change(dom)

    def _exited(self, dom: Domain, kind: str, reason: str, recorded: bool = False) -> None:
        """The controller reported the end of the domain ("stopped", "crashed", "suspended",
        "migrated"), or a daemon starting found it *recorded* in last_exit.json."""
        dom.client = None
        dom.pid = None
        dom.started_at = None
        dom.vnc_address = dom.vnc_websocket = ""
        self._forget_keeper(dom)
        if dom.busy == "migrated":
            dom.busy = ""          # the move ended with the domain, one way or the other
        event = kind if kind in ("crashed", "suspended", "migrated") else "exited"
        state = lifecycle.outcome(dom.state, event)
        if state == State.CRASHED and dom.state != State.CRASHED:
            dom.error = dom.condition = f"domain {dom.name} crashed: {reason}"
        if event == "migrated":
            # Gone from here once its hooks saw it go (its config is theirs to read until
            # then); meanwhile no verb may bring it back.
            dom.busy = "migrated away"
        dom.set_state(state)
        self.on_change(dom)
        if recorded and not self._untold(dom):
            return                 # its hooks were told at the time
        why = kind if kind in ("crashed", "suspended", "migrated") else "stopped"
        self._hooks_tell(dom, "stopped", why,
                         then=(lambda: self._gone(dom)) if event == "migrated" else None)
        if event != "migrated":
            self._told(dom)

    # The daemon's note that the hooks were told of the domain's last end: a daemon
    # that starts tells them of an end recorded after it (one while no daemon ran), and
    # not again of one they saw.
    def _told_file(self, dom: Domain) -> str:
        return os.path.join(paths.domain_dir(self.state_dir, dom.name), "stopped.told")

    def _told(self, dom: Domain) -> None:
        try:
            with open(self._told_file(dom), "w"):
                pass            # (its mtime is the note)
        except OSError:
            pass

    def _untold(self, dom: Domain) -> bool:
        try:
            told = os.stat(self._told_file(dom)).st_mtime_ns
        except OSError:
            return True
        try:
            return os.stat(paths.last_exit_file(self.state_dir, dom.name)).st_mtime_ns > told
        except OSError:
            return False

    def _settle_from_disk(self, dom: Domain, lost_controller: bool) -> None:
        if checkpoint.has_checkpoint(paths.domain_dir(self.state_dir, dom.name)):
            # A complete checkpoint is the truth, whatever else was recorded.
            dom.client = None
            dom.pid = None
            dom.started_at = None
            dom.set_state(State.SUSPENDED)
            self.on_change(dom)
            return
        path = paths.last_exit_file(self.state_dir, dom.name)
        try:
            with open(path) as f:
                record = json.load(f)
        except (OSError, ValueError):
            record = None
        if record is not None:
            self._exited(dom, str(record.get("state")), str(record.get("reason", "")),
                         recorded=not lost_controller)
        elif lost_controller:
            self._remove_cgroup(dom)
            self._exited(dom, "crashed", "its controller process died")
        else:
            dom.client = None
            dom.pid = None

    def _remove_cgroup(self, dom: Domain) -> None:
        """Nothing of the domain left running, and its cgroup gone (after a crash of every
        vzfs process of it, or on undefine): leftovers are logged, never fatal."""
        cgroup = self.cgroup(dom)
        try:
            cgroup.kill_all()
            cgroup.remove()
        except OSError as exc:
            log.warning("cannot remove the cgroup of domain %s: %s", dom.name, exc)

    def _client(self, dom: Domain, verb: str) -> ControllerClient:
        if dom.client is None:
            raise VzfsError(errno.EIO, f"cannot {verb} domain {dom.name}: no controller is attached")
        return dom.client

    def _ended(self, dom: Domain, client: ControllerClient, reply: Message) -> None:
        """A stop's or suspend's reply: the domain's end, unless an event told it first."""
        if dom.client is client:
            if isinstance(reply.get("screen"), str):
                dom.last_screen = reply["screen"]
            self._exited(dom, str(reply.get("state")), str(reply.get("reason", "")))

    async def kill(self, dom: Domain, stopping: State) -> None:
        """`kill`: every process of the domain, now, whatever is under way — a start or
        a stop is cut short (Underway), a move out is cancelled first."""
        underway = dom.underway
        if underway is not None:
            underway.killed = True
            # Not cleared by this kill's own success: a condition, like a crash.
            dom.error = dom.condition = underway.sentence(dom.name)
            underway.hooks.cancel()
            await underway.settled.wait()
            if dom.state == State.SUSPENDED:
                self.discard_checkpoint(dom)      # a resume cut short before it restored
                return
            if dom.client is None:
                return   # a start that ended before its controller ran: nothing runs
        if dom.client is not None and dom.busy == "migrated":
            await self._cancel_migration(dom, dom.client)
        await self.stop(dom, "kill", stopping)

    async def _cancel_migration(self, dom: Domain, client: ControllerClient) -> None:
        """A kill of a domain moving out: the move is undone first, so that the target
        keeps nothing of it (MIGRATE_PREFLIGHT_TIMEOUT: the cancel waits for the move to
        let go). One that had not begun, or has ended, needs none."""
        try:
            await client.request(f"cannot kill domain {dom.name}: its migration cannot be "
                                 "cancelled", "migrate_cancel", timeout=MIGRATE_PREFLIGHT_TIMEOUT)
        except VzfsError as exc:
            if exc.errno != errno.EINVAL:      # EINVAL: none under way
                raise

    async def stop(self, dom: Domain, verb: str, stopping: State) -> None:
        client = self._client(dom, verb)
        previous = dom.state
        dom.set_state(stopping)
        self.on_change(dom)
        underway = None
        if verb == "stop":
            underway = dom.underway = Underway(verb)
            underway.settled.set()          # in the controller's hands: a kill asks it
        self._hooks_tell(dom, "stop", verb)
        timeout = dom.config.stop_timeout + REQUEST_TIMEOUT
        try:
            reply = await client.request(f"cannot {verb} domain {dom.name}", verb, timeout=timeout,
                                         signal=dom.config.stop_signal,
                                         timeout_s=dom.config.stop_timeout)
        except VzfsError as exc:
            if dom.client is client and previous != State.STOPPING:
                dom.set_state(previous)
                self.on_change(dom)
            if underway is not None and underway.killed:
                raise VzfsError(errno.ECANCELED, underway.sentence(dom.name)) from exc
            raise
        finally:
            if underway is not None and dom.underway is underway:
                dom.underway = None
        self._ended(dom, client, reply)
        if underway is not None and underway.killed:
            raise VzfsError(errno.ECANCELED, underway.sentence(dom.name))

    async def freeze(self, dom: Domain, verb: str, nxt: State) -> None:
        """pause / resume of a running domain: the cgroup freezer, through its controller."""
        client = self._client(dom, verb)
        previous = dom.state
        dom.set_state(nxt)
        self.on_change(dom)
        try:
            await client.request(f"cannot {verb} domain {dom.name}", verb)
        except BaseException:
            if dom.client is client and dom.state == nxt:
                dom.set_state(previous)
                self.on_change(dom)
            raise

    async def suspend(self, dom: Domain) -> None:
        """Checkpoint the domain to disk and end it (its controller runs CRIU)."""
        client = self._client(dom, "suspend")
        dom.busy = "suspended"
        try:
            reply = await client.request(f"cannot suspend domain {dom.name}", "suspend",
                                         timeout=CHECKPOINT_TIMEOUT)
        finally:
            dom.busy = ""
        self._ended(dom, client, reply)

    # -- migration (vzfs.migrate) ----------------------------------------------
    async def migrate(self, dom: Domain, data: bytes) -> None:
        """A write to `migrate_target`: TARGET moves the running domain there (the write
        returns once the preflight passed; the move goes on, shown in `migrate_target`),
        `check TARGET` runs the preflight alone."""
        from ..migrate import target as targetmod
        what = f"cannot migrate domain {dom.name}"
        try:
            words = data.decode("utf-8").split()
        except UnicodeDecodeError:
            raise VzfsError(errno.EINVAL, f"{what}: the write is not UTF-8 text") from None
        if words == ["cancel"]:
            if dom.state != State.MIGRATING or dom.client is None:
                raise VzfsError(errno.EINVAL, f"cannot cancel the migration of domain {dom.name}: "
                                              "none is under way")
            await dom.client.request(f"cannot cancel the migration of domain {dom.name}",
                                     "migrate_cancel", timeout=MIGRATE_PREFLIGHT_TIMEOUT)
            return
        dry_run = len(words) == 2 and words[0] == "check"
        if dry_run:
            words = words[1:]
        if len(words) != 1:
            raise VzfsError(errno.EINVAL, f"{what}: write a target "
                                          "([ssh://][USER@]HOST[:PORT][/MOUNTPOINT]), "
                                          "`check TARGET` for a dry run, or `cancel`")
        try:
            target = targetmod.parse(words[0])
        except VzfsError as exc:
            raise VzfsError(exc.errno, f"{what}: {exc.sentence}") from None
        if dom.busy:
            raise VzfsError(errno.EBUSY, f"{what}: it is being {dom.busy}")
        if dom.state != State.RUNNING:
            raise VzfsError(errno.EBUSY, f"{what}: it is {dom.state.value} (a running domain "
                                         "migrates)")
        client = self._client(dom, "migrate")
        dom.busy = "migrated"
        try:
            await self._hooks_allow(dom, "migrate", "check" if dry_run else "out", what,
                                    VZFS_TARGET=str(target))
            # The daemon's ssh command: a controller may be older than its daemon.
            reply = await client.request(what, "migrate", timeout=MIGRATE_PREFLIGHT_TIMEOUT,
                                         target=str(target), dry_run=dry_run,
                                         ssh=targetmod.ssh_base())
        except VzfsError as exc:
            dom.busy = ""
            dom.migration = {"target": str(target), "status": "refused", "phase": "preflight",
                             "error": exc.sentence}
            dom.changed_at = time.time()
            self.emit(dom.name, "migrate", f"preflight refused {target}")
            raise
        if dry_run:
            self.emit(dom.name, "migrate", f"preflight checked {target}")
        record = dict(reply.get("record") or {})
        if dom.migration.get("started_at") != record.get("started_at"):
            # Events of this migration may have come in before the reply was taken:
            # theirs is the newer record.
            dom.migration = record
        dom.changed_at = time.time()
        if dry_run or dom.client is not client:
            dom.busy = ""
            return
        if dom.busy == "migrated" and dom.state == State.RUNNING:
            dom.set_state(State.MIGRATING)
            self.on_change(dom)

    def _gone(self, dom: Domain) -> None:
        """The domain runs on another host now: forget it here, with its files."""
        if self.domains.get(dom.name) is not dom:
            return
        if dom.config.rootfs_path is None:
            shutil.rmtree(self.rootfs(dom), ignore_errors=True)
        shutil.rmtree(paths.domain_dir(self.state_dir, dom.name), ignore_errors=True)
        self.forget(dom, f"migrated to {dom.migration.get('target', 'another host')}")

    def forget(self, dom: Domain, why: str = "") -> None:
        if self.domains.get(dom.name) is dom:
            idclaims.release(self.state_dir, dom.name)
            del self.domains[dom.name]
            self.on_removed(dom.name)
            self.emit(dom.name, "undefined", why)

    def receive(self, name: str, cfg: DomainConfig) -> Domain:
        """A domain coming in by migration: defined, `migrating`, not startable."""
        ddir = paths.domain_dir(self.state_dir, name)
        os.makedirs(ddir, mode=0o700, exist_ok=True)
        self._store(name, cfg)
        dom = self._domain(name, cfg, state=State.MIGRATING, incoming=True,
                           busy="migrated here")
        self.domains[name] = dom
        self.on_added(dom)
        self.emit(name, "defined", f"id {cfg.id}, arriving by migration")
        self.on_change(dom)
        return dom

    async def restore_incoming(self, dom: Domain, images: str) -> None:
        """CRIU restores the incoming domain from *images* (pages come lazily), under a
        controller of ours; it stays `migrating` until committed."""
        client, hello = await self._spawn_controller(dom, restore=True,
                                                     extra={"images": images, "lazy": True})
        self._attach(dom, client, hello)
        dom.set_state(State.MIGRATING)
        await self._open_console(dom)
        self.on_change(dom)

    def received(self, dom: Domain, record: dict[str, Any]) -> None:
        dom.incoming = False
        dom.busy = ""
        dom.migration = record
        dom.error = ""
        if dom.client is not None:
            dom.set_state(State.RUNNING)
            self._hooks_tell(dom, "started", "migrated",
                             VZFS_SOURCE=str(record.get("source_host", "")))
        self.on_change(dom)

    async def drop_incoming(self, dom: Domain) -> None:
        """Undo a reception: the restored tree (if any) killed, the domain forgotten."""
        client = dom.client
        if client is not None:
            try:
                await client.request(f"cannot undo the reception of {dom.name}", "kill",
                                     timeout=REQUEST_TIMEOUT)
            except VzfsError:
                pass
        try:
            self.cgroup(dom).kill_all()
        except OSError:
            pass
        dom.client = None
        dom.pid = None
        self.forget(dom, "its arrival by migration was undone")

    def discard_checkpoint(self, dom: Domain) -> None:
        """`kill` of a suspended domain: its processes live only in the checkpoint."""
        ddir = paths.domain_dir(self.state_dir, dom.name)
        try:
            checkpoint.discard(ddir)
            os.unlink(paths.last_exit_file(self.state_dir, dom.name))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise from_oserror(exc, f"cannot kill domain {dom.name}: its checkpoint "
                                    "cannot be removed") from exc
        dom.set_state(State.STOPPED)
        self.on_change(dom)

    def checkpoint_figures(self, dom: Domain) -> dict[str, float]:
        try:
            with open(os.path.join(paths.domain_dir(self.state_dir, dom.name),
                                   checkpoint.RECORD)) as f:
                figures = json.load(f)
        except (OSError, ValueError):
            return {}
        return figures if isinstance(figures, dict) else {}

    def checkpoint_log(self, dom: Domain) -> str:
        try:
            with open(os.path.join(paths.domain_dir(self.state_dir, dom.name), checkpoint.LOG),
                      errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def _connect(self, dom: Domain) -> socket.socket:
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

    async def _open_console(self, dom: Domain) -> None:
        """Subscribe to the controller's console stream (its scrollback, then live)."""
        try:
            sock = self._connect(dom)
        except OSError:
            return
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        try:
            await stream.send_all(encode({"op": "console"}))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        assert self.nursery is not None
        self.nursery.start_soon(dom.console.pump, stream)

    # -- re-attaching after a daemon restart ---------------------------------
    async def attach_all(self) -> None:
        for dom in list(self.domains.values()):
            await self.attach(dom)

    async def attach(self, dom: Domain) -> None:
        deadline = trio.current_time() + ATTACH_RETRY_S
        while True:
            try:
                sock = self._connect(dom)
                break
            except FileNotFoundError:
                self._settle_from_disk(dom, lost_controller=False)
                return
            except OSError:
                # A socket nobody listens on: its controller died, and a keeper may be
                # starting another (controller/keeper.py) — or it all died with no word.
                if trio.current_time() > deadline:
                    self._settle_from_disk(dom, lost_controller=True)
                    return
                await trio.sleep(REATTACH_POLL)
        failure = await self._take_over(dom, sock)
        if failure:
            dom.error = failure
            self._settle_from_disk(dom, lost_controller=True)

    async def _take_over(self, dom: Domain, sock: socket.socket) -> str:
        """Attach to the running controller connected on *sock*; if it does not answer,
        say why."""
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        client = ControllerClient(stream, Decoder(),
                                  lambda client, msg: self._on_event(dom, client, msg))
        assert self.nursery is not None
        self.nursery.start_soon(client.run)
        try:
            status = await client.request(f"cannot re-attach domain {dom.name}", "status")
        except VzfsError as exc:
            await stream.aclose()
            return exc.sentence
        if str(status.get("state")) in ENDED:
            # Reached in the moment between its end's record and its exit: the record
            # (last_exit.json) says how it ended, with the reason.
            await stream.aclose()
            return f"cannot re-attach domain {dom.name}: it has ended"
        self._take_status(dom, client, status)
        self._vnc_from(dom, status)
        dom.set_state(_state_of(status))
        self.nursery.start_soon(self._watch_attached, dom, client)
        await self._open_console(dom)
        self.on_change(dom)
        return ""

    async def autostart(self) -> None:
        """Start the domains whose config says `autostart = true` and that do not run
        (a daemon that re-attached to a running one leaves it be); a suspended one is
        resumed. One that cannot start says why in `error`."""
        for dom in sorted(self.domains.values(), key=lambda d: d.name):
            if dom.config.autostart and dom.state in (State.STOPPED, State.CRASHED,
                                                      State.SUSPENDED) and not dom.busy:
                try:
                    await self.command(dom, "start")
                    dom.error = ""
                except VzfsError as exc:
                    dom.error = f"autostart: {exc.sentence}"

    async def _watch_attached(self, dom: Domain, client: ControllerClient) -> None:
        await client.closed.wait()
        if dom.client is client:
            await self._lost(dom, client)

    async def control(self, dom: Domain, what: str, op: str, **fields: Any) -> Message:
        """A request to a running domain's controller (resize, screen…)."""
        client = dom.client
        if client is None or dom.state not in (State.RUNNING, State.PAUSED):
            raise VzfsError(errno.EBUSY, f"{what}: domain {dom.name} is not running")
        return await client.request(what, op, **fields)

    async def screen(self, dom: Domain) -> str:
        """The console's screen as text (the last one seen when not running)."""
        if dom.state == State.SUSPENDED and not dom.last_screen:
            # A daemon that started after the suspend: the screen saved on the root.
            dom.last_screen = self._saved_screen(dom)
        if dom.client is None or dom.state not in (State.RUNNING, State.PAUSED, State.STOPPING,
                                                   State.MIGRATING):
            return dom.last_screen
        try:
            reply = await dom.client.request(f"cannot read the screen of domain {dom.name}", "screen")
        except VzfsError:
            return dom.last_screen
        dom.last_screen = str(reply.get("text", ""))
        return dom.last_screen

    def _saved_screen(self, dom: Domain) -> str:
        """The text of the screen a checkpoint left on the domain's root ("" if none)."""
        from ..controller import screenstate
        from ..terminal import BACKENDS
        try:
            with screenstate.root(self.rootfs(dom)) as root_fd:
                snapshot = screenstate.load(root_fd, consume=False)
            if snapshot is None:
                return ""
            return BACKENDS[dom.config.console.emulator].restore(snapshot).text()
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            return ""            # the container's file: a bad one costs the picture only

    # -- mounts ---------------------------------------------------------------
    async def mounts(self, dom: Domain) -> str:
        """The `mounts` file: what is mounted now when running, the configured table otherwise."""
        if dom.client is not None and dom.state in (State.RUNNING, State.PAUSED):
            try:
                reply = await dom.client.request(f"cannot list the mounts of domain {dom.name}",
                                                 "mounts")
            except VzfsError:
                pass
            else:
                return "".join(f"{line}\n" for line in reply.get("lines", []))
        return "".join(f"{_spec(m).line()}\n" for m in dom.config.mounts)

    async def change_mounts(self, dom: Domain, data: bytes) -> None:
        """One write to `mounts`: add or del, live on a running domain, always kept in config.

        The config is stored first and put back if the live change fails, so a
        crash at any point leaves the config saying what is (or will be) mounted."""
        what = f"cannot change the mounts of domain {dom.name}"
        try:
            verb, arg = mountspec.parse_command(data.decode("utf-8"))
        except UnicodeDecodeError:
            raise VzfsError(errno.EINVAL, f"{what}: the write is not UTF-8 text") from None
        except VzfsError as exc:
            raise VzfsError(exc.errno, f"{what}: {exc.sentence}") from None
        async with dom.mounts_lock:
            current = list(dom.config.mounts)
            if verb == "add":
                assert isinstance(arg, mountspec.MountSpec)
                spec = arg
                if any(m.target == spec.target for m in current):
                    raise VzfsError(errno.EEXIST, f"{what}: {spec.target} is already one of its "
                                                  f"mounts (del it first)")
                mountpoint = self._real_mountpoint()
                if not spec.is_tmpfs and _within(resolve_outside(spec.source, mountpoint),
                                                 mountpoint):
                    # (and a lookup there would wait for this very loop: resolve_outside)
                    raise VzfsError(errno.EINVAL, f"{what}: the source {spec.source} is in the "
                                                  f"vzfs mount {self.mountpoint}")
                if not spec.is_tmpfs and not os.path.exists(spec.source):
                    raise VzfsError(errno.ENOENT, f"{what}: the source {spec.source} does not exist")
                new = current + [Mount(spec.source, spec.target, ",".join(spec.options))]
                op, fields = "mount_add", {"source": spec.source, "target": spec.target,
                                           "options": ",".join(spec.options)}
            else:
                target = str(arg)
                if not any(m.target == target for m in current):
                    raise VzfsError(errno.ENOENT, f"{what}: {target} is not one of its mounts")
                new = [m for m in current if m.target != target]
                op, fields = "mount_del", {"target": target}
            if dom.state not in (State.RUNNING, State.STOPPED, State.CRASHED):
                raise VzfsError(errno.EBUSY, f"{what}: it is {dom.state.value}")
            old = dom.config
            cfg = dataclasses.replace(old, mounts=tuple(new))
            atomic_write(paths.config_file(self.state_dir, dom.name), configmod.dumps(cfg))
            dom.config = cfg
            if dom.state == State.RUNNING:
                try:
                    await self.control(dom, what, op, **fields)
                except BaseException:
                    atomic_write(paths.config_file(self.state_dir, dom.name), configmod.dumps(old))
                    dom.config = old
                    raise
            dom.changed_at = time.time()
            self.on_files_changed(dom, ("mounts", "config"))
            self.emit(dom.name, "mount", " ".join([verb, *(
                [spec.source, spec.target, ",".join(spec.options)] if verb == "add"
                else [str(arg)])]).rstrip())

    # -- reading --------------------------------------------------------------
    def stats(self, dom: Domain) -> dict[str, int]:
        out = {"cpu_ns": 0, "memory_bytes": 0, "pids": 0, "uptime_s": 0,
               "vnc_restarts": 0, "rootfs_shifted": 0}
        if dom.state in (State.STOPPED, State.CRASHED, State.SUSPENDED) or dom.pid is None:
            return out
        # Which way its root's ids are seen: idmapped (0) or shifted on disk (1).
        out["rootfs_shifted"] = int(dom.rootfs_shifted)
        out["vnc_restarts"] = dom.vnc_restarts
        out.update(self.cgroup(dom).stats())
        if dom.started_at:
            out["uptime_s"] = int(time.time() - dom.started_at)
        return out


def host_subid_ranges() -> tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]]:
    """root's ranges in /etc/subuid and /etc/subgid (subuid(5)); empty where there
    is no such file or no line for root (then vzfs's own range is used)."""
    found = []
    for path in ("/etc/subuid", "/etc/subgid"):
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                found.append(idmapmod.parse_subid(f.read()))
        except OSError:
            found.append(())
    return found[0], found[1]


class _ZygoteLost(Exception):
    """A start request that nobody took or answered: the zygote died under it."""


def _state_of(status: Message) -> State:
    state = status.get("state", "running")
    return State(state) if state in State._value2member_map_ else State.RUNNING


def _within(path: str, tree: str) -> bool:
    return bool(tree) and (path == tree or path.startswith(tree.rstrip("/") + "/"))


def resolve_outside(path: str, mountpoint: str) -> str:
    """os.path.realpath(*path*), except that it never looks inside *mountpoint*: the
    daemon serves that mount from this very loop, so a lookup there would wait for
    itself for ever. A path that leads into it is returned as it stands there."""
    parts = [p for p in path.split("/") if p]
    resolved = "/"
    links = 0
    while parts:
        part = parts.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            resolved = os.path.dirname(resolved)
            continue
        candidate = os.path.join(resolved, part)
        if _within(candidate, mountpoint):
            return os.path.normpath(os.path.join(candidate, *parts))
        try:
            target = os.readlink(candidate)
        except OSError:          # not a link, or not there: the rest is taken as written
            resolved = candidate
            continue
        links += 1
        if links > 40:           # path_resolution(7): ELOOP past 40 links
            raise VzfsError(errno.ELOOP, f"rootfs.path: {path} has too many symbolic links")
        if target.startswith("/"):
            resolved = "/"
        parts = [p for p in target.split("/") if p] + parts
    return resolved


def _spec(m: Mount) -> mountspec.MountSpec:
    return mountspec.MountSpec(m.source, m.target, tuple(o for o in m.options.split(",") if o))

"""The daemon's model of its domains: their definitions on disk, and the verbs on them.

The registry owns every domain's `DomainConfig` (stored as TOML in the state
dir) and its lifecycle state. Verbs check the lifecycle table first and change the
state before their first await, so of two concurrent `start`s one wins and the
other gets EBUSY.

Controllers are reached through `controllers.Controllers`; what they report (a
status, an event, their loss) comes back to the registry, its Listener, which
alone turns it into states. Every change of what a domain's files show is made
through `update` (or, for a change assigned bit by bit, `announce` once it holds):
the observer (the filesystem) is told, and `events` gets its line (domain.py).
The views of a domain (screen, stats…) are the filesystem's (fs/views.py); the
arrival of a domain by migration is vzfs.migrate.incoming's.
"""

import dataclasses
import errno
import json
import logging
import os
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
from ..model.config import DomainConfig
from ..model.lifecycle import Busy, State
from ..wire import messages as m
from . import hooks as hooksmod
from . import idclaims, templates
from .controllers import (CHECKPOINT_TIMEOUT, REQUEST_TIMEOUT, ControllerClient, Controllers,
                          Keeper)
from .domain import Changed, Domain, Observer, Underway, Unobserved
from .events import EventLog
from .events import line as events_line

log = logging.getLogger("vzfs.registry")
MIGRATE_PREFLIGHT_TIMEOUT = 120.0  # ssh to the target, its checks; the move then goes on


class Registry:
    def __init__(self, state_dir: str, layout: cgroups.Layout, zygote: socket.socket | None,
                 hooks: hooksmod.Hooks | None = None) -> None:
        self.state_dir = os.path.abspath(state_dir)
        self.layout = layout
        self.controllers = Controllers(self.state_dir, zygote, self)
        self.domains: dict[str, Domain] = {}
        self._nursery: trio.Nursery | None = None
        self.mountpoint = ""             # set by the daemon: hooks and the filesystem use it
        self.hooks = hooks or hooksmod.Hooks(None)
        self.hooks.on_failed = self._hook_failed
        # Told of every change of the domains (the filesystem sets itself here).
        self.observer: Observer = Unobserved()
        for sub in ("domains", "private", "templates"):
            os.makedirs(os.path.join(self.state_dir, sub), mode=0o700, exist_ok=True)
        self.events = EventLog()
        self.events_changed = trio.Event()
        self.events_at = 0.0             # when the last event came (the file's mtime)
        # What each event of a controller does to its domain (controller_event).
        self._event_handlers: dict[type, Callable[[Domain, Any], None]] = {
            m.Exited: self._on_exited, m.VncChanged: self._vnc_from,
            m.VncRestarted: self._on_vnc_restarted, m.MigrateProgress: self._on_migrate,
            m.MigrateFailed: self._on_migrate_failed, m.Rebooted: self._on_rebooted,
        }

    @property
    def nursery(self) -> trio.Nursery | None:
        return self._nursery

    @nursery.setter
    def nursery(self, nursery: trio.Nursery | None) -> None:
        self._nursery = self.hooks.nursery = self.controllers.nursery = nursery

    # -- hooks ----------------------------------------------------------------
    def _hook_call(self, dom: Domain, phase: str, reason: str, **env: str) -> hooksmod.Call:
        extra = {"VZFS_ID": str(dom.config.id), "VZFS_ROOTFS": self.rootfs(dom),
                 "VZFS_STATE_DIR": self.state_dir, "VZFS_MOUNT": self.mountpoint, **env}
        if dom.pid is not None:
            extra["VZFS_PID"] = str(dom.pid)
        return hooksmod.Call(dom.name, phase, reason,
                             paths.config_file(self.state_dir, dom.name),
                             configmod.dumps(dom.config), extra)

    async def hooks_allow(self, dom: Domain, phase: str, reason: str, what: str,
                          **env: str) -> None:
        """A refusing phase: its hooks may refuse with VzfsError(EPERM)."""
        if self.hooks.active(dom.name):
            await self.hooks.refuse_unless_allowed(self._hook_call(dom, phase, reason, **env),
                                                   what)

    def hooks_tell(self, dom: Domain, phase: str, reason: str,
                   then: Callable[[], Any] | None = None, **env: str) -> None:
        """A phase that cannot refuse: its hooks run in the background, then *then*."""
        if self.hooks.active(dom.name):
            self.hooks.notify(self._hook_call(dom, phase, reason, **env), then)
        elif then is not None:
            then()

    def _hook_failed(self, call: hooksmod.Call, outcome: hooksmod.Outcome) -> None:
        self.emit(call.domain, "hook", f"{call.phase} {outcome.hook} failed: {outcome.summary()}")

    # -- events and changes ---------------------------------------------------
    def emit(self, domain: str, kind: str, detail: str = "") -> None:
        """One line of the `events` stream; readers blocked on it wake."""
        self.events.append(events_line(domain, kind, detail))
        self.events_at = time.time()
        changed, self.events_changed = self.events_changed, trio.Event()
        changed.set()
        self.observer.emitted()

    def update(self, dom: Domain, **values: Any) -> None:
        """Assign *values* to the fields of *dom* they name, and announce those whose
        value changed."""
        old: dict[str, Any] = {}
        for field, value in values.items():
            was = getattr(dom, field)
            setattr(dom, field, value)
            if was != value:
                old[field] = was
        if old:
            self.announce(dom, tuple(old), old)

    def set_state(self, dom: Domain, state: State) -> None:
        if state != dom.state:
            dom.changed_at = time.time()
            self.update(dom, state=state)

    def announce(self, dom: Domain, fields: tuple[str, ...],
                 old: dict[str, Any] | None = None) -> None:
        """The one way a change of a domain is made known: *fields* of *dom* changed
        (*old*: the values some had). The observer is told; a state, an error and a
        restart of the VNC server are lines of `events`."""
        if self.domains.get(dom.name) is not dom:
            return                     # not (or no longer) one of ours
        self.observer.changed(Changed(dom, fields))
        old = old or {}
        for field in fields:
            if field == "state":
                self.emit(dom.name, "state", dom.state.value)
            elif field == "error" and dom.error:
                self.emit(dom.name, "error", dom.error)
            elif field == "vnc_restarts" and dom.vnc_restarts > (old.get(field) or 0):
                self.emit(dom.name, "vnc", f"restarted {dom.vnc_restarts}")

    # -- definitions ----------------------------------------------------------
    def load(self) -> None:
        base = os.path.join(self.state_dir, "domains")
        for name in sorted(os.listdir(base)):
            path = paths.config_file(self.state_dir, name)
            if not configmod.is_valid_name(name) or not os.path.exists(path):
                continue
            with open(path, "rb") as f:
                cfg = configmod.parse(f.read(), name=name, default_id=None)
            self.domains[name] = Domain(name, cfg)
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

    def store(self, name: str, cfg: DomainConfig) -> None:
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
            self.store(name, cfg)
        dom = Domain(name, cfg)
        self.domains[name] = dom
        self.emit(name, "defined", f"id {cfg.id}")
        return dom

    def add(self, dom: Domain, detail: str) -> None:
        """Take in a domain that comes without a mkdir (a migration brings it)."""
        self.domains[dom.name] = dom
        self.observer.added(dom)
        self.emit(dom.name, "defined", detail)

    def undefine(self, name: str) -> None:
        dom = self.get(name)
        if not lifecycle.is_off(dom.state):
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
        if not lifecycle.is_off(dom.state) and (
                cfg.id != dom.config.id or cfg.rootfs_path != dom.config.rootfs_path
                or cfg.privileged != dom.config.privileged or cfg.idmap != dom.config.idmap):
            raise VzfsError(errno.EBUSY, f"{what}: its id, rootfs, privilege and idmap cannot "
                                         f"change while it is {dom.state.value}")
        if not lifecycle.is_down(dom.state) and cfg.limits != dom.config.limits:
            try:
                self.cgroup(dom).set_limits(cfg.limits.memory, cfg.limits.cpus, cfg.limits.pids)
            except OSError as exc:
                raise from_oserror(exc, f"cannot apply the new limits to domain {dom.name}") from exc
        self.store(dom.name, cfg)
        dom.config = cfg
        dom.changed_at = time.time()
        self.emit(dom.name, "config", "replaced")
        self.announce(dom, ("config",))     # even the same text again: it was written

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
        return lifecycle.begin(dom.name, dom.state, verb, dom.busy)

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
        self.set_state(dom, starting)
        reason = "resume" if restore else "boot"
        what = f"cannot {'resume' if restore else 'start'} domain {dom.name}"
        try:
            if not dom.config.privileged and dom.config.idmap is None:
                # A definition from before user namespaces: its block, kept from now on.
                with idclaims.locked():
                    cfg = self.with_idmap(dom.name, dom.config, what)
                    self.store(dom.name, cfg)
                self.update(dom, config=cfg)
            with underway.hooks:     # all a kill may cancel: nothing outside has begun
                await self.hooks_allow(dom, "prepare", reason, what)
                rootfs = self._prepare_rootfs(dom)
                await self.hooks_allow(dom, "start", reason, what)
            if underway.killed:
                raise VzfsError(errno.ECANCELED, underway.sentence(dom.name))
            client, hello = await self.spawn_controller(dom, restore, rootfs=rootfs)
        except BaseException:
            # A kill leaves the domain stopped (a suspended one's kill then forgets
            # its checkpoint: Registry.kill).
            killed = underway.killed and previous != State.SUSPENDED
            self.set_state(dom, State.STOPPED if killed else previous)
            raise
        self.take_controller(dom, client, hello, state=starting)
        underway.settled.set()       # a kill now has a controller to ask
        # Queued before the next await: an init that ends at once is `stopped` after it.
        self.hooks_tell(dom, "started", reason)
        await self.controllers.open_console(dom)
        if hello.vnc or hello.vnc_error:
            # The controller binds the VNC sockets before it reports the start (a port it
            # could not have failed the start unless [vnc] required = false).
            self._vnc_from(dom, hello)
        else:
            await self._wait_vnc(dom, client, what)
        if underway.killed:
            raise VzfsError(errno.ECANCELED, underway.sentence(dom.name))
        if dom.client is client and dom.state == starting:
            self.set_state(dom, _state_of(hello))

    async def _wait_vnc(self, dom: Domain, client: ControllerClient, what: str) -> None:
        """Hold the start until the domain's VNC server listens, so that `vnc` and
        `vnc_websocket` hold their values when the write returns. One that cannot listen
        fails the start (the domain is killed), unless `[vnc] required = false`."""
        try:
            reply = await client.ask(what, m.VncWait(timeout_s=REQUEST_TIMEOUT), m.StatusEvent,
                                     timeout=REQUEST_TIMEOUT + 5)
        except VzfsError:
            return               # the controller went: its end is told as an event
        self._vnc_from(dom, reply)
        error = reply.vnc_error
        if not error or not dom.config.vnc.required or dom.client is not client:
            return
        code = reply.vnc_errno or errno.EIO
        await self.stop(dom, "kill", State.STOPPING)
        raise VzfsError(code, f"{what}: its VNC server cannot listen: {error} "
                              "(with [vnc] required = false it starts without one)")

    def _vnc_from(self, dom: Domain, said: m.StatusEvent | m.VncChanged) -> None:
        """Where the domain's VNC server listens, from its controller's status or event;
        while it cannot listen (required = false), `error` says why."""
        self.update(dom, vnc_address=said.vnc, vnc_websocket=said.vnc_websocket)
        error = said.vnc_error
        prefix = f"domain {dom.name} runs without its VNC server: "
        if error and not dom.config.vnc.required:
            self.update(dom, error=prefix + error, condition=prefix + error)
        elif not error and dom.error.startswith(prefix):
            self.update(dom, error="")

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

    async def spawn_controller(self, dom: Domain, restore: bool = False,
                               extra: dict[str, Any] | None = None, rootfs: str | None = None
                               ) -> tuple[ControllerClient, m.StatusEvent]:
        """A new controller for *dom*, started (or restoring it, with *extra* to its
        request): its client and its report."""
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
        return await self.controllers.spawn(dom, request, what, restore)

    def take_controller(self, dom: Domain, client: ControllerClient, status: m.StatusEvent,
                        state: State | None = None) -> None:
        """Take a controller that reported in; the state is its (or *state*)."""
        self._take_status(dom, client, status)
        self.set_state(dom, state or _state_of(status))
        self.controllers.watch(dom, client)

    def _take_status(self, dom: Domain, client: ControllerClient, status: m.StatusEvent) -> None:
        """What a controller's status tells of the running domain, and the controller
        as the domain's (its start's report, or a re-attach's answer)."""
        self.update(dom, client=client, pid=status.pid, started_at=float(status.started_at),
                    vnc_restarts=status.vnc_restarts, rootfs_shifted=status.rootfs_shifted)
        self._let_go_keeper(dom)
        dom.keeper = Keeper.of(status.keeper_pid)

    @staticmethod
    def _let_go_keeper(dom: Domain) -> None:
        if dom.keeper is not None:
            dom.keeper.close()
            dom.keeper = None

    # -- what controllers say (controllers.Listener) --------------------------
    def controller_event(self, dom: Domain, client: ControllerClient, event: m.Event) -> None:
        if dom.client is not client:
            # A controller whose end was already taken from its reply (stop, suspend):
            # its "exited" must not undo a verb that came after.
            return
        handler = self._event_handlers.get(type(event))
        if handler is not None:        # (a status or start_failed comes only as a reply)
            handler(dom, event)

    def _on_exited(self, dom: Domain, event: m.Exited) -> None:
        dom.last_screen = event.screen
        self._exited(dom, event.state, event.reason)

    def _on_vnc_restarted(self, dom: Domain, event: m.VncRestarted) -> None:
        self.update(dom, vnc_restarts=event.restarts)
        dom.changed_at = time.time()

    def _on_migrate(self, dom: Domain, event: m.MigrateProgress) -> None:
        record = dict(event.record)
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
        self.update(dom, migration=record)
        dom.changed_at = time.time()

    def _on_migrate_failed(self, dom: Domain, event: m.MigrateFailed) -> None:
        self.emit(dom.name, "migrate", f"failed {event.error}")
        self.update(dom, migration=dict(event.record),
                    error=f"domain {dom.name} was not migrated: {event.error}")
        dom.busy = None
        if dom.state == State.MIGRATING:
            self.set_state(dom, State.RUNNING)

    def _on_rebooted(self, dom: Domain, event: m.Rebooted) -> None:
        self.update(dom, pid=event.pid, started_at=float(event.started_at))
        dom.changed_at = time.time()

    def controller_status(self, dom: Domain, client: ControllerClient,
                          status: m.StatusEvent) -> None:
        self._take_status(dom, client, status)
        self._vnc_from(dom, status)
        self.set_state(dom, _state_of(status))

    def controller_gone(self, dom: Domain, lost: bool, why: str = "") -> None:
        if why:
            self.update(dom, error=why)
        self._settle_from_disk(dom, lost_controller=lost)

    # -- the end of a run -------------------------------------------------------
    def _exited(self, dom: Domain, kind: str, reason: str, recorded: bool = False) -> None:
        """The controller reported the end of the domain ("stopped", "crashed", "suspended",
        "migrated"), or a daemon starting found it *recorded* in last_exit.json."""
        self.update(dom, client=None, pid=None, started_at=None, vnc_address="",
                    vnc_websocket="")
        self._let_go_keeper(dom)
        if dom.busy is Busy.MIGRATE_OUT:
            dom.busy = None        # the move ended with the domain, one way or the other
        event = lifecycle.ending(kind)
        state = lifecycle.outcome(dom.state, event)
        if state == State.CRASHED and dom.state != State.CRASHED:
            crash = f"domain {dom.name} crashed: {reason}"
            self.update(dom, error=crash, condition=crash)
        if event == "migrated":
            # Gone from here once its hooks saw it go (its config is theirs to read until
            # then); meanwhile no verb may bring it back.
            dom.busy = Busy.MIGRATED_AWAY
        self.set_state(dom, state)
        if recorded and not self._untold(dom):
            return                 # its hooks were told at the time
        self.hooks_tell(dom, "stopped", "stopped" if event == "exited" else event,
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
            self.update(dom, client=None, pid=None, started_at=None)
            self.set_state(dom, State.SUSPENDED)
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
            self.update(dom, client=None, pid=None)

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

    def _ended(self, dom: Domain, client: ControllerClient, reply: m.Ended | m.Suspended) -> None:
        """A stop's or suspend's reply: the domain's end, unless an event told it first."""
        if dom.client is client:
            dom.last_screen = reply.screen
            self._exited(dom, reply.state, reply.reason)

    async def kill(self, dom: Domain, stopping: State) -> None:
        """`kill`: every process of the domain, now, whatever is under way — a start or
        a stop is cut short (Underway), a move out is cancelled first."""
        underway = dom.underway
        if underway is not None:
            underway.killed = True
            # Not cleared by this kill's own success: a condition, like a crash.
            cut_short = underway.sentence(dom.name)
            self.update(dom, error=cut_short, condition=cut_short)
            underway.hooks.cancel()
            await underway.settled.wait()
            if dom.state == State.SUSPENDED:
                self.discard_checkpoint(dom)      # a resume cut short before it restored
                return
            if dom.client is None:
                return   # a start that ended before its controller ran: nothing runs
        if dom.client is not None and dom.busy is Busy.MIGRATE_OUT:
            await self._cancel_migration(dom, dom.client)
        await self.stop(dom, "kill", stopping)

    async def _cancel_migration(self, dom: Domain, client: ControllerClient) -> None:
        """A kill of a domain moving out: the move is undone first, so that the target
        keeps nothing of it (MIGRATE_PREFLIGHT_TIMEOUT: the cancel waits for the move to
        let go). One that had not begun, or has ended, needs none."""
        try:
            await client.tell(f"cannot kill domain {dom.name}: its migration cannot be "
                              "cancelled", m.MigrateCancel(), timeout=MIGRATE_PREFLIGHT_TIMEOUT)
        except VzfsError as exc:
            if exc.errno != errno.EINVAL:      # EINVAL: none under way
                raise

    async def stop(self, dom: Domain, verb: str, stopping: State) -> None:
        client = self._client(dom, verb)
        previous = dom.state
        self.set_state(dom, stopping)
        underway = None
        if verb == "stop":
            underway = dom.underway = Underway(verb)
            underway.settled.set()          # in the controller's hands: a kill asks it
        self.hooks_tell(dom, "stop", verb)
        timeout = dom.config.stop_timeout + REQUEST_TIMEOUT
        try:
            # (a kill is sent the stop's fields: a controller may be older than its daemon)
            ask = m.Stop if verb == "stop" else m.Kill
            reply = await client.ask(f"cannot {verb} domain {dom.name}",
                                     ask(signal=dom.config.stop_signal,
                                         timeout_s=dom.config.stop_timeout),
                                     m.Ended, timeout=timeout)
        except VzfsError as exc:
            if dom.client is client and previous != State.STOPPING:
                self.set_state(dom, previous)
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
        self.set_state(dom, nxt)
        try:
            await client.ask(f"cannot {verb} domain {dom.name}",
                             m.Pause() if verb == "pause" else m.Resume(), m.FreezerState)
        except BaseException:
            if dom.client is client and dom.state == nxt:
                self.set_state(dom, previous)
            raise

    async def suspend(self, dom: Domain) -> None:
        """Checkpoint the domain to disk and end it (its controller runs CRIU)."""
        client = self._client(dom, "suspend")
        dom.busy = Busy.SUSPEND
        try:
            reply = await client.ask(f"cannot suspend domain {dom.name}", m.Suspend(),
                                     m.Suspended, timeout=CHECKPOINT_TIMEOUT)
        finally:
            dom.busy = None
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
            await dom.client.tell(f"cannot cancel the migration of domain {dom.name}",
                                  m.MigrateCancel(), timeout=MIGRATE_PREFLIGHT_TIMEOUT)
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
        if dom.busy is not None:
            raise dom.busy.refusal(dom.name, "migrate")
        if dom.state != State.RUNNING:
            raise VzfsError(errno.EBUSY, f"{what}: it is {dom.state.value} (a running domain "
                                         "migrates)")
        client = self._client(dom, "migrate")
        dom.busy = Busy.MIGRATE_OUT
        try:
            await self.hooks_allow(dom, "migrate", "check" if dry_run else "out", what,
                                   VZFS_TARGET=str(target))
            # The daemon's ssh command: a controller may be older than its daemon.
            reply = await client.ask(what, m.Migrate(target=str(target), dry_run=dry_run,
                                                     ssh=tuple(targetmod.ssh_base())),
                                     m.MigrateRecord, timeout=MIGRATE_PREFLIGHT_TIMEOUT)
        except VzfsError as exc:
            dom.busy = None
            self.update(dom, migration={"target": str(target), "status": "refused",
                                        "phase": "preflight", "error": exc.sentence})
            dom.changed_at = time.time()
            self.emit(dom.name, "migrate", f"preflight refused {target}")
            raise
        if dry_run:
            self.emit(dom.name, "migrate", f"preflight checked {target}")
        record = dict(reply.record)
        if dom.migration.get("started_at") != record.get("started_at"):
            # Events of this migration may have come in before the reply was taken:
            # theirs is the newer record.
            self.update(dom, migration=record)
        dom.changed_at = time.time()
        if dry_run or dom.client is not client:
            dom.busy = None
            return
        if dom.busy is Busy.MIGRATE_OUT and dom.state == State.RUNNING:
            self.set_state(dom, State.MIGRATING)

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
            self.observer.removed(dom)
            self.emit(dom.name, "undefined", why)

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
        self.set_state(dom, State.STOPPED)

    # -- re-attaching after a daemon restart ---------------------------------
    async def attach_all(self) -> None:
        for dom in list(self.domains.values()):
            await self.controllers.attach(dom)

    async def autostart(self) -> None:
        """Start the domains whose config says `autostart = true` and that do not run
        (a daemon that re-attached to a running one leaves it be); a suspended one is
        resumed. One that cannot start says why in `error`."""
        for dom in sorted(self.domains.values(), key=lambda d: d.name):
            if dom.config.autostart and lifecycle.is_down(dom.state) and dom.busy is None:
                try:
                    await self.command(dom, "start")
                    self.update(dom, error="")
                except VzfsError as exc:
                    self.update(dom, error=f"autostart: {exc.sentence}")

    def running_client(self, dom: Domain, what: str) -> ControllerClient:
        """The controller of a running domain, to ask (the views: screen, mounts)."""
        client = dom.client
        if client is None or not lifecycle.is_up(dom.state):
            raise VzfsError(errno.EBUSY, f"{what}: domain {dom.name} is not running")
        return client

    # -- mounts ---------------------------------------------------------------
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
                new = current + [spec]
                request: m.Request = m.MountAdd.of(spec)
            else:
                target = str(arg)
                if not any(m.target == target for m in current):
                    raise VzfsError(errno.ENOENT, f"{what}: {target} is not one of its mounts")
                new = [m for m in current if m.target != target]
                request = m.MountDel(target)
            if not (dom.state == State.RUNNING or lifecycle.is_off(dom.state)):
                raise VzfsError(errno.EBUSY, f"{what}: it is {dom.state.value}")
            old = dom.config
            cfg = dataclasses.replace(old, mounts=tuple(new))
            atomic_write(paths.config_file(self.state_dir, dom.name), configmod.dumps(cfg))
            # Announced once the change holds: one the domain refuses is put back unseen.
            dom.config = cfg
            if dom.state == State.RUNNING:
                try:
                    await self.running_client(dom, what).tell(what, request)
                except BaseException:
                    atomic_write(paths.config_file(self.state_dir, dom.name), configmod.dumps(old))
                    dom.config = old
                    raise
            dom.changed_at = time.time()
            self.announce(dom, ("mounts", "config"))
            self.emit(dom.name, "mount", " ".join([verb, *(
                [spec.source, spec.target, ",".join(spec.options)] if verb == "add"
                else [str(arg)])]).rstrip())


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


def _state_of(status: m.StatusEvent) -> State:
    try:
        return State(status.state)
    except ValueError:
        return State.RUNNING


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

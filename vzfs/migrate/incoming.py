"""The target daemon's side of a migration: reserve a domain, restore it, keep or drop it.

The receiving end (`vzfs migrate-receive`, started over SSH by the source) asks
the daemon serving the target mountpoint for each step through the daemon's
socket, STATE_DIR/daemon.sock (root only, like the state dir; never on the
network). Requests are `wire.framing` messages:

  info                      CRIU, kernel, free space: what the source's preflight compares
  check   NAME ID MOUNTS…   could NAME (id ID) come here? (EEXIST, ENOSPC, ENOENT…)
  reserve NAME CONFIG       define it, `migrating`, with an empty root and images dir
  restore NAME              CRIU restores it (lazily) under a controller of ours
  commit  NAME RECORD       it is ours: `running`, the migration's record kept
  abort   NAME REASON       undo reserve and restore: nothing is left behind

A domain being received is the registry's from `reserve` on — defined,
`migrating`, busy being migrated here, so that no verb may touch it — but not yet
ours: it carries INCOMING in its directory until it is committed, and a daemon
that starts and finds one removes it (the source still has the domain). A
connection that ends aborts every domain it reserved and did not commit.
"""

import dataclasses
import errno
import functools
import json
import logging
import os
import shutil
import socket
import subprocess
import time
from typing import Any

import trio

from ..base.atomicfile import atomic_write
from ..base.errors import VzfsError, from_oserror
from ..controller import paths
from ..daemon import idclaims
from ..daemon.controllers import REQUEST_TIMEOUT
from ..daemon.domain import Domain
from ..daemon.registry import Registry
from ..kernel import criu as criumod
from ..model import config as configmod
from ..model.config import DomainConfig
from ..model.lifecycle import Busy, State
from ..wire import messages
from ..wire.framing import (EXPECTED_FAILURES, Decoder, Message, ProtocolError, encode,
                            reply_failure, reply_ok)

log = logging.getLogger(__name__)

SOCKET = "daemon.sock"
INCOMING = "incoming.json"
IMAGES = "migration"
DUMP_LOG = "migration.log"          # CRIU's log of the dump on the source (source.LOG)
# Room kept free beyond the root and the images on the target's state dir.
SPARE_BYTES = 64 << 20


def socket_path(state_dir: str) -> str:
    return os.path.join(state_dir, SOCKET)


def images_dir(state_dir: str, name: str) -> str:
    return os.path.join(paths.domain_dir(state_dir, name), IMAGES)


def leftovers(state_dir: str) -> list[str]:
    """Names of domains whose reception never completed (before the registry loads)."""
    base = os.path.join(state_dir, "domains")
    try:
        names = sorted(os.listdir(base))
    except FileNotFoundError:
        return []
    return [n for n in names if os.path.exists(os.path.join(base, n, INCOMING))]


def remove_leftover(state_dir: str, name: str) -> None:
    ddir = paths.domain_dir(state_dir, name)
    try:
        with open(os.path.join(ddir, INCOMING)) as f:
            rootfs = json.load(f).get("rootfs")
    except (OSError, ValueError):
        rootfs = None
    if isinstance(rootfs, str) and rootfs.startswith(os.path.join(state_dir, "private") + "/"):
        shutil.rmtree(rootfs, ignore_errors=True)
    shutil.rmtree(ddir, ignore_errors=True)


@functools.cache
def uffd_check(criu: str) -> str:
    """"" when CRIU can restore lazily here (userfaultfd), else why not (once per daemon)."""
    try:
        proc = subprocess.run([criu, "check", "--feature", "uffd-noncoop"], capture_output=True,
                              text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run {criu} check: {exc}"
    if proc.returncode != 0:
        return ("CRIU cannot restore lazily here (criu check --feature uffd-noncoop: "
                f"{(proc.stdout + proc.stderr).strip().splitlines()[-1:] or 'failed'})")
    return ""


class Incoming:
    def __init__(self, registry: Registry) -> None:
        self.reg = registry

    # -- the socket -----------------------------------------------------------
    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        path = socket_path(self.reg.state_dir)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o077)
        try:
            await sock.bind(path)
        finally:
            os.umask(old)
        sock.listen(8)
        task_status.started()
        async with trio.open_nursery() as nursery:
            while True:
                conn, _ = await sock.accept()
                nursery.start_soon(self._connection, trio.SocketStream(conn))

    async def _connection(self, stream: trio.SocketStream) -> None:
        reserved: set[str] = set()
        received: set[str] = set()
        lock = trio.Lock()
        decoder = Decoder()

        async def handle(msg: Message) -> None:
            req_id = msg.get("id")
            try:
                reply = reply_ok(req_id, **await self.handle(msg, reserved, received))
            except EXPECTED_FAILURES as exc:
                reply = reply_failure(req_id, exc)
            except Exception as exc:      # a bug costs this request, never the daemon
                log.exception("migration request %r failed", msg.get("op"))
                reply = reply_failure(req_id, exc)
            async with lock:
                try:
                    await stream.send_all(encode(reply))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass

        try:
            async with trio.open_nursery() as nursery:
                try:
                    async for data in stream:
                        for msg in decoder.feed(data):
                            nursery.start_soon(handle, msg)
                except (trio.BrokenResourceError, trio.ClosedResourceError, ProtocolError):
                    pass
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                for name in list(reserved):
                    log.warning("migration of %s: the receiving end went away before it "
                                "was done; removing what it left", name)
                    await self.abort(name, "the receiving end went away")
                await stream.aclose()

    async def handle(self, msg: Message, reserved: set[str],
                     received: set[str]) -> dict[str, Any]:
        op = msg.get("op")
        name = str(msg.get("name", ""))
        if op == "info":
            return await self.info()
        if op == "check":
            self.check(name, int(msg["id_"]), list(msg.get("mounts", [])),
                       int(msg.get("need_bytes", 0)))
            return {}
        if op == "reserve":
            out = await self.reserve(name, dict(msg["config"]), str(msg.get("source", "")))
            reserved.add(name)
            return out
        if op == "record" and name in received and name in self.reg.domains:
            # The source's record of the move, after the domain was taken over.
            self.reg.update(self.reg.domains[name], migration=dict(msg.get("record", {})))
            return {}
        if name not in reserved:
            raise VzfsError(errno.EPERM, f"domain {name} was not reserved on this connection")
        if op == "restore":
            return await self.restore(name)
        if op == "commit":
            self.commit(name, dict(msg.get("record", {})))
            reserved.discard(name)
            received.add(name)
            return {}
        if op == "abort":
            reserved.discard(name)
            await self.abort(name, str(msg.get("reason", "")))
            return {}
        raise VzfsError(errno.EINVAL, f"unknown request {op!r}")

    # -- the steps ------------------------------------------------------------
    async def info(self) -> dict[str, Any]:
        try:
            criu = criumod.find()
        except OSError as exc:
            return {"criu_error": exc.strerror or str(exc)}
        st = os.statvfs(self.reg.state_dir)
        lazy = await trio.to_thread.run_sync(uffd_check, criu)
        return {"criu": criu, "criu_version": criumod.version(criu),
                "lazy_error": lazy, "kernel": os.uname().release,
                "free_bytes": st.f_bavail * st.f_frsize, "state_dir": self.reg.state_dir}

    def check(self, name: str, dom_id: int, mounts: list[dict[str, Any]], need: int) -> None:
        what = f"domain {name} cannot come here"
        if not configmod.is_valid_name(name):
            raise VzfsError(errno.EINVAL, f"{what}: {name!r} is not a domain name")
        if name in self.reg.domains:
            raise VzfsError(errno.EEXIST, f"{what}: a domain {name} exists here")
        for other in self.reg.domains.values():
            if other.config.id == dom_id:
                raise VzfsError(errno.EEXIST, f"{what}: its id {dom_id} belongs to domain "
                                              f"{other.name} here")
        rootfs = paths.default_rootfs(self.reg.state_dir, dom_id)
        if os.path.lexists(rootfs):
            raise VzfsError(errno.EEXIST, f"{what}: {rootfs} exists here")
        for m in mounts:
            # (MountSpec's JSON form; a source older than it sends source and target alone)
            source = str(m.get("source", ""))
            if source != "tmpfs" and not os.path.exists(source):
                raise VzfsError(errno.ENOENT, f"{what}: the source {source} of its mount on "
                                              f"{m.get('target')} does not exist here")
        st = os.statvfs(self.reg.state_dir)
        free = st.f_bavail * st.f_frsize
        if free < need + SPARE_BYTES:
            raise VzfsError(errno.ENOSPC, f"{what}: it needs {_mb(need + SPARE_BYTES)} and "
                                          f"{self.reg.state_dir} has {_mb(free)} free")

    async def reserve(self, name: str, config: dict[str, Any], source: str = "") -> dict[str, Any]:
        cfg = configmod.from_dict(config, name=name, default_id=None)
        # Its root comes with it, into our private area (a path of the source's own
        # choosing means nothing here), and is never filled from a template.
        cfg = dataclasses.replace(cfg, rootfs_path=None, rootfs_template=None)
        self.check(name, cfg.id, [], 0)
        with idclaims.locked():
            # Its user namespace's block comes with it: refused if a domain here holds
            # any of it.
            self.reg.with_idmap(name, cfg, f"domain {name} cannot come here", moving=True)
            dom = self._arrive(name, cfg)
        rootfs = self.reg.rootfs(dom)
        images = images_dir(self.reg.state_dir, name)
        ddir = paths.domain_dir(self.reg.state_dir, name)
        try:
            atomic_write(os.path.join(ddir, INCOMING),
                         json.dumps({"rootfs": rootfs, "since": time.time()}))
            os.makedirs(rootfs, mode=0o755)
            os.mkdir(images, 0o700)
        except OSError as exc:
            remove_leftover(self.reg.state_dir, name)
            self.reg.forget(dom)
            raise from_oserror(exc, f"cannot receive domain {name}") from exc
        try:
            # This host's hooks may refuse it, before anything is copied.
            await self.reg.hooks_allow(dom, "migrate", "in", f"domain {name} cannot come here",
                                       VZFS_SOURCE=source)
        except BaseException:
            remove_leftover(self.reg.state_dir, name)
            self.reg.forget(dom, "its arrival was refused by a hook")
            raise
        return {"rootfs": rootfs, "images": images}

    def _arrive(self, name: str, cfg: DomainConfig) -> Domain:
        """A domain coming in by migration: defined, `migrating`, not startable."""
        ddir = paths.domain_dir(self.reg.state_dir, name)
        os.makedirs(ddir, mode=0o700, exist_ok=True)
        self.reg.store(name, cfg)
        dom = Domain(name, cfg, state=State.MIGRATING, incoming=True, busy=Busy.MIGRATE_IN)
        self.reg.add(dom, f"id {cfg.id}, arriving by migration")
        return dom

    async def restore(self, name: str) -> dict[str, Any]:
        """CRIU restores the incoming domain from its images (pages come lazily), under
        a controller of ours; it stays `migrating` until committed."""
        dom = self.reg.get(name)
        client, hello = await self.reg.spawn_controller(
            dom, restore=True, extra={"images": images_dir(self.reg.state_dir, name), "lazy": True})
        self.reg.take_controller(dom, client, hello)
        self.reg.set_state(dom, State.MIGRATING)
        await self.reg.controllers.open_console(dom)
        return {"pid": dom.pid}

    def commit(self, name: str, record: dict[str, Any]) -> None:
        dom = self.reg.get(name)
        ddir = paths.domain_dir(self.reg.state_dir, name)
        if dom.client is None:
            raise VzfsError(errno.EIO, f"cannot take over domain {name}: it is not running here")
        try:
            os.unlink(os.path.join(ddir, INCOMING))
        except FileNotFoundError:
            pass
        try:
            # The source's log of the dump, when it came before the commit.
            os.rename(os.path.join(images_dir(self.reg.state_dir, name), DUMP_LOG),
                      os.path.join(ddir, DUMP_LOG))
        except OSError:
            pass
        shutil.rmtree(images_dir(self.reg.state_dir, name), ignore_errors=True)
        dom.incoming = False
        dom.busy = None
        self.reg.update(dom, migration=record, error="")
        if dom.client is not None:
            self.reg.set_state(dom, State.RUNNING)
            self.reg.hooks_tell(dom, "started", "migrated",
                                VZFS_SOURCE=str(record.get("source_host", "")))

    async def abort(self, name: str, reason: str) -> None:
        dom = self.reg.domains.get(name)
        if dom is None or not dom.incoming:
            return
        log.info("migration of %s here undone: %s", name, reason)
        # The restored tree (if any) killed, the domain forgotten.
        client = dom.client
        if client is not None:
            try:
                await client.ask(f"cannot undo the reception of {dom.name}", messages.Kill(),
                                 messages.Ended, timeout=REQUEST_TIMEOUT)
            except VzfsError:
                pass
        try:
            self.reg.cgroup(dom).kill_all()
        except OSError:
            pass
        self.reg.update(dom, client=None, pid=None)
        self.reg.forget(dom, "its arrival by migration was undone")
        remove_leftover(self.reg.state_dir, name)


def _mb(n: int) -> str:
    return f"{n / (1 << 20):.0f} MB"

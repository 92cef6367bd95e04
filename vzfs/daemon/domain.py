"""A domain as the daemon holds it, and how a change of it is made known.

`Domain` is a plain record: assigning a field does nothing but assign it. What
its control files show changes only through the registry, which assigns and
then announces (`Registry.update`, `Registry.announce`): one `Changed` to the one
`Observer` — the filesystem, which decides what that makes stale (the kernel's
cached pages, inotify watchers, poll(2) waiters) — and the lines of `events` the
change is worth. A field the files do not show (the controller's client, the
keeper, the time of the last change) is simply assigned.
"""

import dataclasses
import time
from typing import Any, Protocol

import trio

from ..model.config import DomainConfig
from ..model.lifecycle import Busy, State
from .controllers import ControllerClient, DomainConsole, Keeper


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
    keeper: Keeper | None = None   # its keeper while it runs (controller/keeper.py)
    rootfs_shifted: bool = False   # its root's ids shifted on disk, as its controller said
    changed_at: float = dataclasses.field(default_factory=time.time)
    console: DomainConsole = dataclasses.field(default_factory=DomainConsole)
    last_screen: str = ""      # the screen when the domain last stopped
    vnc_restarts: int = 0      # times the controller restarted the VNC server this run
    vnc_address: str = ""      # HOST:PORT of its VNC server, as its controller last said
    vnc_websocket: str = ""
    mounts_lock: trio.Lock = dataclasses.field(default_factory=trio.Lock)
    busy: Busy | None = None   # a long verb under way: other verbs wait their turn
    underway: Underway | None = None   # the start or stop being carried out, for a kill
    incoming: bool = False     # being received by a migration: not ours until committed
    migration: dict[str, Any] = dataclasses.field(default_factory=dict)  # the last one's record


@dataclasses.dataclass(frozen=True)
class Changed:
    """What changed of a domain: the names of its fields that did, in the order they
    were assigned — and `mounts`, which no field holds, for a change of its live
    mount table."""
    domain: Domain
    fields: tuple[str, ...]


class Observer(Protocol):
    """Who is told of every change of the registry's domains: the filesystem
    (fs/notify.py)."""

    def changed(self, change: Changed) -> None:
        """Fields of one of the registry's domains changed."""

    def added(self, dom: Domain) -> None:
        """A domain came without a mkdir (a migration brought it)."""

    def removed(self, dom: Domain) -> None:
        """A domain went without an rmdir (a migration took it away, or was undone)."""

    def emitted(self) -> None:
        """A line was added to the `events` stream."""


class Unobserved:
    """The observer of a registry nobody watches (before the filesystem is made)."""

    def changed(self, change: Changed) -> None:
        pass

    def added(self, dom: Domain) -> None:
        pass

    def removed(self, dom: Domain) -> None:
        pass

    def emitted(self) -> None:
        pass

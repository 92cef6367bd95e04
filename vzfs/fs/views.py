"""What the read-only views of a domain show: its screen, its mounts, its figures.

Each view takes the registry and the domain and returns what its control file shows
(files.DOMAIN_FILES). A running domain's screen and mount table are asked of its
controller; when there is none to ask, or it does not answer, the view falls back on
what the daemon kept (the last screen, the configured mounts). Nothing here changes
what other files show.
"""

import json
import os
import time

from ..base.errors import VzfsError
from ..controller import checkpoint, paths
from ..daemon.domain import Domain
from ..daemon.registry import Registry
from ..model import lifecycle
from ..model.lifecycle import State
from ..wire import messages


async def screen(reg: Registry, dom: Domain) -> str:
    """The console's screen as text (the last one seen when not running)."""
    if dom.state == State.SUSPENDED and not dom.last_screen:
        # A daemon that started after the suspend: the screen saved on the root.
        dom.last_screen = saved_screen(reg, dom)
    # Until a start has its domain running, the screen is the last run's.
    if dom.client is None or lifecycle.is_down(dom.state) or dom.state == State.STARTING:
        return dom.last_screen
    try:
        reply = await dom.client.ask(f"cannot read the screen of domain {dom.name}",
                                     messages.Screen(), messages.ScreenText)
    except VzfsError:
        return dom.last_screen
    dom.last_screen = reply.text
    return dom.last_screen


def saved_screen(reg: Registry, dom: Domain) -> str:
    """The text of the screen a checkpoint left on the domain's root ("" if none)."""
    from ..controller import screenstate
    from ..terminal import BACKENDS
    try:
        with screenstate.root(reg.rootfs(dom)) as root_fd:
            snapshot = screenstate.load(root_fd, consume=False)
        if snapshot is None:
            return ""
        return BACKENDS[dom.config.console.emulator].restore(snapshot).text()
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return ""            # the container's file: a bad one costs the picture only


async def mounts(reg: Registry, dom: Domain) -> str:
    """The `mounts` file: what is mounted now when running, the configured table otherwise."""
    if dom.client is not None and lifecycle.is_up(dom.state):
        try:
            reply = await dom.client.ask(f"cannot list the mounts of domain {dom.name}",
                                         messages.Mounts(), messages.MountLines)
        except VzfsError:
            pass
        else:
            return "".join(f"{line}\n" for line in reply.lines)
    return "".join(f"{m.line()}\n" for m in dom.config.mounts)


def stats(reg: Registry, dom: Domain) -> dict[str, int]:
    out = {"cpu_ns": 0, "memory_bytes": 0, "pids": 0, "uptime_s": 0,
           "vnc_restarts": 0, "rootfs_shifted": 0}
    if lifecycle.is_down(dom.state) or dom.pid is None:
        return out
    # Which way its root's ids are seen: idmapped (0) or shifted on disk (1).
    out["rootfs_shifted"] = int(dom.rootfs_shifted)
    out["vnc_restarts"] = dom.vnc_restarts
    out.update(reg.cgroup(dom).stats())
    if dom.started_at:
        out["uptime_s"] = int(time.time() - dom.started_at)
    return out


def checkpoint_figures(reg: Registry, dom: Domain) -> dict[str, float]:
    try:
        with open(os.path.join(paths.domain_dir(reg.state_dir, dom.name),
                               checkpoint.RECORD)) as f:
            figures = json.load(f)
    except (OSError, ValueError):
        return {}
    return figures if isinstance(figures, dict) else {}


def checkpoint_log(reg: Registry, dom: Domain) -> str:
    try:
        with open(os.path.join(paths.domain_dir(reg.state_dir, dom.name), checkpoint.LOG),
                  errors="replace") as f:
            return f.read()
    except OSError:
        return ""

"""The keeper: the small process that holds a running domain, so that its controller may die.

Theory of operation. A container's init must have a parent that waits for it, and
its console pty a master that stays open: a pty whose last master closes hangs up
its session (pty(7)), and an init whose parent is gone is the host's to reap. The
controller does a great deal (trio, the terminal emulator, VNC, CRIU, migration),
and whatever kills it must not kill the domain. So, as conmon does for podman, the
process that made the container splits in two once it has reported the start:

* the *keeper* — the process the zygote's spare became, a child subreaper
  (PR_SET_CHILD_SUBREAPER, prctl(2)), so the init child its builder made (and the
  tree CRIU restores, `--restore-sibling`) is its child — keeps the pty master, the
  VNC listening sockets, init, and nothing else to do: it waits for init's exit
  status and for its controller, in a poll(2) loop with no event loop library;
* the *controller* is forked from it and runs everything else.

They speak over a SOCK_SEQPACKET socketpair, one JSON object per message, each a
typed message below (wire/messages.py's codec: types checked, a message that is not
one of these ends the link like an EOF):

    keeper → controller  InitExit    {"event": "exit", "status": N}   init ended (wait(2) status)
                         Spawned     {"event": "spawned", "pid": N, "started_at": T}
                         SpawnFailed {"event": "spawn_failed", "errno": E, "error": "…"}
    controller → keeper  Spawn       {"op": "spawn", "mounts": […]}   a reboot inside: init again
                         Done        {"op": "done"}                   the end is recorded: go (and
                                                                     it waits for our exit)

The container's init asks for SIGKILL when its parent dies (container.py), and its
parent is the keeper: the keeper's death takes the domain down (the controller then
records it `crashed`), the controller's does not. When the controller dies, the
keeper forks another (`Controller.reattach`), which takes the pty master, the VNC
sockets and init over, binds the domain's socket again, and the daemon re-attaches
to it. An init status the dead controller had not taken is given to the new one,
which records the end as its predecessor would have. A controller that keeps dying
(CONTROLLER_RESTARTS within RESTART_WINDOW_S) is not forked again: the keeper kills
the container, records it crashed, and ends.
"""

import dataclasses
import errno
import json
import os
import select
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from typing import ClassVar, NoReturn, Protocol, TypeVar, Union

from ..model.mountspec import MountSpec
from ..wire import messages

MAX_MESSAGE = 1 << 20
CONTROLLER_RESTARTS = 5
RESTART_WINDOW_S = 60.0


@dataclasses.dataclass(frozen=True)
class InitExit:
    KEY: ClassVar[str] = "event"
    NAME: ClassVar[str] = "exit"
    status: int                    # wait(2)'s


@dataclasses.dataclass(frozen=True)
class Spawned:
    KEY: ClassVar[str] = "event"
    NAME: ClassVar[str] = "spawned"
    pid: int
    started_at: float


@dataclasses.dataclass(frozen=True)
class SpawnFailed:
    KEY: ClassVar[str] = "event"
    NAME: ClassVar[str] = "spawn_failed"
    errno: int
    error: str


@dataclasses.dataclass(frozen=True)
class Spawn:
    KEY: ClassVar[str] = "op"
    NAME: ClassVar[str] = "spawn"
    mounts: tuple[MountSpec, ...]     # the mounts the domain has now


@dataclasses.dataclass(frozen=True)
class Done:
    KEY: ClassVar[str] = "op"
    NAME: ClassVar[str] = "done"


ToController = Union[InitExit, Spawned, SpawnFailed]
ToKeeper = Union[Spawn, Done]
TO_CONTROLLER: dict[str, type[ToController]] = {
    cls.NAME: cls for cls in (InitExit, Spawned, SpawnFailed)}
TO_KEEPER: dict[str, type[ToKeeper]] = {cls.NAME: cls for cls in (Spawn, Done)}
messages.prepare(*TO_CONTROLLER.values(), *TO_KEEPER.values())
M = TypeVar("M")


def send(sock: socket.socket, msg: ToController | ToKeeper) -> None:
    """One message (a small SOCK_SEQPACKET send does not block)."""
    sock.send(json.dumps(messages.to_wire(msg)).encode())


def _decode(data: bytes, key: str, kinds: dict[str, type[M]]) -> M | None:
    if not data:
        return None
    try:
        msg = json.loads(data)
    except ValueError as exc:
        raise messages.Malformed(f"a keeper message is not JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise messages.Malformed("a keeper message is a JSON object")
    return messages.decode_named(msg, key, kinds, "keeper message")


def decode_for_controller(data: bytes) -> ToController | None:
    """The keeper's message, or None for the end of the link (an empty read); Malformed
    when it is none of them."""
    return _decode(data, "event", TO_CONTROLLER)


def decode_for_keeper(data: bytes) -> ToKeeper | None:
    """The controller's message, as decode_for_controller."""
    return _decode(data, "op", TO_KEEPER)


class Kept(Protocol):
    """What the keeper knows of the domain: the controller object as it was when the
    start was reported, which makes init again on a reboot (`respawn`)."""

    @property
    def name(self) -> str: ...

    @property
    def pid(self) -> int: ...

    @property
    def started_at(self) -> float: ...

    def respawn(self, mounts: tuple[MountSpec, ...]) -> None: ...


class Keeper:
    """The keeper's side (module docstring). *ctl* is the controller object as it was
    when the start was reported (its pid, pty, cgroup, VNC sockets);
    *controller_main(link, first)* is a forked controller's life over *link*;
    *record_end* records an end the keeper must record itself (no controller left to)."""

    def __init__(self, ctl: Kept, controller_main: Callable[[socket.socket, bool], NoReturn],
                 record_end: Callable[[str, str], None]) -> None:
        self.ctl = ctl
        self.controller_main = controller_main
        self.record_end = record_end
        self.link: socket.socket | None = None
        self.wake: tuple[int, ...] = ()    # our SIGCHLD wakeup pipe (_loop)
        self.controller = 0
        self.status: int | None = None     # init's wait status, once it ended
        self.told = False                  # the current controller has it
        self.done = False                  # the controller recorded the end
        self.restarts: list[float] = []

    def start_controller(self, first: bool) -> None:
        """Fork a controller (the first, or one that takes over from a dead one):
        *controller_main(link, first)* in the child, which never returns."""
        if self.link is not None:
            self.link.close()
            self.link = None
        ours, theirs = socket.socketpair(socket.AF_UNIX,
                                         socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            # Our end stays ours alone: the controller sees EOF when we die.
            ours.close()
            if self.wake:
                signal.set_wakeup_fd(-1)      # trio sets its own
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                for fd in self.wake:
                    os.close(fd)
            self.controller_main(theirs, first)
        theirs.close()
        self.controller = pid
        self.link = ours
        self.told = False
        self._tell_exit()

    def run(self) -> NoReturn:
        code = 0
        try:
            self._loop()
        except BaseException:
            code = 1
            traceback.print_exc()
        os._exit(code)

    def _loop(self) -> None:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        self.wake = (wake_r, wake_w)
        self._reap()                     # whatever ended before the handler was there
        while not self._finished():
            poller = select.poll()
            poller.register(wake_r, select.POLLIN)
            link = self.link
            if link is not None:
                poller.register(link.fileno(), select.POLLIN)
            for fd, _ in poller.poll():
                if fd == wake_r:
                    _drain(wake_r)
                    self._reap()
                elif link is not None and link is self.link and fd == link.fileno():
                    self._serve()

    def _finished(self) -> bool:
        # Init ended and its end is recorded (by a controller, or by us): nothing is
        # left to keep. The controller waits for our exit before it tells the end, so
        # the ports we hold are free by then (a restart keeps its VNC address).
        return self.status is not None and self.done

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.ctl.pid and self.status is None:
                self.status = status
                self._tell_exit()
            elif pid == self.controller:
                self.controller = 0
                self._controller_gone(status)

    def _tell_exit(self) -> None:
        if self.status is None or self.told or self.link is None:
            return
        try:
            send(self.link, InitExit(self.status))
            self.told = True
        except OSError:
            pass           # it died: its successor is told

    def _serve(self, block: bool = True) -> bool:
        """Take one message from the controller; False when there is none (now)."""
        assert self.link is not None
        try:
            msg = decode_for_keeper(self.link.recv(MAX_MESSAGE, 0 if block else socket.MSG_DONTWAIT))
        except BlockingIOError:
            return False
        except (OSError, messages.Malformed):
            msg = None
        if msg is None:
            # The controller closed its end: it is ending (or dead); its exit says which.
            self.link.close()
            self.link = None
            self.told = False
            return False
        if isinstance(msg, Done):
            self.done = True
        else:
            self._spawn(msg)
        return True

    def _spawn(self, msg: Spawn) -> None:
        assert self.link is not None
        reply: ToController
        try:
            self.ctl.respawn(msg.mounts)
        except OSError as exc:
            reply = SpawnFailed(exc.errno or errno.EIO, exc.strerror or str(exc))
        else:
            self.status = None
            self.told = False
            reply = Spawned(self.ctl.pid, self.ctl.started_at)
        try:
            send(self.link, reply)
        except OSError:
            pass

    def _controller_gone(self, status: int) -> None:
        while self.link is not None and self._serve(block=False):
            pass                         # what it said before it went ("done") counts
        if self.done and self.status is not None:
            return                       # it recorded the end and left: so do we
        now = time.monotonic()
        self.restarts = [t for t in self.restarts if now - t < RESTART_WINDOW_S]
        print(f"vzfs: the controller of {self.ctl.name} died ({_describe(status)}); "
              f"{'starting another' if len(self.restarts) < CONTROLLER_RESTARTS else 'giving up'}",
              file=sys.stderr, flush=True)
        if len(self.restarts) >= CONTROLLER_RESTARTS:
            self._give_up()
            return
        self.restarts.append(now)
        self.start_controller(first=False)

    def _give_up(self) -> None:
        if self.status is None:
            try:
                os.kill(self.ctl.pid, signal.SIGKILL)
                _, self.status = os.waitpid(self.ctl.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                self.status = 0
        self.record_end("crashed", f"its controller died {CONTROLLER_RESTARTS} times "
                                   f"within {RESTART_WINDOW_S:g} s")
        self.done = True


def _drain(fd: int) -> None:
    while True:
        try:
            if not os.read(fd, 64):
                return
        except BlockingIOError:
            return


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"

"""The zygote: a pre-imported, single-threaded process that forks controllers on request.

A fresh interpreter needs ~300 ms to import trio, pyfuse3 and pyte (FACTS.md), so
controllers are never exec'd: the daemon forks this zygote before it starts trio
or opens /dev/fuse, and the zygote forks one controller per start request. A
controller is the zygote's child only until the zygote ends (when the daemon
does); it then belongs to init, which is what lets it outlive the daemon.

Requests are one SOCK_SEQPACKET message each: JSON plus, as SCM_RIGHTS, the
daemon's end of a socketpair that becomes the controller's first connection.

To keep the fork of a large process off the path of `echo start`, the zygote
keeps one *spare*: a child forked in advance that waits for the next request
on the shared socket. Whichever spare receives a request starts that domain and
becomes its keeper, which forks its controller (keeper.py); the zygote forks the
next spare when it hears (over a pipe) that the last one was taken.

When the zygote dies (an OOM kill, a stray SIGKILL) the daemon starts another with
`python -m vzfs.controller.zygote`: a fresh interpreter, since a fork of the
daemon, which runs trio's threads and holds /dev/fuse by then, is no zygote. That
one pays the imports once; the starts after it do not.
"""

import gc
import json
import os
import select
import signal
import socket
import sys
import time
from typing import NoReturn

MAX_REQUEST = 1 << 20
SPARE_DELAY = 0.05


def start(mountpoint: str, close_fds: set[int] = frozenset()  # type: ignore[assignment]
          ) -> tuple[socket.socket, int]:
    """Fork the zygote; return the daemon's end of its request socket, and its pid.

    The zygote closes *close_fds* (the daemon's lock and readiness pipe): a
    controller that inherited the state-dir lock would keep it after the
    daemon's death and stop the next daemon from starting.
    """
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        ours.close()
        for fd in close_fds:
            os.close(fd)
        _serve(theirs, mountpoint)
    theirs.close()
    return ours, pid


def command(mountpoint: str, fd: int) -> list[str]:
    """The command that starts a zygote serving requests on the inherited socket *fd*
    (the daemon's replacement for one that died)."""
    return [sys.executable, "-m", "vzfs.controller.zygote", mountpoint, str(fd)]


def _serve(sock: socket.socket, mountpoint: str) -> NoReturn:
    code = 0
    try:
        from ..kernel import proctitle
        proctitle.name(f"vzfs: zygote {mountpoint}", "vzfs-zygote")
        from ..vnc import process  # the VNC server, forked by each controller's spawner
        from . import controller  # imported once here, shared by every fork
        try:
            process.preload()
        except Exception:           # no font: each VNC server will say why in its domain's log
            pass
        from ..kernel import syscallfilter, syscalls
        syscalls.warm()
        syscallfilter.warm()
        # Exited controllers are reaped by the kernel; controllers reset this.
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        # Objects made so far are shared with every fork: keep the collector
        # from touching them, or each controller copies pages it never changes.
        gc.freeze()
        taken_r, taken_w = os.pipe2(os.O_CLOEXEC)
        poller = select.poll()
        poller.register(taken_r, select.POLLIN)
        # POLLHUP on the request socket: the daemon closed its end.
        poller.register(sock.fileno(), 0)
        while True:
            pid = os.fork()
            if pid == 0:
                os.close(taken_r)
                proctitle.name(f"vzfs: spare {mountpoint}", "vzfs-spare")
                _spare(sock, taken_w, controller.run)
            # Wait until the spare took a request (one byte), or the daemon is gone.
            taken = False
            while not taken:
                for fd, revents in poller.poll():
                    if fd == sock.fileno() and revents & (select.POLLHUP | select.POLLERR):
                        os._exit(0)
                    if fd == taken_r:
                        taken = bool(os.read(taken_r, 1))
            # Let the taken spare start its domain before the next fork
            # competes with it for the CPU.
            time.sleep(SPARE_DELAY)
    except BaseException:      # the zygote's only boundary: it must never return into the daemon
        code = 1
    os._exit(code)


def _spare(sock: socket.socket, taken_w: int, run: "object") -> NoReturn:
    """A pre-forked controller-to-be: wait for one request, then become its controller.

    While it waits, it already holds a prepared init of each kind (container.prepare:
    with a user namespace and without): the forks and the namespaces are made before
    anyone asks for a start; the controller lets the unused one go after the start.
    """
    code = 0
    try:
        from . import container
        # The prepared init is our child and we must be able to wait for it.
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        # One of each kind: an unprivileged domain's (the default) and a privileged one's.
        prepared: list[container.PreparedInit] = []
        for userns in (True, False):
            try:
                prepared.append(container.prepare(userns))
            except OSError:
                pass                 # the controller will prepare one itself
        from . import vncspawn
        try:
            # Forked now, while we are a near copy of the zygote: the spawner shares
            # almost all its memory, and the start path forks nothing for it.
            spawner: socket.socket | None = vncspawn.start()
        except OSError:
            spawner = None           # the controller will fork one itself
        from ..model.config import Console
        from ..terminal import make_terminal
        from .console import DEFAULT_COLUMNS, DEFAULT_LINES
        from .controller import rehearse
        # A blank console of the default kind, made now rather than on the start's path,
        # and the pages the set-up writes copied now (controller.rehearse).
        terminal = make_terminal(Console().emulator, DEFAULT_COLUMNS, DEFAULT_LINES)
        rehearse()
        msg, fds, _, _ = socket.recv_fds(sock, MAX_REQUEST, 1)
        if not msg:
            for p in prepared:
                p.abandon()
            os._exit(0)          # the daemon is gone (the spawner sees our end close)
        try:
            os.write(taken_w, b"x")
        except BrokenPipeError:
            pass                 # the zygote died: the daemon starts another; we serve on
        os.close(taken_w)
        sock.close()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if len(fds) != 1:
            os._exit(1)
        request = json.loads(msg)
        request["prepared"] = prepared
        request["vnc_spawner"] = spawner
        request["terminal"] = terminal
        run(request, fds[0])  # type: ignore[operator]
    except BaseException:
        code = 1
    os._exit(code)


if __name__ == "__main__":
    # `python -m vzfs.controller.zygote MOUNTPOINT FD` (see command()).
    _serve(socket.socket(fileno=int(sys.argv[2])), sys.argv[1])

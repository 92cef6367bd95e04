"""The zygote: a pre-imported, single-threaded process that forks controllers on request.

A fresh interpreter needs ~300 ms to import trio, pyfuse3 and pyte (FACTS.md), so
controllers are never exec'd: the daemon forks this zygote before it starts trio
or opens /dev/fuse, and the zygote forks one controller per start request. A
controller is the zygote's child only until the zygote ends (when the daemon
does); it then belongs to init, which is what lets it outlive the daemon.

Requests are one SOCK_SEQPACKET message each: JSON plus, as SCM_RIGHTS, the
daemon's end of a socketpair that becomes the controller's first connection.
"""

import json
import os
import signal
import socket
from typing import NoReturn

MAX_REQUEST = 1 << 20


def start(close_fds: set[int] = frozenset()) -> socket.socket:  # type: ignore[assignment]
    """Fork the zygote; return the daemon's end of its request socket.

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
        _serve(theirs)
    theirs.close()
    return ours


def _serve(sock: socket.socket) -> NoReturn:
    code = 0
    try:
        from . import controller    # imported once here, shared by every fork
        from ..kernel.syscalls import set_comm
        set_comm("vzfs-zygote")
        # Exited controllers are reaped by the kernel; controllers reset this.
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        while True:
            msg, fds, _, _ = socket.recv_fds(sock, MAX_REQUEST, 1)
            if not msg:
                break             # the daemon is gone
            if len(fds) != 1:
                for fd in fds:
                    os.close(fd)
                continue
            request = json.loads(msg)
            pid = os.fork()
            if pid == 0:
                sock.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                controller.run(request, fds[0])
            os.close(fds[0])
    except BaseException:      # the zygote's only boundary: it must never return into the daemon
        code = 1
    os._exit(code)

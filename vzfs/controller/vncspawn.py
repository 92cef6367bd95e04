"""The VNC spawner: a small process forked before the controller starts trio, whose only
job is to fork the domain's VNC server whenever the controller asks.

Why a spawner: the controller runs trio, and a process forked from inside a running
trio loop cannot start a loop of its own; exec'ing a fresh interpreter would cost
~300 ms of imports on every restart. The spawner is forked while the controller-to-be
is still single-threaded and loop-free — by the zygote's spare, before any start
request arrives, when it is a near copy of the zygote and shares almost all its
memory (a controller whose spare could not fork one forks its own before trio) — and
it keeps every pre-imported module and forks a fresh VNC server in a few milliseconds.

Requests are one SOCK_SEQPACKET message each: JSON ``{"name": …, "log": …}`` plus, as
SCM_RIGHTS, the server's end of its link to the controller. The spawner holds no other
descriptor of the controller's (not the pty, not the daemon's socket), and ends when
the controller's end of the request socket closes.
"""

import json
import os
import signal
import socket
from typing import NoReturn

MAX_REQUEST = 1 << 16


def start() -> socket.socket:
    """Fork the spawner; return the controller's end of its request socket."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        _serve(theirs)
    theirs.close()
    return ours


def request(sock: socket.socket, name: str, link_fd: int, log: str,
            listen_fds: tuple[int, ...] = ()) -> None:
    """Ask for one VNC server speaking to the controller over *link_fd*, serving the
    controller's listening sockets *listen_fds* (none: it binds its own), with its
    stderr appended to *log* (the domain's controller.log) (blocking, tiny)."""
    socket.send_fds(sock, [json.dumps({"name": name, "log": log}).encode()],
                    [link_fd, *listen_fds])


def _serve(sock: socket.socket) -> NoReturn:
    code = 0
    try:
        keep = sock.fileno()
        # Only stdio (the controller's log) and the request socket survive. The Python
        # objects that owned the others stay referenced from the frames below us and are
        # never collected: none of them will close a number reused by a link.
        os.closerange(3, keep)
        os.closerange(keep + 1, os.sysconf("SC_OPEN_MAX"))
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)    # exited servers are reaped by the kernel
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        from ..kernel import proctitle
        proctitle.name("vzfs: vnc spawner", "vzfs-vncspawn")
        while True:
            msg, fds, _, _ = socket.recv_fds(sock, MAX_REQUEST, 3)
            if not msg:
                break                     # the controller is gone
            if not 1 <= len(fds) <= 3:
                for fd in fds:
                    os.close(fd)
                continue
            pid = os.fork()
            if pid == 0:
                sock.close()
                _server(json.loads(msg), fds[0], tuple(fds[1:]))
            for fd in fds:
                os.close(fd)
    except BaseException:     # never return into the controller's code
        code = 1
    os._exit(code)


def _server(request: dict[str, str], link_fd: int, listen_fds: tuple[int, ...] = ()) -> NoReturn:
    code = 0
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if request.get("log"):
            fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            os.dup2(fd, 2)
            os.close(fd)
        from ..vnc import process
        process.run(request["name"], link_fd, listen_fds)
    except BaseException:
        code = 1
        import traceback
        traceback.print_exc()
    os._exit(code)

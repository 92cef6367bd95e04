"""rsync's remote shell during a migration (stdlib only: run with `python -S`).

rsync starts `RSH HOST rsync --server ARGS…` and talks to its stdin and stdout.
This stands in for ssh: it hands that command line and then the bytes both
ways to the migration's already open SSH session, through the socket inherited
as fd RELAY_FD, so the copy made while the domain is frozen costs no new SSH
connection. Usage (rsync adds the rest): relay.py FD
"""

import os
import socket
import sys
import threading


def _copy_in(sock: socket.socket) -> None:
    while True:
        data = os.read(0, 1 << 16)
        if not data:
            sock.shutdown(socket.SHUT_WR)
            return
        sock.sendall(data)


def main() -> int:
    fd = int(sys.argv[1])
    command = sys.argv[2:]
    sock = socket.socket(fileno=fd)
    # The host rsync names first, then its remote command, one word per line.
    words = command[1:]
    sock.sendall(("\0".join(words) + "\n").encode())
    threading.Thread(target=_copy_in, args=(sock,), daemon=True).start()
    while True:
        data = sock.recv(1 << 16)
        if not data:
            return 0
        view = memoryview(data)
        while view:
            view = view[os.write(1, view):]


if __name__ == "__main__":
    sys.exit(main())

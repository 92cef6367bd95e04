"""The daemon's side of sd_notify(3): tell the service manager that the mount is served, or going.

systemd starts a Type=notify service with NOTIFY_SOCKET naming an AF_UNIX datagram
socket (a path, or "@name" in the abstract namespace) and waits for "READY=1" on it
before it calls the service started; "STOPPING=1" says the service has begun to stop.

The daemon takes the variable out of its environment before it forks anything, as
sd_notify()'s unset_environment does: the zygote, every controller, hook and CRIU
descend from the daemon, and one that inherited the variable could speak for the
daemon (under NotifyAccess=all) or mislead a service manager running in a domain.

Nothing here may stop the daemon: a message that cannot be sent is logged and
dropped, as callers of libsystemd's sd_notify() ignore its errors.
"""

import logging
import os
import socket

log = logging.getLogger(__name__)

ENV = "NOTIFY_SOCKET"
# systemd reads its socket at once; a full queue must not hold the daemon up for long.
SEND_TIMEOUT = 1.0


def socket_address(value: str) -> bytes | None:
    """The AF_UNIX address NOTIFY_SOCKET names (sd_notify(3)): an absolute path, or
    "@name" for the abstract namespace (a leading NUL byte, unix(7)). None for any
    other kind (systemd 254's "vsock:…"), which vzfs does not speak."""
    if value.startswith("/"):
        return os.fsencode(value)
    if value.startswith("@"):
        return b"\0" + os.fsencode(value[1:])
    return None


def message(*assignments: str) -> bytes:
    """One datagram: VARIABLE=value assignments, one a line ("READY=1", "STATUS=…")."""
    return "\n".join(assignments).encode()


class Notifier:
    """Sends sd_notify(3) messages to the socket the daemon was started with, if any."""

    def __init__(self, socket_name: str | None) -> None:
        self.socket_name = socket_name

    @classmethod
    def take_from_environment(cls) -> "Notifier":
        """Remove NOTIFY_SOCKET from os.environ, so no child inherits it, and keep it here."""
        return cls(os.environ.pop(ENV, None) or None)

    def notify(self, *assignments: str) -> None:
        """Send one message; without NOTIFY_SOCKET (not run by systemd) do nothing."""
        if self.socket_name is None:
            return
        address = socket_address(self.socket_name)
        if address is None:
            log.warning("sd_notify: cannot send %s: %s=%s is neither a path nor @name",
                        assignments[0], ENV, self.socket_name)
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.settimeout(SEND_TIMEOUT)
                sock.sendto(message(*assignments), address)
        except OSError as exc:
            log.warning("sd_notify: cannot send %s to %s: %s", assignments[0], self.socket_name,
                        exc.strerror or exc)

    def ready(self, status: str) -> None:
        """Serving: systemd finishes `systemctl start` and starts the units ordered after us."""
        self.notify("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def stopping(self, status: str) -> None:
        """Stopping of our own accord or on a signal: systemd shows the unit as deactivating."""
        self.notify("STOPPING=1", f"STATUS={status}")

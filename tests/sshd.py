"""A real OpenSSH server on loopback for migration tests and benchmarks: its own host
key, one client key, and a client config that names it, so nothing of the machine's
own ssh set-up (root's keys, known_hosts, /etc/ssh) is used or touched."""

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"     # for sshfs (tests/test_file_clients.py)
ALIAS = "vzfs-peer"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def available() -> str | None:
    for tool in (SSHD, shutil.which("ssh"), shutil.which("ssh-keygen"), shutil.which("rsync")):
        if not tool or not os.path.exists(tool):
            return "needs openssh-server, openssh-client and rsync"
    return None


class Sshd:
    def __init__(self, base: Path) -> None:
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.client_config = base / "ssh_config"

    def start(self) -> "Sshd":
        b = self.base
        for key in ("host_key", "id"):
            if not (b / key).exists():
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(b / key)],
                               check=True)
        (b / "authorized_keys").write_text((b / "id.pub").read_text())
        host_pub = (b / "host_key.pub").read_text().split()
        (b / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        (b / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {b / 'host_key'}\n"
            f"PidFile {b / 'sshd.pid'}\nAuthorizedKeysFile {b / 'authorized_keys'}\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
            "AllowTcpForwarding no\nX11Forwarding no\nPermitTTY no\n"
            f"Subsystem sftp {SFTP_SERVER}\n")
        self.client_config.write_text(
            f"Host {ALIAS}\n  HostName 127.0.0.1\n  Port {self.port}\n  User root\n"
            f"  IdentityFile {b / 'id'}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {b / 'known_hosts'}\n  StrictHostKeyChecking yes\n"
            "  BatchMode yes\n  LogLevel ERROR\n")
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)   # its privilege separation dir
        self.proc = subprocess.Popen([SSHD, "-D", "-f", str(b / "sshd_config"),
                                      "-E", str(b / "sshd.log")])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        raise RuntimeError(f"sshd did not start: {(b / 'sshd.log').read_text()[-2000:]}")

    def env(self) -> dict[str, str]:
        """What a vzfs daemon needs to reach this server (its VZFS_SSH)."""
        return {"VZFS_SSH": f"ssh -F {self.client_config}"}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

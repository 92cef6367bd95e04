"""A migration target, `[ssh://][USER@]HOST[:PORT][/MOUNTPOINT]`, and the ssh command
lines that reach it (pure).

The remote side is the vzfs instance serving MOUNTPOINT (default /run/vzfs) on
HOST. OpenSSH does transport and authentication: the user's ssh config and
known_hosts apply, and `BatchMode` makes a missing key an error instead of a
password prompt nobody can answer. `VZFS_SSH` replaces the `ssh` word (for a
config file of one's own: `VZFS_SSH="ssh -F /etc/vzfs/ssh_config"`).
"""

import dataclasses
import errno
import os
import re
import shlex

from ..base.errors import VzfsError

DEFAULT_MOUNTPOINT = "/run/vzfs"

_TARGET = re.compile(r"""
    (?:ssh://)?
    (?:(?P<user>[A-Za-z_][A-Za-z0-9_.-]{0,31})@)?
    (?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9_.-]{0,252})
    (?::(?P<port>[0-9]{1,5}))?
    (?P<mountpoint>/[A-Za-z0-9_./-]*)?
    """, re.VERBOSE)


@dataclasses.dataclass(frozen=True)
class Target:
    host: str
    user: str | None = None
    port: int | None = None
    mountpoint: str = DEFAULT_MOUNTPOINT

    def __str__(self) -> str:
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ssh://{user}{host}{port}{self.mountpoint}"


def parse(text: str) -> Target:
    """The target written to `migrate_target`; EINVAL with a sentence when malformed."""
    text = text.strip()
    m = _TARGET.fullmatch(text)
    if not m:
        raise VzfsError(errno.EINVAL, f"{text!r} is not a migration target "
                                      "([ssh://][USER@]HOST[:PORT][/MOUNTPOINT])")
    port = int(m["port"]) if m["port"] else None
    if port is not None and not 1 <= port <= 65535:
        raise VzfsError(errno.EINVAL, f"{text!r}: port {port} is not between 1 and 65535")
    mountpoint = os.path.normpath(m["mountpoint"]) if m["mountpoint"] else DEFAULT_MOUNTPOINT
    if mountpoint in ("/", "//"):
        raise VzfsError(errno.EINVAL, f"{text!r}: {mountpoint} cannot be a vzfs mountpoint")
    host = m["host"]
    if host.startswith("["):
        host = host[1:-1]
    return Target(host=host, user=m["user"], port=port, mountpoint=mountpoint)


def ssh_base() -> list[str]:
    """The ssh command (`VZFS_SSH`, default `ssh`), split like a shell would."""
    words = shlex.split(os.environ.get("VZFS_SSH", "ssh"))
    return words or ["ssh"]


def ssh_argv(target: Target, remote: str, base: list[str] | None = None) -> list[str]:
    """ssh running the shell command *remote* on the target."""
    argv = list(base if base is not None else ssh_base())
    argv += ["-o", "BatchMode=yes", "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
             "-T", "-e", "none"]
    if target.port:
        argv += ["-p", str(target.port)]
    if target.user:
        argv += ["-l", target.user]
    return argv + ["--", target.host, remote]


def receiver_command(target: Target) -> str:
    """The remote shell command that starts the receiving end: the program the target's
    daemon names in its `version` file (so no PATH is assumed), serving MOUNTPOINT."""
    mp = shlex.quote(target.mountpoint)
    version = shlex.quote(os.path.join(target.mountpoint, "version"))
    return (f"p=$(sed -n 's/^program //p' {version} 2>/dev/null); "
            f"if [ -z \"$p\" ]; then echo \"no vzfs serves {target.mountpoint} here\" >&2; "
            f"exit 97; fi; exec $p migrate-receive {mp}")


NO_VZFS_EXIT = 97

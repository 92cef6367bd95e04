"""Where a domain's files live in the state dir, shared by the daemon and its controllers."""

import hashlib
import os


def domain_dir(state_dir: str, name: str) -> str:
    return os.path.join(state_dir, "domains", name)


def config_file(state_dir: str, name: str) -> str:
    return os.path.join(domain_dir(state_dir, name), "config.toml")


def last_exit_file(state_dir: str, name: str) -> str:
    return os.path.join(domain_dir(state_dir, name), "last_exit.json")


CONTROL_SOCKET = "ctl.sock"


def socket_path_via(dir_fd: int) -> str:
    """A short path to the controller socket through an open directory fd.

    AF_UNIX paths are limited to 108 bytes (unix(7)) and state dirs can be deep;
    the kernel resolves /proc/self/fd/N like any directory, so bind(2) and
    connect(2) through it work whatever the state dir's length.
    """
    return f"/proc/self/fd/{dir_fd}/{CONTROL_SOCKET}"


def instance_tag(state_dir: str) -> str:
    """A short stable name for this vzfs instance, so instances' cgroups never collide."""
    return hashlib.sha1(os.path.realpath(state_dir).encode()).hexdigest()[:8]


def cgroup_relpath(state_dir: str, dom_id: int) -> str:
    return f"vzfs/{instance_tag(state_dir)}/{dom_id}"


def default_rootfs(state_dir: str, dom_id: int) -> str:
    return os.path.join(state_dir, "private", str(dom_id))

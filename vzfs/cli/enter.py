"""`vzfs enter`: run a command inside a running domain — its namespaces, root and cgroup.

The CLI process is single-threaded and imports no trio, so it can setns(2) into
the mount namespace (which a multi-threaded process cannot). It forks a child
that joins the domain's cgroups and namespaces; since a pid namespace applies
only to children, that child forks the command, waits for it, and passes its
exit status up: `vzfs enter` exits with the command's status (128+N when it
was killed by signal N), 126/127 when it cannot be run, 125 on vzfs's own errors.
"""

import errno
import os
import signal
from typing import NoReturn

from ..base.errors import VzfsError
from ..controller.container import DROPPED_CAPS
from ..kernel import cgroups, namespaces, syscallfilter, syscalls

DEFAULT_COMMAND = ["/bin/sh", "-l"]
ENV_KEEP = ("TERM", "LANG", "LC_ALL", "COLUMNS", "LINES")


def domain_pid(mountpoint: str, name: str) -> int:
    try:
        with open(os.path.join(mountpoint, "domains", name, "pid")) as f:
            text = f.read().strip()
    except FileNotFoundError:
        raise VzfsError(errno.ENOENT, f"cannot enter domain {name}: there is no such domain "
                                      f"under {mountpoint}") from None
    if not text:
        raise VzfsError(errno.EBUSY, f"cannot enter domain {name}: it is not running")
    return int(text)


def run(mountpoint: str, name: str, argv: list[str]) -> int:
    pid = domain_pid(mountpoint, name)
    argv = argv or DEFAULT_COMMAND
    layout = cgroups.detect()
    try:
        dirs = cgroups.cgroup_dirs_of(pid, layout)
        fds = namespaces.open_namespaces(pid)
    except OSError as exc:
        raise VzfsError(exc.errno or errno.EIO, f"cannot enter domain {name}: "
                                                f"{exc.strerror or exc}") from exc
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "HOME": "/root", "container": "vzfs"}
    env.update({k: os.environ[k] for k in ENV_KEEP if k in os.environ})
    rfd, wfd = os.pipe2(os.O_CLOEXEC)
    child = os.fork()
    if child == 0:
        os.close(rfd)
        _join_and_run(dirs, fds, argv, env, wfd)
    for fd in fds.values():
        os.close(fd)
    os.close(wfd)
    # Let the command, not us, take the terminal's signals.
    old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGQUIT)}
    try:
        report = b""
        while chunk := os.read(rfd, 4096):
            report += chunk
        _, status = os.waitpid(child, 0)
    finally:
        os.close(rfd)
        for sig, handler in old.items():
            signal.signal(sig, handler)
    if report:
        code, _, words = report.decode(errors="replace").partition(" ")
        err = int(code) if code.isdigit() else errno.EIO
        raise EnterError(126 if err in (errno.EACCES, errno.ENOEXEC) else
                         127 if err == errno.ENOENT else 125,
                         f"cannot run {argv[0]} in domain {name}: {words}")
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else \
        128 + os.WTERMSIG(status)


class EnterError(Exception):
    def __init__(self, code: int, sentence: str) -> None:
        super().__init__(sentence)
        self.code = code
        self.sentence = sentence


def _join_and_run(dirs: list[str], fds: dict[str, int], argv: list[str],
                  env: dict[str, str], wfd: int) -> NoReturn:
    step = "join the domain"
    privileged = "user" not in fds
    try:
        cgroups.join_dirs(dirs)
        namespaces.enter(fds)
        os.chdir("/")
        grandchild = os.fork()
        if grandchild == 0:
            step = "exec"
            # Python ignores SIGPIPE and SIGXFSZ; the command must not inherit that.
            for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGPIPE, signal.SIGXFSZ):
                signal.signal(sig, signal.SIG_DFL)
            syscalls.drop_bounding_caps(DROPPED_CAPS)
            # The domain's own filter: a command entered is no less confined than init.
            syscallfilter.load(privileged)
            os.closerange(3, wfd)
            os.closerange(wfd + 1, 1 << 20)
            os.execvpe(argv[0], argv, env)
        os.close(wfd)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGQUIT, signal.SIG_IGN)
        _, status = os.waitpid(grandchild, 0)
        if os.WIFSIGNALED(status):
            os._exit(128 + os.WTERMSIG(status))
        os._exit(os.WEXITSTATUS(status))
    except BaseException as exc:       # the forked child's only boundary: report, then die
        code = getattr(exc, "errno", None) or errno.EIO
        words = getattr(exc, "strerror", None) or str(exc)
        try:
            os.write(wfd, f"{code} {words}".encode() if step == "exec" else
                     f"{code} {step}: {words}".encode())
        finally:
            os._exit(125)

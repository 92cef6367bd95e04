"""The control files, as a declarative table: name, mode, how to show, how to store.

Every show returns the whole file content (newline-terminated values, or empty);
every store takes the bytes of one write(2), does the command, and returns only
once it has taken effect — or raises VzfsError and changes nothing
(sysfs/cgroup-v2 conventions: parse → validate → look up → check state → act).
"""

import codecs
import dataclasses
import errno
import functools
import os
import platform
import sys
from collections.abc import Awaitable, Callable

from .. import __version__
from ..base.errors import VzfsError
from ..controller import checkpoint
from ..daemon.domain import Domain
from ..daemon.registry import Registry
from ..kernel import criu
from ..model import config as configmod
from ..model import lifecycle
from . import views

Show = Callable[[Registry, Domain], str | Awaitable[str]]
Store = Callable[[Registry, Domain, bytes], Awaitable[None]]
Check = Callable[[Registry, Domain, bytes], None]


@dataclasses.dataclass(frozen=True)
class ControlFile:
    name: str
    show: Show
    store: Store | None = None
    # A whole-document file (config): one open → writes → close is one transaction
    # (Transaction): the writes gather, `check` refuses early what no later byte can
    # mend, and `store` takes the whole content once, at the close.
    whole: bool = False
    check: Check | None = None
    # A command that may take long (state): each write's runs as a task of the daemon
    # (fs.inflight), which the write lets go of — returning at once, the outcome at the
    # close — when another writer opens the file; `check` refuses at the write what
    # the domain's state already refuses.
    preemptible: bool = False
    # A stream (console): each open file has its own cursor, reads block for
    # new data like `tail -f`, and writes are bytes, not commands.
    stream: bool = False
    # poll(2) wakes a reader when what it shows changed since it read it (events).
    poll: bool = False

    @property
    def mode(self) -> int:
        return 0o644 if self.store else 0o444


class Transaction:
    """The bytes one open file of a whole-document file gathers until its close.

    Pure bookkeeping: writes land at their offsets (a writer may seek back and
    rewrite, as a file allows); the content is bounded; the UTF-8 of appended bytes
    is checked as they come. `due` says when the whole gathered content is worth
    validating early: at a line end, and each time it has doubled since the last
    time, so a writer of many small lines costs at most twice the final size in
    parsing, not a parse per write.
    """

    def __init__(self, limit: int, what: str) -> None:
        self.data = bytearray()
        self.limit = limit
        self.what = what
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.checked = 0          # size at the last early validation
        self.utf8 = True          # every write so far appended: the decoder saw them all
        self.dirty = False        # written since the last close applied it
        self.written = False      # any byte written by this open file
        self.failed = 0           # a write was refused with this errno: nothing is applied

    def truncate(self) -> None:
        self.data = bytearray()
        self.decoder.reset()
        self.utf8 = True
        self.checked = 0
        self.dirty = self.written

    def write(self, off: int, buf: bytes) -> None:
        """Take one write(2) at *off*, or raise VzfsError (EFBIG, EINVAL) and take none."""
        end = off + len(buf)
        if end > self.limit:
            raise VzfsError(errno.EFBIG, f"{self.what}: it is at most {self.limit} bytes "
                                         f"(this write ends at byte {end})")
        if off != len(self.data):
            self.utf8 = False     # rewritten or sparse: the whole is checked at the close
        elif self.utf8:
            try:
                self.decoder.decode(buf)
            except UnicodeDecodeError as exc:
                raise VzfsError(errno.EINVAL, f"{self.what}: the write is not UTF-8 text "
                                              f"({exc.reason} at byte {off + exc.start})") from None
        if off > len(self.data):
            self.data.extend(b"\0" * (off - len(self.data)))
        self.data[off:end] = buf
        self.dirty = self.written = True

    def ready(self) -> bool:
        """Whether a close applies the content: something was written and not applied
        yet. A shell's `> config` closes its first descriptor (after dup2) before any
        write, and an open with O_TRUNC that writes nothing changes nothing (`touch`)."""
        return self.written and self.dirty

    def due(self) -> bool:
        return self.data.endswith(b"\n") and len(self.data) >= 2 * self.checked

    def mark_checked(self) -> None:
        self.checked = len(self.data)


def one_word(data: bytes, what: str) -> str:
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise VzfsError(errno.EINVAL, f"{what}: the write is not UTF-8 text") from None
    if not text:
        raise VzfsError(errno.EINVAL, f"{what}: the write is empty (write a verb, e.g. start)")
    if len(text.split()) != 1:
        raise VzfsError(errno.EINVAL, f"{what}: write one verb, got {configmod.quote(text)}")
    return text


def _verb(data: bytes, dom: Domain) -> str:
    return one_word(data, f"cannot change the state of domain {dom.name}")


def check_state(reg: Registry, dom: Domain, data: bytes) -> None:
    reg.check_command(dom, _verb(data, dom))


async def store_state(reg: Registry, dom: Domain, data: bytes) -> None:
    await reg.command(dom, _verb(data, dom))


async def store_config(reg: Registry, dom: Domain, data: bytes) -> None:
    reg.replace_config(dom, data)


def check_config(reg: Registry, dom: Domain, data: bytes) -> None:
    reg.check_config_prefix(dom, data)


async def store_mounts(reg: Registry, dom: Domain, data: bytes) -> None:
    await reg.change_mounts(dom, data)


async def store_migrate(reg: Registry, dom: Domain, data: bytes) -> None:
    await reg.migrate(dom, data)


def show_events(reg: Registry, dom: Domain) -> str:
    """The domain's values in the cgroup.events style; poll(2) for POLLPRI wakes when
    one of them changes (read it again from the start to re-arm, as in sysfs)."""
    populated = not lifecycle.is_down(dom.state)
    return (f"state {dom.state.value}\n"
            f"populated {int(populated)}\n"
            f"vnc_restarts {dom.vnc_restarts}\n"
            f"error {int(bool(dom.error))}\n")


def show_migration(reg: Registry, dom: Domain) -> str:
    """The migration under way (target, phase, progress, times so far), or the last
    one's outcome: `KEY VALUE` lines in a fixed order, empty when there was none."""
    record = dom.migration
    keys = [k for k in MIGRATION_KEYS if k in record]
    keys += sorted(k for k in record if k not in MIGRATION_KEYS)
    return "".join(f"{k} {_value(record[k])}\n" for k in keys)


MIGRATION_KEYS = ("target", "source_host", "direction", "status", "phase", "bytes_done",
                  "bytes_total", "percent", "error", "downtime_ms", "total_ms", "preflight_ms",
                  "reserve_ms", "copy_ms", "freeze_ms", "transfer_ms", "restore_ms", "pages_ms",
                  "started_at")


def _value(value: object) -> str:
    return " ".join(str(value).split())


async def store_console(reg: Registry, dom: Domain, data: bytes) -> None:
    # (operations.write calls send_input itself, with the open file's O_NONBLOCK)
    await dom.console.send_input(dom.name, data)


def show_stats(reg: Registry, dom: Domain) -> str:
    return "".join(f"{k} {v}\n" for k, v in views.stats(reg, dom).items())


def show_checkpoint(reg: Registry, dom: Domain) -> str:
    figures = views.checkpoint_figures(reg, dom)
    out = []
    for key in checkpoint.FIGURES:
        value = figures.get(key)
        if isinstance(value, (int, float)):
            text = f"{value:.3f}" if key.endswith("_at") else (
                f"{value:.1f}" if key.endswith("_ms") else f"{int(value)}")
            out.append(f"{key} {text}\n")
    return "".join(out)


def _line(value: object) -> str:
    return "" if value is None or value == "" else f"{value}\n"


DOMAIN_FILES: tuple[ControlFile, ...] = (
    ControlFile("config", lambda reg, dom: configmod.dumps(dom.config), store_config, whole=True,
                check=check_config),
    ControlFile("state", lambda reg, dom: dom.state.value + "\n", store_state,
                check=check_state, preemptible=True),
    ControlFile("id", lambda reg, dom: f"{dom.config.id}\n"),
    ControlFile("pid", lambda reg, dom: _line(dom.pid)),
    ControlFile("stats", show_stats),
    ControlFile("error", lambda reg, dom: _line(dom.error)),
    ControlFile("console", lambda reg, dom: "", store_console, stream=True),
    ControlFile("screen", views.screen),
    ControlFile("mounts", views.mounts, store_mounts),
    ControlFile("vnc", lambda reg, dom: _line(dom.vnc_address)),
    ControlFile("vnc_websocket", lambda reg, dom: _line(dom.vnc_websocket)),
    ControlFile("checkpoint", show_checkpoint),
    ControlFile("checkpoint.log", views.checkpoint_log),
    ControlFile("migrate_target", show_migration, store_migrate),
    ControlFile("events", show_events, poll=True),
    ControlFile("idmap", lambda reg, dom: "" if dom.config.privileged or dom.config.idmap is None
                else dom.config.idmap.shown()),
)


README = """\
vzfs — containers managed through this filesystem. See vzfs(5) for the whole contract.

  version             vzfs, kernel, cgroup mode, checkpoint engine
  events              TIME DOMAIN KIND DETAIL lines from when you open it, then follows;
                      tail -f: the last ten, then each new one
  templates/          rootfs templates (cat one to see where it lives)
  domains/            mkdir NAME defines a domain; rmdir NAME undefines a stopped one
  domains/NAME/
    config    rw      the definition in TOML; write a whole new one to replace it
    state     rw      read: stopped starting running stopping crashed …
                      write a verb: start stop kill restart pause resume suspend
    id        r       the numeric domain id
    pid       r       host pid of the container's init (empty when not running)
    stats     r       cpu_ns, memory_bytes, pids, uptime_s, vnc_restarts, rootfs_shifted
    error     r       why the last command on this domain failed (empty when none)
    console   rw      read: recent output, then follows live (like tail -f); write: typed input
    screen    r       what the console shows now, one line per row
    mounts    rw      SOURCE TARGET OPTIONS lines; write: add SOURCE TARGET [OPTIONS] | del TARGET
    vnc       r       HOST:PORT of the console's VNC server (empty when none)
    vnc_websocket r   HOST:PORT serving noVNC and RFB over WebSocket (empty when none)
    checkpoint r      figures of the last suspend and resume (dump_ms, frozen_ms, restore_ms…)
    checkpoint.log r  CRIU's log of the last suspend or resume
    events    r       state, populated, vnc_restarts, error as KEY VALUE; poll() it for POLLPRI
    migrate_target rw write [ssh://][USER@]HOST[:PORT][/MOUNTPOINT] to move the running domain
                      there (`check TARGET`: the preflight alone); read: phase, progress, outcome
    idmap     r       its user namespace's map as /proc/PID/uid_map shows it (empty: privileged)

One write is one command; it returns when done. A refused command changes
nothing, fails with an errno (EINVAL, EBUSY, EEXIST, ENOENT, EIO…) and `error`
says why. `kill` works at once, whatever is in flight: a `state` write held
while another writer opens `state` returns, and its close reports the outcome
(ECANCELED: cut short by kill). Example:
  mkdir domains/web1 && echo start > domains/web1/state && cat domains/web1/pid
"""


def version_text(reg: Registry) -> str:
    return (f"vzfs {__version__}\n"
            f"kernel {platform.release()}\n"
            f"cgroup {reg.layout.mode}\n"
            f"cgroup_favordynmods {'yes' if _favordynmods(reg) else 'no'}\n"
            f"checkpoint {checkpoint_engine()}\n"
            f"user_namespaces {userns_support()}\n"
            f"seccomp {seccomp_support()}\n"
            f"state_dir {reg.state_dir}\n"
            f"daemon_pid {os.getpid()}\n"
            f"program {sys.executable} -m vzfs\n")


@functools.cache
def checkpoint_engine() -> str:
    """criu.describe(), once per daemon: it runs `criu --version`, too slow for every read
    (the daemon asks before trio runs, so no request waits for it)."""
    return criu.describe()


def userns_support() -> str:
    """How an unprivileged domain's root is seen through its map: by an idmapped mount,
    or where its filesystem cannot be idmapped, its ownership shifted on disk (each
    domain's `stats` says which it uses)."""
    return "idmapped-mounts, shift"


def seccomp_support() -> str:
    from ..kernel import syscallfilter
    why = syscallfilter.available()
    return "libseccomp" if not why else f"none ({why})"


def _favordynmods(reg: Registry) -> bool:
    from ..kernel import cgroups
    try:
        return cgroups.favordynmods(reg.layout)
    except OSError:
        return False


def template_text(reg: Registry, name: str) -> str:
    from ..daemon import templates
    return (f"name {name}\n"
            f"path {templates.template_dir(reg.state_dir, name)}\n"
            f"source {templates.find_busybox()}\n")

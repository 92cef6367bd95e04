"""A domain's definition: TOML text in, a validated `DomainConfig` out, and back.

Pure: no I/O. `parse()` validates the whole document and raises VzfsError(EINVAL)
with a sentence naming the key; `dumps()` writes the canonical form that the
`config` file shows and the state dir stores.
"""

import dataclasses
import ipaddress
import re
import signal
import tomllib
from collections.abc import Collection, Mapping
from errno import EFBIG, EINVAL
from typing import Any

import tomli_w

from ..base.errors import VzfsError
from . import idmap as idmapmod
from . import mountspec
from .mountspec import MountSpec
from .idmap import IdMap

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")
HOSTNAME_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                         r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\Z")
SIZE_RE = re.compile(r"(\d+)\s*([KMGT]?)i?B?\Z", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
MAX_ID = 2**31 - 1
FIRST_ID = 101           # OpenVZ's first container id
MAX_BYTES = 1 << 20      # a config is at most 1 MiB (the `config` file refuses more: EFBIG)
EMPTY = "a config cannot be empty"

# signal(7): the kernel's signals are 1..64; glibc keeps 32 and 33 for itself, so its
# SIGRTMIN is 34 and real-time signals are named from it (systemd's SIGRTMIN+3 is 37).
SIGRTMIN, SIGRTMAX = int(signal.SIGRTMIN), int(signal.SIGRTMAX)
MAX_SIGNAL = 64
RT_SIGNAL_RE = re.compile(r"SIG(RTMIN|RTMAX)\s*(?:([+-])\s*(\d{1,2}))?\Z")


@dataclasses.dataclass(frozen=True)
class Limits:
    memory: int | None = None      # bytes
    cpus: float | None = None
    pids: int | None = None


@dataclasses.dataclass(frozen=True)
class Vnc:
    listen: str = "127.0.0.1"
    port: int = 0                  # 0: 5900 + the first free display number
    password: str = ""
    websocket: bool = True         # the WebSocket (noVNC) listener, beside RFB
    websocket_port: int = 0        # 0: 15900 + the display number, or the next free
    required: bool = True          # a start fails when the server cannot listen


@dataclasses.dataclass(frozen=True)
class Console:
    emulator: str = "fast"         # the terminal emulator backend: "fast" or "pyte"


EMULATORS = ("fast", "pyte")


@dataclasses.dataclass(frozen=True)
class DomainConfig:
    id: int
    hostname: str
    init: tuple[str, ...] = ("/sbin/init",)
    autostart: bool = False
    stop_signal: int = int(signal.SIGPWR)
    stop_timeout: float = 10.0
    rootfs_path: str | None = None        # None: STATE_DIR/private/ID
    rootfs_template: str | None = "busybox"
    limits: Limits = Limits()
    mounts: tuple[MountSpec, ...] = ()   # one representation from config to kernel
    vnc: Vnc = Vnc()
    console: Console = Console()
    memory_text: str | None = None        # memory as the user wrote it, for dumps()
    # A user namespace unless privileged; its block of host ids, None until the
    # registry assigns one (vzfs.model.idmap).
    privileged: bool = False
    idmap: IdMap | None = None


def is_valid_name(name: str) -> bool:
    return bool(NAME_RE.match(name)) and not name.startswith("cgroup.")


def parse_size(text: str, key: str) -> int:
    m = SIZE_RE.match(text.strip())
    if not m or int(m.group(1)) == 0:
        raise _invalid(key, f"{quote(text)} is not a size (use e.g. 256M or 2G)")
    return int(m.group(1)) * _SIZE_UNITS[m.group(2).upper()]


def parse_signal(value: Any, key: str) -> int:
    """A signal by number (1..64) or by name: `SIGTERM`, `TERM`, `SIGRTMIN+3`, `SIGRTMAX-2`."""
    if isinstance(value, int) and not isinstance(value, bool):
        if 1 <= value <= MAX_SIGNAL:
            return value
    elif isinstance(value, str):
        name = value.strip().upper()
        if not name.startswith("SIG"):
            name = "SIG" + name
        rt = RT_SIGNAL_RE.match(name)
        if rt:
            base = SIGRTMIN if rt.group(1) == "RTMIN" else SIGRTMAX
            offset = int(rt.group(3) or 0) * (-1 if rt.group(2) == "-" else 1)
            if SIGRTMIN <= base + offset <= SIGRTMAX:
                return base + offset
        elif name in signal.Signals.__members__:
            return int(signal.Signals[name])
    raise _invalid(key, f"{quote(value)} is not a signal (use a name such as SIGPWR, "
                        f"SIGTERM or SIGRTMIN+3, or a number 1..{MAX_SIGNAL})")


def signal_name(sig: int) -> str | int:
    """The canonical form of a signal, which parse_signal reads back as the same number:
    its name, SIGRTMIN+N for a real-time one, the number for glibc's reserved 32 and 33."""
    if SIGRTMIN < sig <= SIGRTMAX:
        return "SIGRTMIN" if sig == SIGRTMIN else f"SIGRTMIN+{sig - SIGRTMIN}"
    try:
        return signal.Signals(sig).name
    except ValueError:
        return sig


def quote(value: Any, limit: int = 64) -> str:
    """*value* as a sentence quotes the user's input: repr()'d, at most *limit* characters
    of it (a 1 MiB write must not come back whole in `error`)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _invalid(key: str, why: str) -> VzfsError:
    return VzfsError(EINVAL, f"{key}: {why}")


def _take(table: dict[str, Any], key: str, types: type | tuple[type, ...], where: str) -> Any:
    value = table.pop(key, None)
    if value is None:
        return None
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise _invalid(where + key, f"expected {_type_name(types)}, got a boolean")
    if not isinstance(value, types):
        raise _invalid(where + key, f"expected {_type_name(types)}, got {type(value).__name__}")
    return value


def _type_name(types: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
             list: "a list", dict: "a table"}
    if isinstance(types, tuple):
        return " or ".join(names.get(t, t.__name__) for t in types)
    return names.get(types, types.__name__)


def _no_leftovers(table: dict[str, Any], where: str) -> None:
    if table:
        key = sorted(table)[0]
        raise _invalid(where + (key if len(key) <= 64 else key[:64] + "…"), "unknown key")


def parse(text: str | bytes, *, name: str, default_id: int | None,
          complete: bool = True) -> DomainConfig:
    """Validate a whole TOML definition; *default_id* fills a missing id.

    With *complete* false, *text* is what a writer has written so far, and only what
    more text cannot mend is refused: an empty text, or a `[[mount]]` without its
    source or target yet, passes (TOML lets no later line change a value given); a
    TOML error that more text may mend is raised, and could_grow_valid() says so."""
    if isinstance(text, bytes):
        if len(text) > MAX_BYTES:
            raise VzfsError(EFBIG, f"a config is at most {MAX_BYTES} bytes")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise VzfsError(EINVAL, f"config is not UTF-8 text: {exc.reason} at byte {exc.start}") from exc
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise VzfsError(EINVAL, f"config is not valid TOML: {exc}") from exc
    except RecursionError:
        # tomllib recurses once per nested array or inline table.
        raise VzfsError(EINVAL, "config is not valid TOML: its arrays or tables nest too "
                                "deeply") from None
    if not doc and complete:
        # Whitespace or comments alone: taken as "all defaults" it would lift a running
        # domain's limits (issue 16); a writer who wants the defaults writes `id = N`.
        raise VzfsError(EINVAL, EMPTY + " (it holds no key)")
    return from_dict(doc, name=name, default_id=default_id, complete=complete)


def could_grow_valid(exc: VzfsError) -> bool:
    """Whether more text after a line end could mend the TOML error *exc* (parse with
    complete=False): only one tomllib found at the end of the document (an unterminated
    multi-line string, array or inline table); one at a character of the text stays
    whatever follows."""
    return exc.sentence.endswith("(at end of document)")


def from_dict(doc: dict[str, Any], *, name: str, default_id: int | None,
              complete: bool = True) -> DomainConfig:
    doc = dict(doc)
    dom_id = _take(doc, "id", int, "")
    if dom_id is None:
        if default_id is None:
            raise _invalid("id", "missing")
        dom_id = default_id
    if not 1 <= dom_id <= MAX_ID:
        raise _invalid("id", f"{dom_id} is out of range 1..{MAX_ID}")
    hostname = _take(doc, "hostname", str, "")
    if hostname is None:
        hostname = name if HOSTNAME_RE.match(name) else "localhost"
    if len(hostname) > 64 or not HOSTNAME_RE.match(hostname):
        raise _invalid("hostname", f"{quote(hostname)} is not a valid host name")
    init = _take(doc, "init", list, "")
    if init is None:
        init = ["/sbin/init"]
    if not init or not all(isinstance(a, str) for a in init):
        raise _invalid("init", "expected a non-empty list of strings")
    if not init[0].startswith("/"):
        raise _invalid("init", f"{quote(init[0])} must be an absolute path inside the container")
    if any("\0" in a for a in init):
        raise _invalid("init", "arguments must not contain NUL")
    autostart = _take(doc, "autostart", bool, "")
    stop_signal = doc.pop("stop_signal", None)
    stop_signal = int(signal.SIGPWR) if stop_signal is None else parse_signal(stop_signal, "stop_signal")
    stop_timeout = _take(doc, "stop_timeout", (int, float), "")
    if stop_timeout is None:
        stop_timeout = 10.0
    if not 0 <= stop_timeout <= 3600:
        raise _invalid("stop_timeout", f"{stop_timeout} is out of range 0..3600 seconds")

    rootfs = _take(doc, "rootfs", dict, "") or {}
    rootfs = dict(rootfs)
    rootfs_path = _take(rootfs, "path", str, "rootfs.")
    if rootfs_path is not None and (not rootfs_path.startswith("/") or "\0" in rootfs_path):
        raise _invalid("rootfs.path", f"{quote(rootfs_path)} must be an absolute path")
    if rootfs_path is not None:
        rootfs_path = rootfs_path.rstrip("/") or "/"
        # Only the spelling here: where the path leads (`/.`, a symlink to /) is known
        # only by resolving it, which the registry does with rootfs_refusal at every
        # write and start. A stored config that parsed once must always load.
        if rootfs_path == "/":
            raise _invalid("rootfs.path", "the host's / cannot be a container's root")
    template = rootfs.pop("template", "busybox") if "template" in rootfs else "busybox"
    if template is not None and not isinstance(template, str):
        raise _invalid("rootfs.template", "expected a string")
    if template == "":
        template = None
    if template is not None and not NAME_RE.match(template):
        raise _invalid("rootfs.template", f"{quote(template)} is not a template name")
    _no_leftovers(rootfs, "rootfs.")

    limits_t = dict(_take(doc, "limits", dict, "") or {})
    memory_text = limits_t.pop("memory", None)
    memory = None
    if memory_text is not None:
        if isinstance(memory_text, int) and not isinstance(memory_text, bool):
            memory, memory_text = memory_text, str(memory_text)
            if memory <= 0:
                raise _invalid("limits.memory", "must be positive")
        elif isinstance(memory_text, str):
            memory = parse_size(memory_text, "limits.memory")
        else:
            raise _invalid("limits.memory", "expected a size such as \"256M\"")
        if memory < 4 << 20:
            raise _invalid("limits.memory", f"{memory_text!r} is below the 4M minimum")
    cpus = _take(limits_t, "cpus", (int, float), "limits.")
    if cpus is not None and not 0.01 <= cpus <= 4096:
        raise _invalid("limits.cpus", f"{cpus} is out of range 0.01..4096")
    pids = _take(limits_t, "pids", int, "limits.")
    if pids is not None and not 1 <= pids <= 4194304:
        raise _invalid("limits.pids", f"{pids} is out of range 1..4194304")
    _no_leftovers(limits_t, "limits.")

    mounts: list[MountSpec] = []
    raw_mounts = _take(doc, "mount", list, "") or []
    for i, m in enumerate(raw_mounts):
        where = f"mount[{i}]."
        if not isinstance(m, dict):
            raise _invalid(f"mount[{i}]", "expected a table with source and target")
        m = dict(m)
        source = _take(m, "source", str, where)
        target = _take(m, "target", str, where)
        options = _take(m, "options", str, where) or ""
        if not complete and (source is None or target is None):
            continue            # a later line may give it (parse, complete=False)
        if not source:
            raise _invalid(where + "source", "missing")
        if not target or not target.startswith("/"):
            raise _invalid(where + "target", "must be an absolute path inside the container")
        _no_leftovers(m, where)
        try:
            spec = mountspec.make(source, target, options)
        except VzfsError as exc:
            raise _invalid(f"mount[{i}]", exc.sentence) from None
        if any(spec.target == earlier.target for earlier in mounts):
            raise _invalid(where + "target", f"{spec.target} is already a mount target")
        mounts.append(spec)

    vnc_t = dict(_take(doc, "vnc", dict, "") or {})
    listen = _take(vnc_t, "listen", str, "vnc.") or "127.0.0.1"
    port = _take(vnc_t, "port", int, "vnc.") or 0
    if not 0 <= port <= 65535:
        raise _invalid("vnc.port", f"{port} is out of range 0..65535")
    password = _take(vnc_t, "password", str, "vnc.") or ""
    if len(password.encode()) > 8:
        # rfbproto §VNC Authentication: DES keys from the first 8 bytes; silently
        # cutting a longer password would make "secret-password" mean "secret-p".
        raise _invalid("vnc.password", "VNC authentication uses at most 8 bytes")
    try:
        ipaddress.ip_address(listen)
    except ValueError:
        raise _invalid("vnc.listen", f"{quote(listen)} is not an IP address") from None
    websocket = _take(vnc_t, "websocket", bool, "vnc.")
    websocket = True if websocket is None else websocket
    websocket_port = _take(vnc_t, "websocket_port", int, "vnc.") or 0
    if not 0 <= websocket_port <= 65535:
        raise _invalid("vnc.websocket_port", f"{websocket_port} is out of range 0..65535")
    if port and port == websocket_port:
        raise _invalid("vnc.websocket_port", "must differ from vnc.port")
    required = _take(vnc_t, "required", bool, "vnc.")
    required = True if required is None else required
    _no_leftovers(vnc_t, "vnc.")
    console_t = dict(_take(doc, "console", dict, "") or {})
    emulator = _take(console_t, "emulator", str, "console.") or "fast"
    if emulator not in EMULATORS:
        raise _invalid("console.emulator", f"{quote(emulator)} is not one of {', '.join(EMULATORS)}")
    _no_leftovers(console_t, "console.")
    privileged = _take(doc, "privileged", bool, "")
    # A privileged domain keeps its block (unused), so that turning privileged off
    # again gives it back the ids its files inside were made with.
    idmap = _parse_idmap(_take(doc, "idmap", dict, ""))
    _no_leftovers(doc, "")

    return DomainConfig(
        id=dom_id, hostname=hostname, init=tuple(init), autostart=bool(autostart),
        stop_signal=stop_signal, stop_timeout=float(stop_timeout),
        rootfs_path=rootfs_path, rootfs_template=template,
        limits=Limits(memory=memory, cpus=float(cpus) if cpus is not None else None, pids=pids),
        mounts=tuple(mounts), vnc=Vnc(listen, port, password, websocket, websocket_port, required),
        console=Console(emulator), memory_text=memory_text,
        privileged=bool(privileged), idmap=idmap,
    )


def _parse_idmap(table: dict[str, Any] | None) -> IdMap | None:
    if table is None:
        return None
    table = dict(table)
    uid = _take(table, "uid", int, "idmap.")
    gid = _take(table, "gid", int, "idmap.")
    size = _take(table, "size", int, "idmap.")
    _no_leftovers(table, "idmap.")
    if uid is None:
        raise _invalid("idmap.uid", "missing (the host uid of the domain's root)")
    m = IdMap(uid, uid if gid is None else gid, idmapmod.BLOCK if size is None else size)
    idmapmod.validate(m)
    return m


# Where a domain's root may not be (rootfs_refusal): the host's system trees, nowhere in
# them, and the directories that hold other things, themselves (a root inside /srv or
# /var/lib is fine; /srv itself is everyone's).
SYSTEM_TREES = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
                "/boot", "/dev", "/proc", "/sys")
SYSTEM_DIRS = ("/", "/home", "/var", "/var/lib", "/var/cache", "/var/log", "/var/tmp",
               "/var/spool", "/tmp", "/run", "/root", "/srv", "/opt", "/mnt", "/media")


def _within(path: str, tree: str) -> bool:
    return path == tree or path.startswith(tree.rstrip("/") + "/")


def rootfs_refusal(path: str, *, state_dir: str | None = None, own_private: str = "",
                   mountpoint: str = "", others: Mapping[str, str] = {}) -> str:
    """Why the directory *path* (resolved: no symlink, `.` or `..` left) cannot be a
    domain's root, or "" when it can. The rest names the resolved state dir, this
    domain's own private area there, the vzfs mountpoint and the other domains' roots
    (name → resolved path)."""
    if path == "/":
        return "the host's / cannot be a container's root"
    for tree in SYSTEM_TREES:
        if _within(path, tree):
            return f"{path} is in the host's system directory {tree}"
    if path in SYSTEM_DIRS:
        return f"{path} is a system directory of the host"
    if state_dir:
        if _within(state_dir, path):
            return f"{path} holds vzfs's state dir {state_dir}"
        if _within(path, state_dir) and not (own_private and _within(path, own_private)):
            return f"{path} is inside vzfs's state dir {state_dir} (only its own private " \
                   f"area {own_private} may be)"
    if mountpoint and (_within(path, mountpoint) or _within(mountpoint, path)):
        return f"{path} overlaps the vzfs mount {mountpoint}"
    for other, root in sorted(others.items()):
        if _within(path, root) or _within(root, path):
            return f"{path} overlaps the root of domain {other} ({root})"
    return ""


def check_template(template: str | None, known: Collection[str]) -> None:
    """A template the daemon offers (or none)."""
    if template is not None and template not in known:
        raise _invalid("rootfs.template", f"there is no template {quote(template)} "
                                          f"(templates: {', '.join(sorted(known)) or 'none'})")


def to_dict(cfg: DomainConfig) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": cfg.id,
        "hostname": cfg.hostname,
        "init": list(cfg.init),
        "autostart": cfg.autostart,
        "stop_signal": signal_name(cfg.stop_signal),
        "stop_timeout": cfg.stop_timeout,
        "privileged": cfg.privileged,
    }
    if cfg.idmap is not None:
        doc["idmap"] = {"uid": cfg.idmap.uid, "gid": cfg.idmap.gid, "size": cfg.idmap.size}
    rootfs: dict[str, Any] = {}
    if cfg.rootfs_path is not None:
        rootfs["path"] = cfg.rootfs_path
    rootfs["template"] = cfg.rootfs_template or ""
    doc["rootfs"] = rootfs
    limits: dict[str, Any] = {}
    if cfg.limits.memory is not None:
        limits["memory"] = cfg.memory_text or str(cfg.limits.memory)
    if cfg.limits.cpus is not None:
        limits["cpus"] = cfg.limits.cpus
    if cfg.limits.pids is not None:
        limits["pids"] = cfg.limits.pids
    doc["limits"] = limits
    doc["vnc"] = {"listen": cfg.vnc.listen, "port": cfg.vnc.port, "password": cfg.vnc.password,
                  "websocket": cfg.vnc.websocket, "websocket_port": cfg.vnc.websocket_port,
                  "required": cfg.vnc.required}
    doc["console"] = {"emulator": cfg.console.emulator}
    if cfg.mounts:
        doc["mount"] = [{"source": m.source, "target": m.target, "options": ",".join(m.options)}
                        for m in cfg.mounts]
    return doc


def dumps(cfg: DomainConfig) -> str:
    return tomli_w.dumps(to_dict(cfg))


def default(name: str, dom_id: int) -> DomainConfig:
    return from_dict({}, name=name, default_id=dom_id)

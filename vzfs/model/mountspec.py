"""A domain's mounts as values: mount(8)-style options, the `mounts` file's lines and
commands (pure: no I/O).

A mount is SOURCE TARGET OPTIONS. SOURCE is an absolute host path (a directory or a
file, bind-mounted) or the word ``tmpfs``; TARGET is an absolute path inside the
container; OPTIONS are comma-separated, like fstab's fourth field:

========================  ==============================================================
``ro`` / ``rw``           read-only (for root inside too) / read-write (the default)
``nosuid`` ``nodev``      the usual per-mount flags; ``suid``, ``dev``, ``exec`` undo them
``noexec``
``bind`` / ``rbind``      bind the source alone (the default) / with the mounts beneath it
``private`` ``slave``     propagation of the new mount (mount_namespaces(7)); the default
``shared`` ``unbindable`` is ``private``: nothing the host mounts later appears inside
``size=`` ``mode=``       tmpfs only: its size (``64M``, ``50%``) and root directory mode
``idmap=``                unprivileged domains, bind mounts only: ``shift`` (the default:
                          host ids 1-65535 appear as themselves, the domain's root is its
                          own block's root and the host's root is nobody), ``host`` (the
                          host's root is root inside: files root creates there belong to
                          the host's root) or ``none`` (ids as the domain's block maps them)
========================  ==============================================================

The canonical form (what `mounts` and `config` show) lists the options that differ
from the defaults in the order above, so equal mounts read the same.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
from errno import EINVAL
from typing import Final

from ..base.errors import VzfsError

TMPFS: Final = "tmpfs"

# The kernel's MOUNT_ATTR_* (linux/mount.h), as mount_setattr(2) takes them.
MOUNT_ATTR_RDONLY: Final = 0x1
MOUNT_ATTR_NOSUID: Final = 0x2
MOUNT_ATTR_NODEV: Final = 0x4
MOUNT_ATTR_NOEXEC: Final = 0x8
# Propagation types, as mount(2) spells them (mount_attr.propagation takes these).
MS_UNBINDABLE: Final = 1 << 17
MS_PRIVATE: Final = 1 << 18
MS_SLAVE: Final = 1 << 19
MS_SHARED: Final = 1 << 20

_FLAGS: Final = {"ro": ("rw", MOUNT_ATTR_RDONLY), "nosuid": ("suid", MOUNT_ATTR_NOSUID),
                 "nodev": ("dev", MOUNT_ATTR_NODEV), "noexec": ("exec", MOUNT_ATTR_NOEXEC)}
_UNDO: Final = {undo: flag for flag, (undo, _) in _FLAGS.items()}
_PROPAGATION: Final = {"private": MS_PRIVATE, "slave": MS_SLAVE, "shared": MS_SHARED,
                       "unbindable": MS_UNBINDABLE}
_SIZE_RE: Final = re.compile(r"(\d+[kKmMgG]?|\d{1,3}%)\Z")
_MODE_RE: Final = re.compile(r"[0-7]{3,4}\Z")
IDMAP_MODES: Final = ("shift", "host", "none")
MAX_LINE: Final = 4096


def _invalid(what: str) -> VzfsError:
    return VzfsError(EINVAL, what)


@dataclasses.dataclass(frozen=True)
class MountSpec:
    source: str
    target: str
    options: tuple[str, ...] = ()

    @property
    def is_tmpfs(self) -> bool:
        return self.source == TMPFS

    @property
    def recursive(self) -> bool:
        return "rbind" in self.options

    @property
    def readonly(self) -> bool:
        return "ro" in self.options

    @property
    def attr_set(self) -> int:
        """MOUNT_ATTR_* bits to set with mount_setattr(2)."""
        bits = 0
        for option in self.options:
            if option in _FLAGS:
                bits |= _FLAGS[option][1]
        return bits

    @property
    def propagation(self) -> int:
        """MS_PRIVATE, MS_SLAVE, MS_SHARED or MS_UNBINDABLE."""
        for option in self.options:
            if option in _PROPAGATION:
                return _PROPAGATION[option]
        return MS_PRIVATE

    @property
    def tmpfs_options(self) -> dict[str, str]:
        """fsconfig(2) keys for a tmpfs (``size``, ``mode``)."""
        return dict(o.split("=", 1) for o in self.options
                    if "=" in o and not o.startswith("idmap="))

    @property
    def idmap(self) -> str:
        """How an unprivileged domain sees the ids of a bind mount (IDMAP_MODES)."""
        for option in self.options:
            if option.startswith("idmap="):
                return option[len("idmap="):]
        return "shift"

    @property
    def options_text(self) -> str:
        return ",".join(self.options) or "defaults"

    def line(self) -> str:
        """One line of the `mounts` file (fstab order), without the newline."""
        return f"{self.source} {self.target} {self.options_text}"

    def to_json(self) -> dict[str, object]:
        """Its JSON form (mounts.json, a checkpoint's meta, the keeper's link)."""
        return {"source": self.source, "target": self.target, "options": list(self.options)}

    @classmethod
    def from_json(cls, d: dict[str, object]) -> MountSpec:
        """Back from to_json's form (KeyError, TypeError when it is not that)."""
        options = d["options"]
        if not isinstance(options, list):
            raise TypeError("a mount's options are a list")
        return cls(str(d["source"]), str(d["target"]), tuple(str(o) for o in options))


def normalize_target(target: str) -> str:
    """An absolute container path with `.`, empty components and trailing slashes
    dropped. `..` is kept: resolving it is the kernel's job (RESOLVE_BENEATH refuses
    it when it climbs out), never a string check's."""
    if not target.startswith("/"):
        raise _invalid(f"target {target!r} must be an absolute path inside the container")
    parts = [p for p in target.split("/") if p not in ("", ".")]
    if not parts:
        raise _invalid("target / is the container's root itself: mount below it")
    return "/" + "/".join(parts)


def _check_path(what: str, path: str) -> None:
    if "\0" in path or "\n" in path or any(c.isspace() for c in path):
        raise _invalid(f"{what} {path!r} contains white space or a NUL: not supported")


def parse_options(text: str, source: str) -> tuple[str, ...]:
    """The canonical option tuple for *text* (comma-separated); EINVAL names a bad one."""
    flags: set[str] = set()
    recursive = False
    propagation = ""
    tmpfs: dict[str, str] = {}
    idmap = "shift"
    for raw in text.split(","):
        option = raw.strip()
        if option in ("", "defaults"):
            continue
        if option in _FLAGS:
            flags.add(option)
        elif option in _UNDO:
            flags.discard(_UNDO[option])
        elif option in ("bind", "rbind"):
            recursive = option == "rbind"
        elif option in _PROPAGATION or (option[:1] == "r" and option[1:] in _PROPAGATION):
            # rprivate and friends: our mounts are whole new trees, so recursive anyway.
            propagation = option if option in _PROPAGATION else option[1:]
        elif option.startswith("idmap="):
            idmap = option[len("idmap="):]
            if idmap not in IDMAP_MODES:
                raise _invalid(f"idmap={idmap} is not one of {', '.join(IDMAP_MODES)}")
            if source == TMPFS:
                raise _invalid("idmap= is for bind mounts: a tmpfs is the domain's own")
        elif "=" in option:
            key, value = option.split("=", 1)
            if key not in ("size", "mode"):
                raise _invalid(f"unknown mount option {option!r}")
            if source != TMPFS:
                raise _invalid(f"mount option {key}= is for tmpfs, not for a bind mount of {source}")
            if key == "size" and not _SIZE_RE.match(value):
                raise _invalid(f"size={value} is not a size (use e.g. 64M or 50%)")
            if key == "mode" and not _MODE_RE.match(value):
                raise _invalid(f"mode={value} is not an octal mode (use e.g. 1777)")
            tmpfs[key] = value
        else:
            raise _invalid(f"unknown mount option {option!r}")
    if recursive and source == TMPFS:
        raise _invalid("rbind is for bind mounts, not for tmpfs")
    out = [f for f in _FLAGS if f in flags]
    if recursive:
        out.append("rbind")
    if propagation and propagation != "private":
        out.append(propagation)
    out += [f"{key}={tmpfs[key]}" for key in ("size", "mode") if key in tmpfs]
    if idmap != "shift":
        out.append(f"idmap={idmap}")
    return tuple(out)


def make(source: str, target: str, options: str = "") -> MountSpec:
    """A validated MountSpec; VzfsError(EINVAL) with a sentence otherwise."""
    _check_path("source", source)
    _check_path("target", target)
    if source != TMPFS:
        if not source.startswith("/"):
            raise _invalid(f"source {source!r} must be an absolute host path or tmpfs")
        source = posixpath.normpath(source)
    return MountSpec(source, normalize_target(target), parse_options(options, source))


def parse_command(text: str) -> tuple[str, MountSpec | str]:
    """One write to `mounts`: ``add SOURCE TARGET [OPTIONS]`` → ("add", spec), or
    ``del TARGET`` → ("del", normalized target)."""
    if len(text) > MAX_LINE:
        raise _invalid(f"a mounts command is at most {MAX_LINE} bytes")
    if len(text.strip().splitlines()) > 1:
        raise _invalid("write one command per write(2): each takes effect before its "
                       "write returns, so that a failing one is reported by its own write")
    words = text.split()
    if not words:
        raise _invalid("empty command: write add SOURCE TARGET [OPTIONS] or del TARGET")
    verb, args = words[0], words[1:]
    if verb == "add" and len(args) in (2, 3):
        return "add", make(args[0], args[1], args[2] if len(args) == 3 else "")
    if verb == "del" and len(args) == 1:
        _check_path("target", args[0])
        return "del", normalize_target(args[0])
    if verb in ("add", "del"):
        usage = "add SOURCE TARGET [OPTIONS]" if verb == "add" else "del TARGET"
        raise _invalid(f"{verb} takes {usage}")
    raise _invalid(f"unknown command {verb[:64]!r}: write add SOURCE TARGET [OPTIONS] or del TARGET")

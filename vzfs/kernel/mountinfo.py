"""The one parser of /proc/PID/mountinfo: a line in, a `MountInfo` out.

Theory of operation. proc(5) ("/proc/pid/mountinfo") gives one line per mount,
its fields separated by single spaces:

    36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
    (1)(2) (3)  (4)   (5)      (6)       (7)   (8) (9)   (10)        (11)

(1) mount id, (2) parent id, (3) major:minor of st_dev, (4) the root of the mount
within its filesystem, (5) the mount point relative to the reader's root, (6) per-mount
options, (7) zero or more optional fields `tag[:value]` (`shared:N`, `master:N`,
`propagate_from:N`, `unbindable`; proc(5): unknown ones are to be ignored), (8) a
single `-`, (9) filesystem type (`type[.subtype]`), (10) mount source, (11) superblock
options. The separator is the only way to tell where the optional fields end.

Escaping. fs/proc_namespace.c writes (4) and (5) with `seq_path_root`/`seq_dentry` and
(9) and (10) with `mangle()`, all through `seq_escape`, which writes each of space, tab,
newline and backslash (newer kernels also `#` in (9) and (10)) as a backslash and three
octal digits: `\\040 \\011 \\012 \\134`. Option values go through `seq_show_option`,
which escapes commas too, so options are split on `,` before they are unescaped. Nothing
else is escaped: the bytes of a non-ASCII name, and `\\r`, `\\v`, `\\f`, appear as they
are. So the file is split on `\\n` only (never `splitlines()` or text-mode universal
newlines, which also break at `\\r` and friends), decoded as UTF-8 with
`surrogateescape` (a name that is not UTF-8 round-trips through `os.fsencode`), and
only `\\ooo` octal sequences are unescaped — to the byte they name.
"""

import dataclasses
import re

_ESCAPE = re.compile(r"\\([0-3][0-7]{2})")
_SEPARATOR = "-"
_LEADING = 6          # fields (1)..(6), before the optional ones
_TRAILING = 3         # fields (9)..(11), after the separator


@dataclasses.dataclass(frozen=True)
class MountInfo:
    """One line of /proc/PID/mountinfo (proc(5)), unescaped."""
    mount_id: int
    parent_id: int
    major: int
    minor: int
    root: str
    mount_point: str
    mount_options: tuple[str, ...]
    optional_fields: tuple[str, ...]
    fstype: str
    source: str
    super_options: tuple[str, ...]


def _byte(match: re.Match[str]) -> str:
    # The escaped byte as decoding it from the file would have given it (a byte
    # above 0x7f becomes a lone surrogate, as with surrogateescape).
    return bytes([int(match.group(1), 8)]).decode("utf-8", "surrogateescape")


def unescape(field: str) -> str:
    r"""*field* with each `\ooo` octal escape (proc(5), `seq_escape`) replaced by its byte."""
    return _ESCAPE.sub(_byte, field) if "\\" in field else field


def _options(field: str) -> tuple[str, ...]:
    return tuple(unescape(option) for option in field.split(","))


def parse_line(line: str) -> MountInfo:
    """One mountinfo line (without its newline); ValueError if it is not one."""
    fields = line.split(" ")
    try:
        sep = fields.index(_SEPARATOR, _LEADING)
    except ValueError:
        raise ValueError(f"mountinfo line has no ' - ' separator: {line!r}") from None
    if len(fields) - sep - 1 != _TRAILING:
        raise ValueError(f"mountinfo line has {len(fields) - sep - 1} fields after ' - ', "
                         f"not {_TRAILING}: {line!r}")
    mount_id, parent_id, dev, root, point, options = fields[:_LEADING]
    major, colon, minor = dev.partition(":")
    try:
        if not colon:
            raise ValueError(dev)
        ids = int(mount_id), int(parent_id), int(major), int(minor)
    except ValueError:
        raise ValueError(f"mountinfo line has a bad id or major:minor: {line!r}") from None
    fstype, source, super_options = fields[sep + 1:]
    return MountInfo(*ids, unescape(root), unescape(point), _options(options),
                     tuple(fields[_LEADING:sep]), unescape(fstype), unescape(source),
                     _options(super_options))


def parse(text: str | bytes) -> list[MountInfo]:
    """Every line of mountinfo *text* (bytes are decoded as the kernel wrote them: UTF-8,
    surrogateescape), in the file's order — a later line for a mount point covers an
    earlier one. ValueError names the first line that is not a mountinfo line."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "surrogateescape")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [parse_line(line) for line in lines]


def read(pid: int | str = "self") -> list[MountInfo]:
    """The mounts of *pid*'s mount namespace, as *pid* sees them (its root)."""
    with open(f"/proc/{pid}/mountinfo", "rb") as f:
        return parse(f.read())

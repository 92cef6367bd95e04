"""Id maps of unprivileged domains: which host ids a domain's root and users are.

Pure: no I/O. Each unprivileged domain runs in a user namespace (user_namespaces(7))
whose ids 0..size-1 are host ids uid..uid+size-1 (and the same for groups). Blocks
are chosen the way systemd-nspawn's `--private-users=pick` and Incus's isolated
maps choose them: a block of 65536 ids nobody else holds, from root's range in
/etc/subuid and /etc/subgid (subuid(5)) when there is one, otherwise from vzfs's
own range, which starts at 524288 (8 × 65536, above the ids distributions give
users) and steps by 65536. Two domains never share a block.
"""

import dataclasses
from collections.abc import Iterable
from errno import EEXIST, EINVAL

from ..base.errors import VzfsError

BLOCK = 65536
FIRST = 8 * BLOCK                 # vzfs's own range starts at 524288
LAST = 2**32 - 1                  # (uid_t)-1 is never a valid id
DEFAULT_RANGE = ((FIRST, 2**31 - FIRST),)


@dataclasses.dataclass(frozen=True)
class IdMap:
    uid: int                      # host uid of the domain's root
    gid: int                      # host gid of the domain's root
    size: int = BLOCK             # ids 0..size-1 inside

    def lines(self, kind: str) -> str:
        """The text for /proc/PID/uid_map (kind "uid") or gid_map (kind "gid")."""
        base = self.uid if kind == "uid" else self.gid
        return f"0 {base} {self.size}\n"

    def shown(self) -> str:
        """As the kernel shows /proc/PID/uid_map; a second line for the groups when
        their block differs from the users' (vzfs(5), `idmap`)."""
        text = f"{0:>10} {self.uid:>10} {self.size:>10}\n"
        if self.gid != self.uid:
            text += f"{0:>10} {self.gid:>10} {self.size:>10}\n"
        return text

    def overlaps(self, other: "IdMap") -> bool:
        return (_meets(self.uid, self.size, other.uid, other.size)
                or _meets(self.gid, self.size, other.gid, other.size))


def _meets(a: int, a_size: int, b: int, b_size: int) -> bool:
    return a < b + b_size and b < a + a_size


def validate(m: IdMap, key: str = "idmap") -> None:
    """EINVAL with a sentence for a map no user namespace of vzfs's may have."""
    if m.size < BLOCK or m.size % BLOCK:
        raise VzfsError(EINVAL, f"{key}.size: {m.size} must be a multiple of {BLOCK}, at "
                                f"least {BLOCK} (a distribution needs ids 0-65535)")
    for what, base in (("uid", m.uid), ("gid", m.gid)):
        if base <= 0:
            raise VzfsError(EINVAL, f"{key}.{what}: {base} would make the domain's root "
                                    "the host's root; use an unprivileged block")
        if base + m.size > LAST:
            raise VzfsError(EINVAL, f"{key}.{what}: {base}+{m.size} passes the last id {LAST - 1}")


def parse_subid(text: str, user: str = "root", uid: int = 0) -> tuple[tuple[int, int], ...]:
    """(start, count) ranges *user* (or its uid) has in subuid(5)/subgid(5) text."""
    ranges = []
    for line in text.splitlines():
        fields = line.strip().split(":")
        if len(fields) != 3 or line.lstrip().startswith("#"):
            continue
        if fields[0] not in (user, str(uid)):
            continue
        try:
            start, count = int(fields[1]), int(fields[2])
        except ValueError:
            continue
        if start > 0 and count > 0:
            ranges.append((start, count))
    return tuple(ranges)


def inside(m: IdMap, uid_ranges: Iterable[tuple[int, int]],
           gid_ranges: Iterable[tuple[int, int]]) -> bool:
    """Whether both blocks of *m* lie within one range each."""
    return (any(s <= m.uid and m.uid + m.size <= s + c for s, c in uid_ranges)
            and any(s <= m.gid and m.gid + m.size <= s + c for s, c in gid_ranges))


def check_free(name: str, m: IdMap, taken: dict[str, IdMap]) -> None:
    """EEXIST naming the domain that holds a block *m* overlaps."""
    for other_name, other in sorted(taken.items()):
        if other_name != name and m.overlaps(other):
            raise VzfsError(EEXIST, f"idmap: uid {m.uid}/gid {m.gid} (+{m.size}) overlaps the "
                                    f"block of domain {other_name} (uid {other.uid}, gid "
                                    f"{other.gid}, +{other.size})")


def pick(taken: Iterable[IdMap], uid_ranges: tuple[tuple[int, int], ...],
         gid_ranges: tuple[tuple[int, int], ...], size: int = BLOCK) -> IdMap:
    """The lowest free block of *size* ids (the same base for users and groups where
    both ranges allow it), aligned to 65536 within the ranges."""
    held = list(taken)
    uid_ranges = uid_ranges or DEFAULT_RANGE
    gid_ranges = gid_ranges or DEFAULT_RANGE
    for start, count in uid_ranges:
        base = -(-start // BLOCK) * BLOCK
        while base + size <= start + count:
            uid_free = not any(_meets(base, size, h.uid, h.size) for h in held)
            if uid_free:
                gid = _first_gid(base, size, held, gid_ranges)
                if gid is not None:
                    return IdMap(base, gid, size)
            base += BLOCK
    raise VzfsError(EEXIST, f"no free block of {size} ids is left in "
                            f"{_describe(uid_ranges)}: add a range to root's /etc/subuid "
                            "and /etc/subgid")


def _first_gid(prefer: int, size: int, held: list[IdMap],
               ranges: tuple[tuple[int, int], ...]) -> int | None:
    def free(base: int) -> bool:
        return (any(s <= base and base + size <= s + c for s, c in ranges)
                and not any(_meets(base, size, h.gid, h.size) for h in held))
    if free(prefer):
        return prefer
    for start, count in ranges:
        base = -(-start // BLOCK) * BLOCK
        while base + size <= start + count:
            if free(base):
                return base
            base += BLOCK
    return None


def _describe(ranges: Iterable[tuple[int, int]]) -> str:
    return ", ".join(f"{s}-{s + c - 1}" for s, c in ranges)

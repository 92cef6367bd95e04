"""The tree's inode numbers: fixed ones for the top level, a block for each domain.

1 is the root (FUSE's root id), small fixed numbers are the top-level entries and
the templates. Each domain gets a block of DOMAIN_BLOCK numbers — its directory,
then one per control file, in the order of files.DOMAIN_FILES — that is never
reused while the daemon runs: a number the kernel still holds for a domain that
went never names another domain's file.
"""

import pyfuse3

from ..daemon.domain import Domain

ROOT = pyfuse3.ROOT_INODE
INO_README, INO_VERSION, INO_TEMPLATES, INO_DOMAINS, INO_EVENTS = 2, 3, 4, 5, 6
TEMPLATE_BASE = 64
DOMAIN_BASE = 1024
DOMAIN_BLOCK = 64


class DomainInodes:
    """Which block of inode numbers is which domain's."""

    def __init__(self) -> None:
        self.base_of: dict[str, int] = {}
        self.domain_at: dict[int, Domain] = {}
        self.next_base = DOMAIN_BASE

    def assign(self, dom: Domain) -> int:
        """A new block for *dom*: its directory's number."""
        base = self.next_base
        self.next_base += DOMAIN_BLOCK
        self.base_of[dom.name] = base
        self.domain_at[base] = dom
        return base

    def forget(self, name: str) -> None:
        base = self.base_of.pop(name, None)
        if base is not None:
            self.domain_at.pop(base, None)

    def base(self, dom: Domain) -> int | None:
        """The number of *dom*'s directory, while the block is this very domain's."""
        base = self.base_of.get(dom.name)
        return base if base is not None and self.domain_at.get(base) is dom else None

    def owner(self, inode: int) -> tuple[Domain | None, int]:
        """The domain whose block holds *inode* (None: none does), and the place of
        *inode* in it: -1 its directory, else the index of its control file."""
        if inode < DOMAIN_BASE:
            return None, -1
        base = inode - (inode - DOMAIN_BASE) % DOMAIN_BLOCK
        return self.domain_at.get(base), inode - base - 1

"""A command a write started, carried out by a task of the daemon so that the write can let go of it.

The kernel lets one write(2) at a time into a FUSE file: `fuse_direct_write_iter`
holds the inode lock exclusively for the whole request (fs/fuse/file.c; only
FOPEN_PARALLEL_DIRECT_WRITES lifts that, and pyfuse3 cannot set it), and an
open with O_TRUNC waits for the same lock in `handle_truncate` (fs/namei.c) —
after FUSE_OPEN has reached the daemon. So while a `stop` holds its write until
the domain has stopped, an `echo kill > state` is seen as an open, then sleeps in
the kernel. The open preempts the held write: it returns its byte count at once
("accepted, under way"), the lock frees, and the command goes on here. Its outcome
is then the close's: `fuse_flush` sends FUSE_FLUSH without holding the lock for
the request, and the flush waits for the command and fails with its errno.
"""

import errno
from collections.abc import Awaitable, Callable

import pyfuse3
import trio


class InFlight:
    """One command's task. *apply* raises FUSEError only (it runs under the FUSE error
    boundary); its errno is the outcome, 0 a success. A task cancelled with the daemon
    leaves EINTR: the command was not seen through."""

    def __init__(self) -> None:
        self.ended = trio.Event()
        self.let_go = trio.Event()       # the write stops waiting: ended, or preempted
        self.errno = errno.EINTR

    @classmethod
    def start(cls, nursery: trio.Nursery, apply: Callable[[], Awaitable[None]]) -> "InFlight":
        command = cls()
        nursery.start_soon(command._run, apply)
        return command

    async def _run(self, apply: Callable[[], Awaitable[None]]) -> None:
        try:
            await apply()
            self.errno = 0
        except pyfuse3.FUSEError as exc:
            self.errno = exc.errno
        finally:
            self.ended.set()
            self.let_go.set()

    def preempt(self) -> None:
        """Another writer opened the file: the write holding this command returns now."""
        self.let_go.set()

    async def wait_held(self) -> bool:
        """Until the command ends (True) or its write is preempted (False)."""
        await self.let_go.wait()
        return self.ended.is_set()

    async def wait_outcome(self) -> None:
        """Until the command ends; raises its FUSEError when it failed."""
        await self.ended.wait()
        if self.errno:
            raise pyfuse3.FUSEError(self.errno)

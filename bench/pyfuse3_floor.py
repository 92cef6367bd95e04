"""The floor of a pyfuse3 + trio filesystem: one file that reads `stopped\\n`, served with
what vzfs does for `state` and nothing else (open keeps the kernel's cache, release
forgets the handle), under the options vzfs mounts with. The control-file read is timed
on it beside vzfs's, so the table shows how much of vzfs's figure is the library's.

Run as `python -m bench.pyfuse3_floor MOUNTPOINT`; it serves until SIGTERM.
"""

import errno
import signal
import stat
import sys

import pyfuse3
import trio

CONTENT = b"stopped\n"
FILE_NAME = b"state"
FILE_INODE = pyfuse3.ROOT_INODE + 1


class Floor(pyfuse3.Operations):
    enable_writeback_cache = False

    async def getattr(self, inode: int, ctx: object = None) -> pyfuse3.EntryAttributes:
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = inode
        if inode == pyfuse3.ROOT_INODE:
            attr.st_mode = stat.S_IFDIR | 0o755
        else:
            attr.st_mode = stat.S_IFREG | 0o644
            attr.st_size = len(CONTENT)
        return attr

    async def lookup(self, parent_inode: int, name: bytes, ctx: object = None) -> pyfuse3.EntryAttributes:
        if parent_inode != pyfuse3.ROOT_INODE or name != FILE_NAME:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return await self.getattr(FILE_INODE)

    async def open(self, inode: int, flags: int, ctx: object) -> pyfuse3.FileInfo:
        if inode != FILE_INODE:
            raise pyfuse3.FUSEError(errno.EISDIR)
        return pyfuse3.FileInfo(fh=inode, direct_io=False, keep_cache=True)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        return CONTENT[off:off + size]

    async def release(self, fh: int) -> None:
        pass


async def _serve() -> None:
    async with trio.open_nursery() as nursery:
        async def stop_on_signal() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    pyfuse3.terminate()
                    return
        nursery.start_soon(stop_on_signal)
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


def main(mountpoint: str) -> None:
    options = set(pyfuse3.default_options)
    options |= {"fsname=vzfs-bench-floor", "subtype=vzfs-bench-floor"}
    pyfuse3.init(Floor(), mountpoint, options)
    try:
        trio.run(_serve)
    finally:
        pyfuse3.close(unmount=True)


if __name__ == "__main__":
    main(sys.argv[1])

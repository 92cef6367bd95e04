"""The filesystem's operations driven directly, without a kernel mount (s3ql's t3_fs_api).

Each test calls `vzfs.fs.operations.Operations` — lookup, getattr, mkdir, open,
read, write, flush, release, poll, rmdir — as the kernel's requests would, under
trio, on a real Registry over a state dir in tmp_path. No container runs and
nothing is mounted: what a domain's state becomes without one is set through the
registry's own API, as its controller's report would. What the kernel would be
told (pages to drop, files to touch for inotify) is read where the notifier keeps
it for its tasks, which do not run here (they need a mount).
"""

import errno
import os
import select
from collections.abc import Iterator
from pathlib import Path

import pyfuse3
import pytest
import trio

from vzfs.daemon import idclaims
from vzfs.daemon.domain import Domain
from vzfs.daemon.registry import Registry
from vzfs.fs import files
from vzfs.fs.inodes import INO_DOMAINS, ROOT
from vzfs.fs.operations import Operations
from vzfs.kernel import cgroups
from vzfs.model.lifecycle import Busy, State

CTX = pyfuse3.RequestContext()
# A root filled from no template: what the configs written here say, so that no
# busybox is needed to validate them.
NO_TEMPLATE = b'[rootfs]\ntemplate = ""\n'


@pytest.fixture
def ops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Operations]:
    # The host-wide claims on id blocks go to the test's own directory, and the
    # cgroup layout names one there: nothing of the host is touched.
    monkeypatch.setattr(idclaims, "CLAIMS_DIR", str(tmp_path / "idclaims"))
    registry = Registry(str(tmp_path / "state"),
                        cgroups.Layout("v2", str(tmp_path / "cgroup"), {}), None)
    registry.mountpoint = str(tmp_path / "mnt")
    yield Operations(registry)


def fuse_errno(exc: pytest.ExceptionInfo[pyfuse3.FUSEError]) -> int:
    return exc.value.errno


async def lookup(ops: Operations, *names: str) -> int:
    inode = ROOT
    for name in names:
        inode = (await ops.lookup(inode, name.encode(), CTX)).st_ino
    return inode


async def read(ops: Operations, inode: int) -> bytes:
    fh = (await ops.open(inode, os.O_RDONLY, CTX)).fh
    try:
        return await ops.read(fh, 0, 1 << 16)
    finally:
        await ops.release(fh)


async def write(ops: Operations, inode: int, *pieces: bytes,
                flags: int = os.O_WRONLY | os.O_TRUNC) -> None:
    """One open, a write per piece (at its offset), close(2) (flush), release."""
    fh = (await ops.open(inode, flags, CTX)).fh
    try:
        offset = 0
        for piece in pieces:
            assert await ops.write(fh, offset, piece) == len(piece)
            offset += len(piece)
        await ops.flush(fh)
    finally:
        await ops.release(fh)


async def define(ops: Operations, name: str = "web1") -> Domain:
    await ops.mkdir(INO_DOMAINS, name.encode(), 0o755, CTX)
    return ops.reg.domains[name]


def events(ops: Operations) -> str:
    return ops.reg.events.read_at(0, 1 << 20).decode()


def touched(ops: Operations) -> list[str]:
    """The files the toucher would touch next (paths under the mountpoint), and forget them."""
    pending, ops.notifier.toucher.pending = ops.notifier.toucher.pending, {}
    return [os.path.relpath(p, ops.reg.mountpoint) for p in pending]


def invalidated(ops: Operations) -> set[int]:
    """The inodes whose cached pages would be dropped next, and forget them."""
    pending, ops.notifier.invalidator.pending = ops.notifier.invalidator.pending, set()
    return pending


# -- defining ------------------------------------------------------------------------
@pytest.mark.trio
async def test_mkdir_defines_a_domain_with_its_control_files(ops: Operations) -> None:
    entry = await ops.mkdir(INO_DOMAINS, b"web1", 0o755, CTX)
    assert entry.st_mode & 0o170000 == 0o040000
    assert await lookup(ops, "domains", "web1") == entry.st_ino
    for cfile in files.DOMAIN_FILES:
        attrs = await ops.getattr(await lookup(ops, "domains", "web1", cfile.name), CTX)
        assert attrs.st_mode & 0o777 == cfile.mode, cfile.name
    state_dir = Path(ops.reg.state_dir)
    assert (state_dir / "domains" / "web1" / "config.toml").is_file()
    assert await read(ops, await lookup(ops, "domains", "web1", "state")) == b"stopped\n"
    assert await read(ops, await lookup(ops, "domains", "web1", "id")) == b"101\n"
    assert await read(ops, await lookup(ops, "domains", "web1", "error")) == b""
    assert await read(ops, await lookup(ops, "domains", "web1", "pid")) == b""
    assert " web1 defined id 101\n" in events(ops)
    # The next one gets the next id.
    await ops.mkdir(INO_DOMAINS, b"web2", 0o755, CTX)
    assert await read(ops, await lookup(ops, "domains", "web2", "id")) == b"102\n"


@pytest.mark.trio
async def test_mkdir_refuses_a_taken_name_a_bad_name_and_a_wrong_place(ops: Operations) -> None:
    await define(ops)
    for parent, name, code in ((INO_DOMAINS, b"web1", errno.EEXIST),
                               (INO_DOMAINS, b"-web", errno.EINVAL),
                               (ROOT, b"web3", errno.EPERM)):
        with pytest.raises(pyfuse3.FUSEError) as info:
            await ops.mkdir(parent, name, 0o755, CTX)
        assert fuse_errno(info) == code, name
    with pytest.raises(pyfuse3.FUSEError) as info:
        await lookup(ops, "domains", "web3")
    assert fuse_errno(info) == errno.ENOENT


# -- config ----------------------------------------------------------------------------
@pytest.mark.trio
async def test_a_config_written_in_pieces_is_applied_whole_at_close(ops: Operations) -> None:
    await define(ops)
    config = await lookup(ops, "domains", "web1", "config")
    assert b'hostname = "web1"\n' in await read(ops, config)
    fh = (await ops.open(config, os.O_WRONLY | os.O_TRUNC, CTX)).fh
    await ops.write(fh, 0, b'hostname = "www"')
    await ops.write(fh, 16, b"\nautostart = true\n" + NO_TEMPLATE)
    # Nothing is applied before the close: readers see the old definition.
    assert b'hostname = "web1"\n' in await read(ops, config)
    await ops.flush(fh)
    await ops.release(fh)
    text = await read(ops, config)
    assert b'hostname = "www"\n' in text and b"autostart = true\n" in text
    on_disk = Path(ops.reg.state_dir, "domains", "web1", "config.toml").read_bytes()
    assert on_disk == text
    assert " web1 config replaced\n" in events(ops)


@pytest.mark.trio
async def test_a_bad_config_fails_with_its_errno_and_the_old_one_stays(ops: Operations) -> None:
    await define(ops)
    await define(ops, "web2")
    config = await lookup(ops, "domains", "web1", "config")
    error = await lookup(ops, "domains", "web1", "error")
    before = await read(ops, config)
    # A bad value is refused by the write that makes it (a line is complete), and
    # the close says it again.
    fh = (await ops.open(config, os.O_WRONLY | os.O_TRUNC, CTX)).fh
    with pytest.raises(pyfuse3.FUSEError) as info:
        await ops.write(fh, 0, b"stop_timeout = -3\n")
    assert fuse_errno(info) == errno.EINVAL
    with pytest.raises(pyfuse3.FUSEError) as info:
        await ops.flush(fh)
    assert fuse_errno(info) == errno.EINVAL
    await ops.release(fh)
    assert (await read(ops, error)).startswith(b"cannot replace the config of domain web1: ")
    # Another domain's id: EEXIST (at the close: a line without its end is not
    # checked before).
    with pytest.raises(pyfuse3.FUSEError) as info:
        await write(ops, config, b"id = 102\n" + NO_TEMPLATE.rstrip(b"\n"))
    assert fuse_errno(info) == errno.EEXIST
    assert await read(ops, error) == \
        b"cannot replace the config of domain web1: id 102 belongs to domain web2\n"
    # Appending is no replacement.
    with pytest.raises(pyfuse3.FUSEError) as info:
        await ops.open(config, os.O_WRONLY | os.O_APPEND, CTX)
    assert fuse_errno(info) == errno.EINVAL
    assert b"cannot be appended to" in await read(ops, error)
    assert await read(ops, config) == before
    assert Path(ops.reg.state_dir, "domains", "web1", "config.toml").read_bytes() == before


# -- state and error ---------------------------------------------------------------------
@pytest.mark.trio
async def test_a_verb_the_state_refuses_fails_and_error_says_why(
        ops: Operations, nursery: trio.Nursery) -> None:
    ops.reg.nursery = nursery
    await define(ops)
    state = await lookup(ops, "domains", "web1", "state")
    error = await lookup(ops, "domains", "web1", "error")
    for verb, code, sentence in (
            (b"stop\n", errno.EBUSY, b"cannot stop domain web1: it is not running (stopped)\n"),
            (b"bogus", errno.EINVAL, b"cannot 'bogus' domain web1: unknown verb"),
            (b"start stop", errno.EINVAL, b"cannot change the state of domain web1: write one verb")):
        with pytest.raises(pyfuse3.FUSEError) as info:
            await write(ops, state, verb)
        assert fuse_errno(info) == code, verb
        assert (await read(ops, error)).startswith(sentence), verb
    assert await read(ops, state) == b"stopped\n"


@pytest.mark.trio
async def test_a_busy_domain_refuses_in_the_words_of_what_it_is_busy_with(
        ops: Operations, nursery: trio.Nursery) -> None:
    ops.reg.nursery = nursery
    dom = await define(ops)
    ops.reg.set_state(dom, State.RUNNING)      # as its controller's report would
    dom.busy = Busy.SUSPEND
    with pytest.raises(pyfuse3.FUSEError) as info:
        await write(ops, await lookup(ops, "domains", "web1", "state"), b"pause")
    assert fuse_errno(info) == errno.EBUSY
    assert await read(ops, await lookup(ops, "domains", "web1", "error")) == \
        b"cannot pause domain web1: it is being suspended\n"


@pytest.mark.trio
async def test_a_verb_that_succeeds_clears_error_and_shows_its_state(
        ops: Operations, nursery: trio.Nursery) -> None:
    ops.reg.nursery = nursery
    dom = await define(ops)
    state = await lookup(ops, "domains", "web1", "state")
    error = await lookup(ops, "domains", "web1", "error")
    with pytest.raises(pyfuse3.FUSEError):
        await write(ops, state, b"pause")
    assert await read(ops, error) != b""
    # A domain found suspended (a daemon that starts finds its checkpoint): kill
    # forgets the checkpoint, which needs no controller.
    ops.reg.set_state(dom, State.SUSPENDED)
    await write(ops, state, b"kill\n")
    assert await read(ops, state) == b"stopped\n"
    assert await read(ops, error) == b""
    assert events(ops).splitlines()[-1].endswith(" web1 state stopped")


@pytest.mark.trio
async def test_a_verb_that_fails_under_way_puts_the_state_back_and_says_why(
        ops: Operations, nursery: trio.Nursery, tmp_path: Path) -> None:
    ops.reg.nursery = nursery
    await define(ops)
    root = tmp_path / "root"
    root.mkdir()
    await write(ops, await lookup(ops, "domains", "web1", "config"),
                NO_TEMPLATE + f'path = "{root}"\n'.encode())
    state = await lookup(ops, "domains", "web1", "state")
    with pytest.raises(pyfuse3.FUSEError) as info:
        await write(ops, state, b"start")
    assert fuse_errno(info) == errno.ENOENT
    assert await read(ops, await lookup(ops, "domains", "web1", "error")) == \
        f"cannot start domain web1: init /sbin/init does not exist in its rootfs {root}\n".encode()
    assert await read(ops, state) == b"stopped\n"
    assert [line.split(" ", 1)[1] for line in events(ops).splitlines()[-3:]] == [
        "web1 state starting", "web1 state stopped",
        f"web1 error cannot start domain web1: init /sbin/init does not exist in its rootfs {root}"]


# -- the notification path ------------------------------------------------------------------
@pytest.mark.trio
async def test_a_change_of_state_drops_cached_pages_touches_files_and_wakes_pollers(
        ops: Operations) -> None:
    dom = await define(ops)
    cached = {await lookup(ops, "domains", "web1", name) for name in ("state", "pid", "id")}
    poll_file = await lookup(ops, "domains", "web1", "events")
    fh = (await ops.open(poll_file, os.O_RDONLY, CTX)).fh
    assert (await ops.read(fh, 0, 4096)).startswith(b"state stopped\npopulated 0\n")
    assert not await ops.poll(poll_file, fh, None, CTX) & select.POLLPRI
    touched(ops), invalidated(ops)

    ops.reg.set_state(dom, State.CRASHED)       # as a crash's report would
    assert invalidated(ops) == cached
    assert touched(ops) == ["domains/web1/state", "domains/web1/events", "events"]
    assert await ops.poll(poll_file, fh, None, CTX) & select.POLLPRI
    assert events(ops).splitlines()[-1].endswith(" web1 state crashed")
    assert await read(ops, await lookup(ops, "domains", "web1", "state")) == b"crashed\n"
    # Read again from the start: re-armed, as sysfs.
    assert (await ops.read(fh, 0, 4096)).startswith(b"state crashed\n")
    assert not await ops.poll(poll_file, fh, None, CTX) & select.POLLPRI

    # An error is no cached file's, but the events file shows whether there is one.
    ops.reg.update(dom, error="domain web1 crashed: it was asked to")
    assert invalidated(ops) == set()
    assert touched(ops) == ["domains/web1/error", "domains/web1/events", "events"]
    assert await ops.poll(poll_file, fh, None, CTX) & select.POLLPRI
    await ops.release(fh)

    # Setting a value it already has is no change; a field no file shows wakes nothing.
    ops.reg.set_state(dom, State.CRASHED)
    ops.reg.update(dom, error="domain web1 crashed: it was asked to", last_screen="$ ")
    assert invalidated(ops) == set() and touched(ops) == []


@pytest.mark.trio
async def test_a_new_config_drops_the_cached_id_and_touches_config(ops: Operations) -> None:
    await define(ops)
    id_file = await lookup(ops, "domains", "web1", "id")
    assert await read(ops, id_file) == b"101\n"
    touched(ops), invalidated(ops)
    await write(ops, await lookup(ops, "domains", "web1", "config"), b"id = 150\n" + NO_TEMPLATE)
    assert id_file in invalidated(ops)
    assert touched(ops) == ["events", "domains/web1/config"]
    assert await read(ops, id_file) == b"150\n"


@pytest.mark.trio
async def test_a_mount_added_to_a_stopped_domain_touches_mounts_and_config(
        ops: Operations, tmp_path: Path) -> None:
    await define(ops)
    source = tmp_path / "data"
    source.mkdir()
    mounts = await lookup(ops, "domains", "web1", "mounts")
    touched(ops)
    await write(ops, mounts, f"add {source} /data ro\n".encode(), flags=os.O_WRONLY)
    assert await read(ops, mounts) == f"{source} /data ro\n".encode()
    assert set(touched(ops)) == {"domains/web1/mounts", "domains/web1/config", "events"}
    assert f'source = "{source}"' in \
        Path(ops.reg.state_dir, "domains", "web1", "config.toml").read_text()


# -- undefining --------------------------------------------------------------------------------
@pytest.mark.trio
async def test_rmdir_undefines_a_stopped_domain_only(ops: Operations) -> None:
    dom = await define(ops)
    base = await lookup(ops, "domains", "web1")
    ops.reg.set_state(dom, State.RUNNING)
    with pytest.raises(pyfuse3.FUSEError) as info:
        await ops.rmdir(INO_DOMAINS, b"web1", CTX)
    assert fuse_errno(info) == errno.EBUSY
    assert await read(ops, await lookup(ops, "domains", "web1", "error")) == \
        b"cannot undefine domain web1: it is running (stop it first)\n"
    ops.reg.set_state(dom, State.SUSPENDED)
    with pytest.raises(pyfuse3.FUSEError) as info:
        await ops.rmdir(INO_DOMAINS, b"web1", CTX)
    assert fuse_errno(info) == errno.EBUSY
    ops.reg.set_state(dom, State.CRASHED)
    await ops.rmdir(INO_DOMAINS, b"web1", CTX)
    for inode, name in ((INO_DOMAINS, b"web1"), (base, b"state")):
        with pytest.raises(pyfuse3.FUSEError) as info:
            await ops.lookup(inode, name, CTX)
        assert fuse_errno(info) == errno.ENOENT
    with pytest.raises(pyfuse3.FUSEError) as info:
        await ops.getattr(base + 1, CTX)
    assert fuse_errno(info) == errno.ENOENT
    assert not Path(ops.reg.state_dir, "domains", "web1").exists()
    assert events(ops).splitlines()[-1].endswith(" web1 undefined")
    # What is done to the record it was is no one's business any more.
    touched(ops), invalidated(ops)
    ops.reg.set_state(dom, State.STOPPED)
    assert touched(ops) == [] and invalidated(ops) == set()
    with pytest.raises(pyfuse3.FUSEError) as info:
        await ops.rmdir(INO_DOMAINS, b"web1", CTX)
    assert fuse_errno(info) == errno.ENOENT
    # The name can be defined again, under new inode numbers.
    await define(ops)
    assert await lookup(ops, "domains", "web1") != base

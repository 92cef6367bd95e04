"""kernel.mounts on the real kernel: binds, tmpfs and their options in real containers
(vzfs's own container.spawn: pid, mount, uts, ipc, net namespaces, pivot_root'ed into a
busybox root), and the escapes RESOLVE_BENEATH must stop. Root only; no mocks."""

import errno
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vzfs.kernel import mounts, rootfs, syscalls
from vzfs.kernel.cdefs import CLONE_NEWNS
from vzfs.model.mountspec import MountSpec

BUSYBOX = shutil.which("busybox") or "/bin/busybox"

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, mounts)"),
    pytest.mark.skipif(not os.path.exists(BUSYBOX), reason="needs busybox for the rootfs"),
]


def host_mounts() -> set[str]:
    return set(Path("/proc/self/mountinfo").read_text().splitlines())


def make_rootfs(path: Path) -> Path:
    (path / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, path / "bin" / "busybox")
    subprocess.run([str(path / "bin" / "busybox"), "--install", "-s", str(path / "bin")],
                   check=True)
    for name in ("etc", "tmp", "root"):
        (path / name).mkdir()
    return path


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """A host directory to bind from, with a file and a script in it."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "hello").write_text("from the host\n")
    (src / "run.sh").write_text("#!/bin/busybox sh\necho ran\n")
    (src / "run.sh").chmod(0o755)
    return src


@pytest.fixture
def container(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A running container (its init: busybox sleep) → (host pid of init, its rootfs)."""
    from vzfs.controller.container import ContainerSpec, spawn
    root = make_rootfs(tmp_path / "root")
    pid = spawn(ContainerSpec(name="mnt", rootfs=str(root), hostname="mnt",
                              init=("/bin/busybox", "sleep", "1000")))
    try:
        yield pid, root
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def inside(pid: int, action: Callable[[], object], *, stay: bool = False) -> tuple[int, str]:
    """Run *action* in a forked child in *pid*'s mount namespace (an `nsenter -m`);
    → (child pid, the result or "errno N"). With *stay*, the child then waits until
    killed (holding whatever *action* opened)."""
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(read_fd)
            fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY)
            syscalls.setns(fd, CLONE_NEWNS)
            try:
                result = str(action())
            except OSError as exc:
                result = f"errno {exc.errno}"
            os.write(write_fd, result.encode())
            os.close(write_fd)
            if stay:
                signal.pause()
        finally:
            os._exit(0)
    os.close(write_fd)
    result = os.read(read_fd, 4096).decode()
    os.close(read_fd)
    if not stay:
        os.waitpid(child, 0)
    return child, result


def write_file(path: str) -> Callable[[], object]:
    def action() -> object:
        with open(path, "w") as f:
            return f.write("x")
    return action


# --- binds and tmpfs into a running container --------------------------------------

def test_inject_a_directory_bind_and_eject_it(container: tuple[int, Path], host: Path) -> None:
    pid, root = container
    mounts.inject(pid, MountSpec(str(host), "/data/deep"))
    assert (Path(f"/proc/{pid}/root/data/deep/hello")).read_text() == "from the host\n"
    assert (root / "data" / "deep").is_dir()            # created, parents too
    assert "/data/deep" in mounts.mounted_targets(pid)
    assert inside(pid, lambda: open("/data/deep/hello").read())[1] == "from the host\n"
    mounts.eject(pid, "/data/deep")
    assert "/data/deep" not in mounts.mounted_targets(pid)
    assert not (root / "data" / "deep" / "hello").exists()


def test_inject_a_file_bind_creates_an_empty_file_target(container: tuple[int, Path],
                                                          host: Path) -> None:
    pid, root = container
    mounts.inject(pid, MountSpec(str(host / "hello"), "/etc/motd"))
    assert (root / "etc" / "motd").is_file()
    assert Path(f"/proc/{pid}/root/etc/motd").read_text() == "from the host\n"
    mounts.eject(pid, "/etc/motd")
    assert (root / "etc" / "motd").read_text() == ""    # the empty file we made stays


def test_a_file_source_on_a_directory_target_is_eisdir(container: tuple[int, Path],
                                                       host: Path) -> None:
    pid, _ = container
    with pytest.raises(OSError) as info:
        mounts.inject(pid, MountSpec(str(host / "hello"), "/tmp"))
    assert info.value.errno == errno.EISDIR
    with pytest.raises(OSError) as info:
        mounts.inject(pid, MountSpec(str(host), "/bin/busybox"))
    assert info.value.errno == errno.ENOTDIR


def test_tmpfs_with_a_size(container: tuple[int, Path]) -> None:
    pid, _ = container
    mounts.inject(pid, MountSpec("tmpfs", "/scratch", ("size=8M", "mode=1777")))
    st = os.statvfs(f"/proc/{pid}/root/scratch")
    assert st.f_blocks * st.f_frsize == 8 << 20
    assert os.stat(f"/proc/{pid}/root/scratch").st_mode & 0o7777 == 0o1777
    assert mounts.mounted_targets(pid)["/scratch"].startswith("rw")


def test_ro_is_read_only_for_root_inside_too(container: tuple[int, Path], host: Path) -> None:
    pid, _ = container
    mounts.inject(pid, MountSpec(str(host), "/data", ("ro",)))
    assert mounts.mounted_targets(pid)["/data"].split(",")[0] == "ro"
    with pytest.raises(OSError) as info:
        Path(f"/proc/{pid}/root/data/new").write_text("x")
    assert info.value.errno == errno.EROFS
    assert inside(pid, write_file("/data/hello"))[1] == f"errno {errno.EROFS}"
    assert (host / "hello").read_text() == "from the host\n"
    assert not (host / "new").exists()


def test_nosuid_noexec_show_and_noexec_holds(container: tuple[int, Path], host: Path) -> None:
    pid, _ = container
    mounts.inject(pid, MountSpec(str(host), "/data", ("nosuid", "nodev", "noexec")))
    options = mounts.mounted_targets(pid)["/data"].split(",")
    assert {"nosuid", "nodev", "noexec"} <= set(options)

    def run() -> object:
        os.execv("/data/run.sh", ["/data/run.sh"])
    assert inside(pid, run)[1] == f"errno {errno.EACCES}"
    # The same script runs from a mount without noexec: the refusal is the mount's.
    mounts.inject(pid, MountSpec(str(host), "/exec"))
    ran = inside(pid, lambda: subprocess.run(["/exec/run.sh"], capture_output=True,
                                             text=True, check=True).stdout)
    assert ran[1] == "ran\n"


def test_rbind_carries_submounts_and_bind_does_not(container: tuple[int, Path],
                                                   tmp_path: Path, host: Path) -> None:
    pid, _ = container
    outer = tmp_path / "outer"
    (outer / "sub").mkdir(parents=True)
    syscalls.mount(str(host), str(outer / "sub"), None, 4096)       # MS_BIND
    try:
        mounts.inject(pid, MountSpec(str(outer), "/plain"))
        mounts.inject(pid, MountSpec(str(outer), "/rec", ("rbind", "ro")))
        assert not Path(f"/proc/{pid}/root/plain/sub/hello").exists()
        assert Path(f"/proc/{pid}/root/rec/sub/hello").exists()
        seen = mounts.mounted_targets(pid)
        assert seen["/rec/sub"].startswith("ro")                    # AT_RECURSIVE
    finally:
        syscalls.umount(str(outer / "sub"))


def test_propagation_private_by_default_slave_on_request(container: tuple[int, Path],
                                                         tmp_path: Path) -> None:
    """A host mount made later under a shared source reaches a `slave` bind (the clone
    joined the source's peer group, mount_setattr made it its slave), never a private one."""
    from vzfs.kernel.cdefs import MS_SHARED
    pid, _ = container
    shared = tmp_path / "shared"
    shared.mkdir()
    syscalls.mount("tmpfs", str(shared), "tmpfs")
    try:
        syscalls.mount(None, str(shared), None, MS_SHARED)
        (shared / "later").mkdir()
        mounts.inject(pid, MountSpec(str(shared), "/private"))
        mounts.inject(pid, MountSpec(str(shared), "/slave", ("slave",)))
        syscalls.mount("tmpfs", str(shared / "later"), "tmpfs")
        seen = mounts.mounted_targets(pid)
        assert "/slave/later" in seen and "/private/later" not in seen
        info = Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
        (slave,) = [line for line in info if line.split(" ")[4] == "/slave"]
        (private,) = [line for line in info if line.split(" ")[4] == "/private"]
        assert "master:" in slave and "shared:" not in private and "master:" not in private
    finally:
        syscalls.umount(str(shared), 2)                  # MNT_DETACH: with what's beneath


# --- nothing escapes the root ---------------------------------------------------

@pytest.mark.parametrize("target", ["/../../tmp/x", "/etc/../../x"])
def test_dotdot_above_the_root_is_eperm(container: tuple[int, Path], host: Path,
                                        tmp_path: Path, target: str) -> None:
    pid, _ = container
    before = host_mounts()
    with pytest.raises(OSError) as info:
        mounts.inject(pid, MountSpec(str(host), target))
    assert info.value.errno == errno.EPERM
    assert "outside the container's root" in str(info.value)
    assert host_mounts() == before
    assert not (tmp_path / "x").exists()


def test_dotdot_that_stays_inside_is_fine(container: tuple[int, Path], host: Path) -> None:
    pid, root = container
    mounts.inject(pid, MountSpec(str(host), "/etc/../srv"))
    assert (root / "srv").is_dir()
    assert "/srv" in mounts.mounted_targets(pid)


# An absolute link (to the host's /etc, or its tmp dir), a relative one climbing out,
# and magic links (/proc/1/root is the container's own root, but no magic link is
# followed: RESOLVE_NO_MAGICLINKS).
@pytest.mark.parametrize("link", ["/etc", "HOST", "../../../../../../..", "../proc/1/root",
                                  "../proc/1/cwd"])
def test_symlinks_out_of_the_root_are_eperm(container: tuple[int, Path], host: Path,
                                            tmp_path: Path, link: str) -> None:
    pid, root = container
    escape = tmp_path / "escape"
    escape.mkdir()
    (root / "tmp" / "out").symlink_to(str(escape) if link == "HOST" else link)
    before = host_mounts()
    for target in ("/tmp/out/x", "/tmp/out"):
        with pytest.raises(OSError) as info:
            mounts.inject(pid, MountSpec(str(host), target))
        assert info.value.errno == errno.EPERM, target
    assert host_mounts() == before
    assert os.listdir(escape) == []
    assert not Path("/etc/x").exists()


def test_a_symlink_loop_is_eloop_not_eperm(container: tuple[int, Path], host: Path) -> None:
    pid, root = container
    (root / "tmp" / "a").symlink_to("b")
    (root / "tmp" / "b").symlink_to("a")
    with pytest.raises(OSError) as info:
        mounts.inject(pid, MountSpec(str(host), "/tmp/a/x"))
    assert info.value.errno == errno.ELOOP


def test_a_symlink_inside_the_root_is_followed_inside(container: tuple[int, Path],
                                                      host: Path) -> None:
    pid, root = container
    (root / "tmp" / "in").symlink_to("/root")            # absolute, but for the container
    with pytest.raises(OSError) as info:                 # BENEATH refuses absolute links
        mounts.inject(pid, MountSpec(str(host), "/tmp/in/data"))
    assert info.value.errno == errno.EPERM
    (root / "tmp" / "rel").symlink_to("../root")
    mounts.inject(pid, MountSpec(str(host), "/tmp/rel/data"))
    assert "/root/data" in mounts.mounted_targets(pid)


def test_a_missing_source_is_enoent(container: tuple[int, Path], tmp_path: Path) -> None:
    pid, root = container
    with pytest.raises(OSError) as info:
        mounts.inject(pid, MountSpec(str(tmp_path / "nope"), "/data"))
    assert info.value.errno == errno.ENOENT
    assert f"mount source {tmp_path / 'nope'} does not exist" in str(info.value)
    assert not (root / "data").exists()


# --- eject ----------------------------------------------------------------------

def test_eject_of_a_busy_mount_is_ebusy_and_it_stays(container: tuple[int, Path],
                                                     host: Path) -> None:
    pid, _ = container
    mounts.inject(pid, MountSpec(str(host), "/data"))
    for hold in (lambda: os.chdir("/data"), lambda: os.open("/data/hello", os.O_RDONLY)):
        holder, _ = inside(pid, hold, stay=True)
        try:
            with pytest.raises(OSError) as info:
                mounts.eject(pid, "/data")
            assert info.value.errno == errno.EBUSY
            assert "/data is busy" in str(info.value)
            assert "/data" in mounts.mounted_targets(pid)
        finally:
            os.kill(holder, signal.SIGKILL)
            os.waitpid(holder, 0)
    mounts.eject(pid, "/data")
    assert "/data" not in mounts.mounted_targets(pid)


@pytest.mark.parametrize(("target", "code"), [("/etc", errno.EINVAL),
                                              ("/nothing/here", errno.EINVAL),
                                              ("/..", errno.EINVAL),
                                              ("/../../tmp", errno.EPERM)])
def test_eject_of_a_non_mount_point(container: tuple[int, Path], target: str,
                                    code: int) -> None:
    pid, _ = container
    with pytest.raises(OSError) as info:
        mounts.eject(pid, target)
    assert info.value.errno == code
    if code == errno.EINVAL:
        assert f"{target} is not a mount point" in str(info.value)


def test_eject_does_not_follow_a_symlink_at_the_mount_point(container: tuple[int, Path],
                                                            host: Path) -> None:
    pid, root = container
    mounts.inject(pid, MountSpec(str(host), "/data"))
    (root / "tmp" / "link").symlink_to("../data")
    with pytest.raises(OSError) as info:
        mounts.eject(pid, "/tmp/link")
    assert info.value.errno == errno.EINVAL
    assert "/data" in mounts.mounted_targets(pid)


def test_a_mount_point_with_a_space(container: tuple[int, Path], host: Path) -> None:
    pid, root = container
    mounts.inject(pid, MountSpec(str(host), "/with space/and\\slash"))
    assert "/with space/and\\slash" in mounts.mounted_targets(pid)
    mounts.eject(pid, "/with space/and\\slash")
    assert "/with space/and\\slash" not in mounts.mounted_targets(pid)


def test_parse_mountinfo_unescapes_and_keeps_per_mount_options() -> None:
    text = ("22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
            "30 22 0:40 / /with\\040space\\011tab\\134 ro,nosuid,nodev,noexec,relatime - tmpfs"
            " tmpfs rw,size=8192k\n"
            "31 22 0:41 / /with\\040space\\011tab\\134 rw,relatime - tmpfs tmpfs rw\n"
            "32 22 0:42 / /odd\\04 rw - tmpfs tmpfs rw\n")
    assert mounts.parse_mountinfo(text) == {
        "/": "rw,relatime",
        "/with space\ttab\\": "rw,relatime",         # the later (top) mount wins
        "/odd\\04": "rw",                            # not an escape: kept as is
    }


# --- at start: in the init child's own mount namespace, before pivot_root ----------

def test_apply_at_start_then_pivot(tmp_path: Path, host: Path) -> None:
    root = make_rootfs(tmp_path / "root")
    specs = [MountSpec(str(host), "/data", ("ro",)),
             MountSpec("tmpfs", "/scratch", ("size=4M",)),
             MountSpec(str(host / "hello"), "/etc/greeting"),
             MountSpec(str(host), "/../../escape")]
    before = host_mounts()
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:
        result: dict[str, object] = {}
        try:
            syscalls.unshare(CLONE_NEWNS)
            rootfs.make_private()
            rootfs.bind_self(str(root))
            try:
                mounts.apply_at_start(str(root), specs)
            except OSError as exc:
                result["error"] = [exc.errno, exc.strerror]
            mounts.apply_at_start(str(root), specs[:3])
            rootfs.mount_proc_sys(str(root))
            rootfs.pivot(str(root))
            result["greeting"] = open("/etc/greeting").read()
            result["data"] = sorted(os.listdir("/data"))
            try:
                open("/data/new", "w")
            except OSError as exc:
                result["write"] = exc.errno
            st = os.statvfs("/scratch")
            result["scratch"] = st.f_blocks * st.f_frsize
            result["mounts"] = sorted(mounts.mounted_targets(os.getpid()))
        except BaseException as exc:
            result["crash"] = repr(exc)
        finally:
            os.write(write_fd, json.dumps(result).encode())
            os._exit(0)
    os.close(write_fd)
    data = b""
    while chunk := os.read(read_fd, 65536):
        data += chunk
    os.close(read_fd)
    os.waitpid(child, 0)
    result = json.loads(data)
    assert "crash" not in result, result["crash"]
    # The first three were mounted (twice: the failing run stops at the fourth);
    # the error names the mount.
    assert result["error"][0] == errno.EPERM
    assert result["error"][1].startswith(f"mount {host} on /../../escape: ")
    assert result["greeting"] == "from the host\n"
    assert result["data"] == ["hello", "run.sh"]
    assert result["write"] == errno.EROFS
    assert result["scratch"] == 4 << 20
    assert {"/data", "/scratch", "/etc/greeting"} <= set(result["mounts"])
    assert host_mounts() == before
    assert not (tmp_path / "escape").exists()


def test_inject_works_from_a_thread(container: tuple[int, Path], host: Path) -> None:
    import threading
    pid, _ = container
    errors: list[BaseException] = []

    def run() -> None:
        try:
            mounts.inject(pid, MountSpec(str(host), "/threaded"))
            mounts.eject(pid, "/threaded")
        except BaseException as exc:
            errors.append(exc)
    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    assert not thread.is_alive() and errors == []

"""The errno of every refusal vzfs(5) lists ("Writing a control file", Config, Mounts,
Console, Hooks), each through a real write, with its sentence in `error` naming the
domain and nothing changed. An errno turned into another (EINVAL for bytes that are not
UTF-8 becoming EIO, say) fails here."""

import errno
import re
import os
from pathlib import Path

import pytest

from tests.system import Instance

NOT_UTF8 = b"\xff\xfe start"


def refused(inst: Instance, name: str, file: str, data: bytes, flags: int = 0) -> int:
    """Write *data* to *file* in one open → write → close; the errno it failed with
    (at the open, the write or the close), after checking config and state stayed."""
    before = {f: inst.read(name, f) for f in ("config", "state")}
    try:
        fd = os.open(inst.dom(name) / file, os.O_WRONLY | flags)
    except OSError as exc:
        code = exc.errno
    else:
        code = 0
        try:
            os.write(fd, data)
        except OSError as exc:
            code = exc.errno
        try:
            os.close(fd)
        except OSError as exc:
            code = code or exc.errno
    assert code, f"{file} took {data[:40]!r}"
    assert {f: inst.read(name, f) for f in ("config", "state")} == before
    return code


@pytest.fixture
def web1(instance: Instance, tmp_path: Path) -> Instance:
    instance.quick("web1")
    return instance


CASES = [
    # EINVAL: unknown verb, empty write, more than one word, bytes that are not UTF-8
    ("state", b"bogus", 0, errno.EINVAL, "cannot 'bogus' domain web1: unknown verb"),
    ("state", b"\n", 0, errno.EINVAL, "cannot change the state of domain web1: the write is empty"),
    ("state", b"start now", 0, errno.EINVAL, "cannot change the state of domain web1: write one verb"),
    ("state", NOT_UTF8, 0, errno.EINVAL, "cannot change the state of domain web1: the write is not UTF-8"),
    ("mounts", NOT_UTF8, 0, errno.EINVAL, "cannot change the mounts of domain web1: the write is not UTF-8"),
    ("mounts", b"mount /a /b", 0, errno.EINVAL, "cannot change the mounts of domain web1: "),
    ("mounts", b"add /tmp /a\nadd /tmp /b\n", 0, errno.EINVAL, "cannot change the mounts of domain web1: write one command"),
    ("mounts", b"add /tmp /a sticky", 0, errno.EINVAL, "cannot change the mounts of domain web1: "),
    ("migrate_target", NOT_UTF8, 0, errno.EINVAL, "cannot migrate domain web1: the write is not UTF-8"),
    ("migrate_target", b"a b c", 0, errno.EINVAL, "cannot migrate domain web1: write a target"),
    # … invalid TOML or value, an empty config, O_APPEND, not UTF-8 (config)
    ("config", NOT_UTF8 + b"\n", os.O_TRUNC, errno.EINVAL, "cannot replace the config of domain web1: the write is not UTF-8"),
    ("config", b"bad\n", os.O_TRUNC, errno.EINVAL, "cannot replace the config of domain web1: config is not valid TOML"),
    ("config", b"id = 0\n", os.O_TRUNC, errno.EINVAL, "cannot replace the config of domain web1: id: "),
    ("config", b"\n", os.O_TRUNC, errno.EINVAL, "cannot replace the config of domain web1: a config cannot be empty"),
    ("config", b"id = 7\n", os.O_APPEND, errno.EINVAL, "cannot replace the config of domain web1: it cannot be appended to"),
    # EFBIG: a config past 1 MiB
    ("config", b"#" * ((1 << 20) + 1), os.O_TRUNC, errno.EFBIG, "cannot replace the config of domain web1: it is at most 1048576 bytes"),
    # ENOTDIR, ENOENT: where rootfs.path leads
    ("config", b'[rootfs]\npath = "/etc/hostname"\n', os.O_TRUNC, errno.ENOTDIR, "cannot replace the config of domain web1: rootfs.path: /etc/hostname is not a directory"),
    ("config", b'[rootfs]\npath = "/nonexistent-vzfs"\ntemplate = ""\n', os.O_TRUNC, errno.ENOENT, "cannot replace the config of domain web1: rootfs.path: /nonexistent-vzfs does not exist"),
    # ENOENT: mounts of things that are not there
    ("mounts", b"add /nonexistent-vzfs /a", 0, errno.ENOENT, "cannot change the mounts of domain web1: the source /nonexistent-vzfs does not exist"),
    ("mounts", b"del /a", 0, errno.ENOENT, "cannot change the mounts of domain web1: /a is not one of its mounts"),
    # EBUSY: not possible in this state
    ("state", b"stop", 0, errno.EBUSY, "cannot stop domain web1: it is not running"),
    ("console", b"ls\n", 0, errno.EBUSY, "cannot type into the console of domain web1: it is not running"),
]


@pytest.mark.parametrize("file, data, flags, code, sentence", CASES,
                         ids=[f"{c[0]}-{errno.errorcode[c[3]]}-{i}" for i, c in enumerate(CASES)])
def test_each_refusal_has_its_errno_and_sentence(web1: Instance, file: str, data: bytes,
                                                 flags: int, code: int, sentence: str) -> None:
    assert refused(web1, "web1", file, data, flags) == code
    assert web1.read("web1", "error").startswith(sentence), web1.read("web1", "error")


def test_eexist_eacces_eperm_and_the_directory_refusals(web1: Instance, tmp_path: Path) -> None:
    inst = web1
    # EEXIST: the name, the id, a mount target taken
    with pytest.raises(OSError) as info:
        inst.dom("web1").mkdir()
    assert info.value.errno == errno.EEXIST
    inst.define("web2")
    assert refused(inst, "web1", "config", b"id = %d\n" % int(inst.read("web2", "id")),
                   os.O_TRUNC) == errno.EEXIST
    assert "belongs to domain web2" in inst.read("web1", "error")
    inst.write("web1", "mounts", f"add {tmp_path} /a")
    assert refused(inst, "web1", "mounts", f"add {tmp_path} /a".encode()) == errno.EEXIST
    # EINVAL: a mount source in the vzfs mount itself (the daemon must not look there)
    assert refused(inst, "web1", "mounts", f"add {inst.mnt}/domains /b".encode()) == errno.EINVAL
    assert "is in the vzfs mount" in inst.read("web1", "error")
    # EINVAL: a bad name
    with pytest.raises(OSError) as info:
        (inst.mnt / "domains" / "-bad").mkdir()
    assert info.value.errno == errno.EINVAL
    # EACCES: writing a read-only file
    for file in ("pid", "id", "error", "stats", "screen", "vnc"):
        with pytest.raises(OSError) as info:
            os.open(inst.dom("web1") / file, os.O_WRONLY)
        assert info.value.errno == errno.EACCES, file
    # ENOENT: init that is not in the rootfs
    inst.write("web1", "config", 'init = ["/no/such/init"]\n')
    assert refused(inst, "web1", "state", b"start") == errno.ENOENT
    assert inst.read("web1", "error").startswith("cannot start domain web1: init /no/such/init "
                                                 "does not exist")
    # EACCES: an init that is not executable
    inst.write("web1", "config", 'init = ["/etc/hostname"]\n')
    assert refused(inst, "web1", "state", b"start") == errno.EACCES
    assert inst.read("web1", "error").startswith("cannot start domain web1: ")
    # EBUSY: rmdir of a running domain; EPERM: a mount target that climbs out
    # web2's config as web1's, less web2's id and its block of host ids (web1 keeps its own)
    inst.write("web1", "config", re.sub(r"\[idmap\]\n(?:\w+ = \d+\n)+", "",
                                        inst.read("web2", "config")).replace(
        f"id = {inst.read('web2', 'id').strip()}", "id = 150").replace('"web2"', '"web1"'))
    inst.quick("run")
    inst.write("run", "state", "start")
    with pytest.raises(OSError) as info:
        inst.dom("run").rmdir()
    assert info.value.errno == errno.EBUSY
    assert inst.read("run", "error").startswith("cannot undefine domain run: it is running")
    assert refused(inst, "run", "mounts", f"add {tmp_path} /../../escape".encode()) in (
        errno.EPERM, errno.EINVAL)
    link_target = inst.state / "private" / inst.read("run", "id").strip() / "out"
    link_target.symlink_to("/tmp")
    assert refused(inst, "run", "mounts", f"add {tmp_path} /out/x".encode()) == errno.EPERM
    assert inst.read("run", "error").startswith("cannot change the mounts of domain run: ")

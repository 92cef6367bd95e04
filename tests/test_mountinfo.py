"""kernel.mountinfo: proc(5) lines parsed whole, byte by byte, and a real tmpfs at a path
full of escapes found by read() in a child's own mount namespace."""

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vzfs.kernel import mountinfo, syscalls
from vzfs.kernel.cdefs import (
    AT_FDCWD,
    CLONE_NEWNS,
    FSCONFIG_CMD_CREATE,
    FSMOUNT_CLOEXEC,
    FSOPEN_CLOEXEC,
    MOVE_MOUNT_F_EMPTY_PATH,
    MS_PRIVATE,
    MS_REC,
)
from vzfs.kernel.mountinfo import MountInfo

# proc(5)'s own example line.
EXAMPLE = b"36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n"


def kernel_escape(path: bytes, chars: bytes = b" \t\n\\") -> bytes:
    """What seq_escape (fs/seq_file.c, via string_escape_mem ESCAPE_OCTAL) writes."""
    return b"".join(b"\\%03o" % c if c in chars else bytes([c]) for c in path)


def line(point: bytes, root: bytes = b"/", source: bytes = b"tmpfs") -> bytes:
    return (b"40 22 0:45 " + kernel_escape(root) + b" " + kernel_escape(point)
            + b" rw,relatime shared:7 - tmpfs " + kernel_escape(source, b" \t\n\\#")
            + b" rw,size=1024k\n")


def test_proc5_example_whole() -> None:
    assert mountinfo.parse(EXAMPLE) == [MountInfo(
        mount_id=36, parent_id=35, major=98, minor=0, root="/mnt1", mount_point="/mnt2",
        mount_options=("rw", "noatime"), optional_fields=("master:1",), fstype="ext3",
        source="/dev/root", super_options=("rw", "errors=continue"))]


def test_str_and_bytes_and_a_missing_last_newline_read_the_same() -> None:
    assert mountinfo.parse(EXAMPLE.decode()) == mountinfo.parse(EXAMPLE) \
        == mountinfo.parse(EXAMPLE.rstrip(b"\n"))
    assert mountinfo.parse(b"") == mountinfo.parse("") == []


def test_no_optional_fields() -> None:
    (entry,) = mountinfo.parse(b"25 1 0:23 / /proc rw,nosuid - proc proc rw\n")
    assert entry.optional_fields == ()
    assert (entry.fstype, entry.source, entry.super_options) == ("proc", "proc", ("rw",))


def test_several_optional_fields_kept_in_order() -> None:
    (entry,) = mountinfo.parse(b"50 22 0:45 / /x rw shared:3 master:1 propagate_from:2 "
                               b"unbindable - tmpfs tmpfs rw\n")
    assert entry.optional_fields == ("shared:3", "master:1", "propagate_from:2", "unbindable")
    assert entry.fstype == "tmpfs"


def test_the_separator_is_found_by_position_not_by_value() -> None:
    # A source may be the word "-"; the separator is the first "-" after field (6).
    (entry,) = mountinfo.parse(b"50 22 0:45 / /x rw - tmpfs - rw\n")
    assert (entry.optional_fields, entry.fstype, entry.source) == ((), "tmpfs", "-")


def test_major_minor_and_fuse_subtype() -> None:
    (entry,) = mountinfo.parse(b"77 22 259:131073 / /run/vzfs rw,nosuid,nodev shared:40 - "
                               b"fuse.vzfs vzfs rw,user_id=0,group_id=0\n")
    assert (entry.major, entry.minor, entry.fstype) == (259, 131073, "fuse.vzfs")


@pytest.mark.parametrize(("escaped", "path"), [
    (rb"/tmp/a\040b", "/tmp/a b"),
    (rb"/tmp/tab\011name", "/tmp/tab\tname"),
    (rb"/tmp/new\012line", "/tmp/new\nline"),
    (rb"/tmp/back\134slash", "/tmp/back\\slash"),
    (rb"/tmp/\134040", "/tmp/\\040"),              # an escaped backslash is not re-read
    (rb"/tmp/\134\134", "/tmp/\\\\"),
])
def test_each_escape_in_root_and_mount_point(escaped: bytes, path: str) -> None:
    (entry,) = mountinfo.parse(b"40 22 0:45 " + escaped + b" " + escaped + b" rw - tmpfs x rw\n")
    assert entry.root == entry.mount_point == path


def test_source_and_fstype_are_unescaped_too() -> None:
    # mangle() escapes `#` as well on newer kernels (fs/proc_namespace.c).
    (entry,) = mountinfo.parse(b"40 22 0:45 / /x rw - fuse.my\\040fs host:/srv\\043a\\040b rw\n")
    assert (entry.fstype, entry.source) == ("fuse.my fs", "host:/srv#a b")


def test_options_are_split_on_commas_before_unescaping() -> None:
    # seq_show_option escapes commas inside a value: they do not split the option.
    (entry,) = mountinfo.parse(b"40 22 0:45 / /x rw,noatime - overlay overlay "
                               b"rw,lowerdir=/a\\054b:/c\\040d,xino=off\n")
    assert entry.super_options == ("rw", "lowerdir=/a,b:/c d", "xino=off")


def test_non_ascii_is_utf8_not_escapes() -> None:
    text = "40 22 0:45 /données /srv/données rw - tmpfs tmpfs rw\n".encode()
    (entry,) = mountinfo.parse(text)
    assert entry.mount_point == "/srv/données" and entry.root == "/données"
    (emoji,) = mountinfo.parse(line("/tmp/日本 🐧".encode()))
    assert emoji.mount_point == "/tmp/日本 🐧"


def test_a_name_that_is_not_utf8_round_trips_through_fsencode() -> None:
    (entry,) = mountinfo.parse(line(b"/tmp/\xff\xfe x"))
    assert os.fsencode(entry.mount_point) == b"/tmp/\xff\xfe x"


def test_unescaped_line_breaking_characters_stay_in_the_path() -> None:
    # The kernel escapes only \n; \r, \v, \f, U+0085 and U+2028 appear as they are and
    # must not end a line (str.splitlines and text-mode files would break there).
    path = "/tmp/cr\rvt\x0bff\x0cnel\x85ls\u2028end"
    entries = mountinfo.parse(line(path.encode()) + EXAMPLE)
    assert [e.mount_point for e in entries] == [path, "/mnt2"]


def test_backslashes_that_are_not_escapes_are_kept() -> None:
    (entry,) = mountinfo.parse(b"40 22 0:45 / /odd\\04\\8\\400\\x41\\ rw - tmpfs tmpfs rw\n")
    assert entry.mount_point == "/odd\\04\\8\\400\\x41\\"


def test_lines_keep_their_order() -> None:
    text = (b"22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
            b"30 22 0:40 / /a\\040b ro - tmpfs tmpfs rw\n"
            b"31 30 0:41 / /a\\040b rw - tmpfs tmpfs rw\n")
    assert [(e.mount_id, e.parent_id, e.mount_point) for e in mountinfo.parse(text)] == \
        [(22, 1, "/"), (30, 22, "/a b"), (31, 30, "/a b")]


def test_every_truncation_before_the_last_field_is_refused() -> None:
    whole = EXAMPLE.rstrip(b"\n")
    last = whole.rindex(b" ")
    for cut in range(1, last + 1):
        with pytest.raises(ValueError, match="mountinfo line"):
            mountinfo.parse(whole[:cut])


@pytest.mark.parametrize("bad", [
    EXAMPLE.rstrip(b"\n") + b" extra\n",                         # a field too many
    b"36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 ext3 /dev/root rw\n",   # no separator
    b"36 35 98-0 /mnt1 /mnt2 rw - ext3 /dev/root rw\n",           # no major:minor
    b"36 x 98:0 /mnt1 /mnt2 rw - ext3 /dev/root rw\n",            # parent id not a number
    b"36  35 98:0 /mnt1 /mnt2 rw - ext3 /dev/root rw\n",          # two spaces
    EXAMPLE + b"\n" + EXAMPLE,                                    # an empty line
])
def test_malformed_lines_are_refused(bad: bytes) -> None:
    with pytest.raises(ValueError, match="mountinfo line"):
        mountinfo.parse(bad)


@given(st.lists(st.binary(min_size=1, max_size=40).filter(lambda b: b"/" not in b),
                min_size=1, max_size=4))
def test_any_path_round_trips_through_the_kernel_escapes(names: list[bytes]) -> None:
    path = b"/" + b"/".join(names)
    (entry,) = mountinfo.parse(line(path, root=path, source=path))
    assert os.fsencode(entry.mount_point) == os.fsencode(entry.root) \
        == os.fsencode(entry.source) == path


def test_read_self_holds_the_mount_of_the_root() -> None:
    root_id, _ = syscalls.statx_mnt_id(AT_FDCWD, "/", 0)
    assert root_id in {entry.mount_id for entry in mountinfo.read()}
    assert mountinfo.read(os.getpid()) == mountinfo.read("self")


# A name with every escaped character, the ones that are not escaped, and non-ASCII.
AWKWARD = os.fsdecode(b"a b\ttab\\back\nnew\rcr #hash donn\xc3\xa9es \xe6\x97\xa5 \xff")


@pytest.mark.system
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (unshare, mounts)")
def test_read_finds_a_real_tmpfs_at_an_awkward_path(tmp_path: Path) -> None:
    target = tmp_path / AWKWARD
    target.mkdir()
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:                                 # the child: its own mount namespace
        try:
            os.close(ready_r)
            os.close(done_w)
            syscalls.unshare(CLONE_NEWNS)
            syscalls.mount(None, "/", None, MS_REC | MS_PRIVATE)   # nothing leaks out
            fs_fd = syscalls.fsopen("tmpfs", FSOPEN_CLOEXEC)
            syscalls.fsconfig(fs_fd, FSCONFIG_CMD_CREATE)
            mnt_fd = syscalls.fsmount(fs_fd, FSMOUNT_CLOEXEC, 0)
            syscalls.move_mount(mnt_fd, "", AT_FDCWD, str(target), MOVE_MOUNT_F_EMPTY_PATH)
            mnt_id, _ = syscalls.statx_mnt_id(AT_FDCWD, str(target), 0)
            os.write(ready_w, b"%d" % mnt_id)
            os.read(done_r, 1)
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(done_r)
    try:
        reply = os.read(ready_r, 32)
        assert reply, "the child could not mount the tmpfs"
        found = [e for e in mountinfo.read(pid) if e.mount_point == str(target)]
        assert [(e.mount_id, e.fstype, e.root) for e in found] == [(int(reply), "tmpfs", "/")]
        assert str(target) not in {e.mount_point for e in mountinfo.read()}
    finally:
        os.close(done_w)
        os.close(ready_r)
        os.waitpid(pid, 0)

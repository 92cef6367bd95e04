"""Mount options, lines and commands as values (pure)."""

import errno

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vzfs.base.errors import VzfsError
from vzfs.model import mountspec
from vzfs.model.mountspec import (
    MOUNT_ATTR_NOEXEC,
    MOUNT_ATTR_NOSUID,
    MOUNT_ATTR_RDONLY,
    MS_PRIVATE,
    MS_SLAVE,
)


def test_options_are_canonical_and_map_to_the_kernel_bits() -> None:
    spec = mountspec.make("/srv/data/", "/data//x/.", "nosuid, ro,bind,rslave,noexec,exec,noexec")
    assert spec == mountspec.MountSpec("/srv/data", "/data/x", ("ro", "nosuid", "noexec", "slave"))
    assert spec.attr_set == MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC
    assert spec.propagation == MS_SLAVE and not spec.recursive and spec.readonly
    assert spec.line() == "/srv/data /data/x ro,nosuid,noexec,slave"
    plain = mountspec.make("/srv", "/mnt")
    assert plain.line() == "/srv /mnt defaults" and plain.propagation == MS_PRIVATE
    assert mountspec.make("/srv", "/mnt", "ro,rw,rbind").options == ("rbind",)
    tmp = mountspec.make("tmpfs", "/run/x", "size=64M,mode=1777,nodev")
    assert tmp.is_tmpfs and tmp.options == ("nodev", "size=64M", "mode=1777")
    assert tmp.tmpfs_options == {"size": "64M", "mode": "1777"}


def test_dotdot_is_kept_for_the_kernel_to_refuse() -> None:
    assert mountspec.make("/srv", "/a/../../etc").target == "/a/../../etc"


@pytest.mark.parametrize("source, target, options, words", [
    ("/srv", "/mnt", "bogus", "unknown mount option 'bogus'"),
    ("/srv", "/mnt", "size=1G", "size= is for tmpfs"),
    ("tmpfs", "/mnt", "size=lots", "not a size"),
    ("tmpfs", "/mnt", "mode=999", "octal"),
    ("tmpfs", "/mnt", "rbind", "rbind is for bind mounts"),
    ("srv", "/mnt", "", "absolute host path"),
    ("/srv", "mnt", "", "absolute path inside the container"),
    ("/srv", "/", "", "root itself"),
    ("/s rv", "/mnt", "", "white space"),
])
def test_bad_mounts_say_why(source: str, target: str, options: str, words: str) -> None:
    with pytest.raises(VzfsError) as info:
        mountspec.make(source, target, options)
    assert info.value.errno == errno.EINVAL and words in info.value.sentence


def test_commands() -> None:
    assert mountspec.parse_command("add /srv/data /data ro\n") == (
        "add", mountspec.MountSpec("/srv/data", "/data", ("ro",)))
    assert mountspec.parse_command("  del /data/ ") == ("del", "/data")
    for bad, words in (("", "empty"), ("add /srv", "add takes"), ("del", "del takes"),
                       ("mount /a /b", "unknown command"), ("add /a /b ro extra", "add takes")):
        with pytest.raises(VzfsError) as info:
            mountspec.parse_command(bad)
        assert words in info.value.sentence


options = st.lists(st.sampled_from(["ro", "rw", "nosuid", "suid", "nodev", "noexec", "exec",
                                    "bind", "rbind", "private", "rslave", "shared"]), max_size=6)


@given(options)
def test_canonical_form_is_a_fixed_point(opts: list[str]) -> None:
    spec = mountspec.make("/srv", "/mnt", ",".join(opts))
    again = mountspec.make(spec.source, spec.target, ",".join(spec.options))
    assert again == spec
    assert mountspec.parse_command("add " + spec.line()) == ("add", spec)

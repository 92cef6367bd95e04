"""`config` writes as transactions, and what a write can already know (issue 16).

One open → writes → close of `config` is one replacement, applied at close(2);
a write that no later byte can mend fails at once; a refusal at the close fails
close(2); the old definition stays in force whatever fails. Run as root on a real
FUSE mount.
"""

import errno
import os
import time
from pathlib import Path

import pytest

from tests.system import Instance, sh


def config_events(inst: Instance, fd: int) -> list[str]:
    """The `config` events a non-blocking reader of `events` (opened earlier) sees."""
    out = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        out += chunk
    return [line for line in out.decode().splitlines() if " config " in line]


def open_events(inst: Instance) -> int:
    return os.open(inst.mnt / "events", os.O_RDONLY | os.O_NONBLOCK)


def test_writes_of_one_open_are_one_replacement(instance: Instance) -> None:
    d = instance.quick("web1", "[limits]\npids = 64\n")
    instance.write("web1", "state", "start")
    pids_max = _pids_max(instance, "web1")
    assert pids_max.read_text().strip() == "64"
    before = instance.read("web1", "config")
    events = open_events(instance)
    fd = os.open(d / "config", os.O_WRONLY | os.O_TRUNC)
    try:
        # Each prefix here parses, and the first two would lift the pids limit.
        for line in ('init = ["/bin/sh", "-c", "sleep 1000"]\n', 'hostname = "x"\n',
                     "[limits]\n", "pids = 32\n"):
            assert os.write(fd, line.encode()) == len(line)
            assert instance.read("web1", "config") == before
            assert pids_max.read_text().strip() == "64"
    finally:
        os.close(fd)
    assert 'hostname = "x"' in instance.read("web1", "config")
    assert pids_max.read_text().strip() == "32"
    assert len(config_events(instance, events)) == 1
    os.close(events)


def test_the_shell_block_writing_line_by_line(instance: Instance) -> None:
    d = instance.define("web1")
    events = open_events(instance)
    r = sh(f"{{ echo 'hostname = \"x\"'; echo '[limits]'; echo 'pids = 64'; }} > {d}/config")
    assert r.returncode == 0, r.stderr
    text = instance.read("web1", "config")
    assert 'hostname = "x"' in text and "pids = 64" in text
    assert len(config_events(instance, events)) == 1
    os.close(events)


def _pids_max(inst: Instance, name: str) -> Path:
    from vzfs.controller.paths import cgroup_relpath
    from vzfs.kernel import cgroups
    dom_id = int(inst.read(name, "id"))
    cg = cgroups.Cgroup(cgroups.detect(), cgroup_relpath(str(inst.state), dom_id))
    return Path(cg.dirs["pids"]) / "pids.max"


def refused_at_close(inst: Instance, name: str, data: bytes, code: int = errno.EINVAL,
                     truncate: bool = True) -> str:
    """Write *data* in one open (writes succeed), assert close(2) fails with *code* and
    the config is unchanged; return the `error` sentence."""
    before = inst.read(name, "config")
    fd = os.open(inst.dom(name) / "config", os.O_WRONLY | (os.O_TRUNC if truncate else 0))
    if data:
        assert os.write(fd, data) == len(data)
    with pytest.raises(OSError) as info:
        os.close(fd)
    assert info.value.errno == code
    assert inst.read(name, "config") == before
    return inst.read(name, "error")


def refused_at_write(inst: Instance, name: str, data: bytes, code: int = errno.EINVAL) -> str:
    before = inst.read(name, "config")
    fd = os.open(inst.dom(name) / "config", os.O_WRONLY | os.O_TRUNC)
    try:
        with pytest.raises(OSError) as info:
            os.write(fd, data)
        assert info.value.errno == code
    finally:
        with pytest.raises(OSError) as closing:
            os.close(fd)          # the close of a refused transaction fails the same way
        assert closing.value.errno == code
    assert inst.read(name, "config") == before
    return inst.read(name, "error")


def test_empty_configs_are_refused(instance: Instance) -> None:
    instance.define("web1", "[limits]\npids = 64\n")
    for data in (b"\n", b"  \n\t\n", b"# only a comment\n"):
        error = refused_at_close(instance, "web1", data)
        assert error.startswith("cannot replace the config of domain web1: a config cannot "
                                "be empty"), error
    # `echo > config` from a shell: the same, and the limits stay
    sh(f"echo > {instance.dom('web1')}/config")
    assert "pids = 64" in instance.read("web1", "config")
    assert "cannot be empty" in instance.read("web1", "error")
    # an open that writes nothing changes nothing: touch(1), `: > config`
    for cmd in ("touch {}", ": > {}", "truncate -s 0 {}"):
        r = sh(cmd.format(instance.dom("web1") / "config"))
        assert r.returncode == 0, (cmd, r.stderr)
        assert "pids = 64" in instance.read("web1", "config")


def test_a_bad_line_fails_the_write_at_once(instance: Instance) -> None:
    instance.define("web1")
    r = sh(f"echo bad > {instance.dom('web1')}/config")
    assert "write error: Invalid argument" in r.stderr, r.stderr
    assert instance.read("web1", "error").startswith(
        "cannot replace the config of domain web1: config is not valid TOML")
    # an unterminated table header: no later byte mends it
    refused_at_write(instance, "web1", b"[limits\n")
    # a value no later line can change
    assert refused_at_write(instance, "web1", b'[limits]\nmemory = "1M"\n').startswith(
        "cannot replace the config of domain web1: limits.memory:")


def test_a_prefix_that_more_lines_mend_is_taken(instance: Instance) -> None:
    instance.define("web1")
    fd = os.open(instance.dom("web1") / "config", os.O_WRONLY | os.O_TRUNC)
    # each write alone is invalid TOML at its end, or lacks a key a later line gives
    for part in (b"init = [\n", b'  "/bin/sh",\n', b"]\n", b"[[mount]]\n",
                 b'source = "tmpfs"\n', b'target = "/scratch"\n'):
        os.write(fd, part)
    os.close(fd)
    text = instance.read("web1", "config")
    assert 'init = [\n    "/bin/sh",\n]' in text or 'init = ["/bin/sh"]' in text, text
    assert 'target = "/scratch"' in text


def test_invalid_at_close_fails_close(instance: Instance) -> None:
    instance.define("web1")
    # a [[mount]] that never got its target: valid as a prefix, not as a whole
    error = refused_at_close(instance, "web1", b'[[mount]]\nsource = "tmpfs"\n')
    assert error.startswith("cannot replace the config of domain web1: mount[0].target"), error
    # no line end: not checked at the write
    refused_at_close(instance, "web1", b"bad")


def test_size_bound_append_nesting_and_encoding(instance: Instance) -> None:
    instance.define("web1")
    d = instance.dom("web1")
    # 1 MiB is the bound: a write past it fails at once with EFBIG
    fd = os.open(d / "config", os.O_WRONLY | os.O_TRUNC)
    os.write(fd, b"# " + b"x" * 1000 + b"\n")
    t = time.monotonic()
    with pytest.raises(OSError) as info:
        # FUSE splits a large write(2) into requests; the one that passes the bound fails,
        # and write(2) returns what went before it: the next write gets the EFBIG.
        data = b"#" * (2 << 20)
        while data:
            data = data[os.write(fd, data):]
    assert info.value.errno == errno.EFBIG
    with pytest.raises(OSError) as info:
        os.close(fd)
    assert info.value.errno == errno.EFBIG
    assert "at most 1048576 bytes" in instance.read("web1", "error")
    # a long valid config just under the bound goes through (parsed a few times, not per chunk)
    big = b"# " + b"y" * ((1 << 20) - 200) + b"\nhostname = \"big\"\n"
    fd = os.open(d / "config", os.O_WRONLY | os.O_TRUNC)
    for i in range(0, len(big), 4096):
        os.write(fd, big[i:i + 4096])
    os.close(fd)
    assert 'hostname = "big"' in instance.read("web1", "config")
    assert time.monotonic() - t < 30
    # O_APPEND: refused at the open, with a sentence
    with pytest.raises(OSError) as info:
        os.open(d / "config", os.O_WRONLY | os.O_APPEND)
    assert info.value.errno == errno.EINVAL
    assert "cannot be appended to" in instance.read("web1", "error")
    r = sh(f"echo 'hostname = \"y\"' >> {d}/config")
    assert "Invalid argument" in r.stderr
    # deep nesting: tomllib's RecursionError is an EINVAL with a sentence, never EIO
    deep = b"init = " + b"[" * 5000 + b"]" * 5000 + b"\n"
    assert "nest too deeply" in refused_at_write(instance, "web1", deep)
    # not UTF-8: at the write
    assert "not UTF-8" in refused_at_write(instance, "web1", b'hostname = "\xff"\n')


def test_a_refused_write_poisons_the_open_file(instance: Instance) -> None:
    instance.define("web1")
    before = instance.read("web1", "config")
    fd = os.open(instance.dom("web1") / "config", os.O_WRONLY | os.O_TRUNC)
    with pytest.raises(OSError):
        os.write(fd, b"[limits\n")
    sentence = instance.read("web1", "error")
    # what follows would make a valid config, but the writer lost a line on the way
    with pytest.raises(OSError) as info:
        os.write(fd, b'hostname = "x"\n')
    assert info.value.errno == errno.EINVAL
    with pytest.raises(OSError) as info:
        os.close(fd)
    assert info.value.errno == errno.EINVAL
    assert instance.read("web1", "config") == before
    assert instance.read("web1", "error") == sentence


def test_rootfs_path_is_resolved_and_checked(instance: Instance, tmp_path: Path) -> None:
    instance.define("web1")
    instance.define("web2")
    link = tmp_path / "to-root"
    link.symlink_to("/")
    afile = tmp_path / "afile"
    afile.write_text("")
    good = tmp_path / "roots" / "web1"
    good.mkdir(parents=True)
    instance.write("web2", "config", f'[rootfs]\npath = "{tmp_path}/roots/web2"\n')
    cases = {
        "/.": "the host's / cannot be a container's root",
        "/tmp/..": "the host's / cannot be a container's root",
        str(link): "the host's / cannot be a container's root",
        "/usr": "system directory /usr",
        "/etc/ssl": "system directory /etc",
        "/var": "is a system directory",
        "/home": "is a system directory",
        "/tmp": "is a system directory",
        "/proc/self": "system directory /proc",
        f"{tmp_path}/roots/web2": "overlaps the root of domain web2",
        f"{tmp_path}/roots": "overlaps the root of domain web2",
        f"{instance.state}/templates/busybox": "inside vzfs's state dir",
        f"{instance.state}/private/999": "inside vzfs's state dir",
        str(instance.state.parent): "holds vzfs's state dir",
        f"{instance.mnt}/x": "overlaps the vzfs mount",
    }
    for path, words in cases.items():
        before = instance.read("web1", "config")
        with pytest.raises(OSError) as info:
            instance.write("web1", "config", f'[rootfs]\npath = "{path}"\n')
        assert info.value.errno == errno.EINVAL, path
        error = instance.read("web1", "error")
        assert error.startswith("cannot replace the config of domain web1: rootfs.path: "), error
        assert words in error, (path, error)
        assert instance.read("web1", "config") == before
    with pytest.raises(OSError) as info:
        instance.write("web1", "config", f'[rootfs]\npath = "{afile}"\n')
    assert info.value.errno == errno.ENOTDIR, instance.read("web1", "error")
    with pytest.raises(OSError) as info:
        instance.write("web1", "config", f'[rootfs]\npath = "{tmp_path}/nope"\ntemplate = ""\n')
    assert info.value.errno == errno.ENOENT
    # its own private area, a fresh directory, one a template will make: fine
    own = int(instance.read("web1", "id"))
    for path in (good, f"{instance.state}/private/{own}", tmp_path / "later" / "web1"):
        instance.write("web1", "config", f'[rootfs]\npath = "{path}"\n')


def test_template_must_exist(instance: Instance) -> None:
    instance.define("web1")
    with pytest.raises(OSError) as info:
        instance.write("web1", "config", '[rootfs]\ntemplate = "alpine"\n')
    assert info.value.errno == errno.EINVAL
    assert instance.read("web1", "error") == (
        "cannot replace the config of domain web1: rootfs.template: there is no template "
        "'alpine' (templates: busybox)\n")


@pytest.mark.parametrize("written, shown", [
    ("37", '"SIGRTMIN+3"'), ('"SIGRTMIN+3"', '"SIGRTMIN+3"'), ('"SIGRTMAX-2"', '"SIGRTMIN+28"'),
    ("15", '"SIGTERM"'), ('"pwr"', '"SIGPWR"'), ("32", "32"), ("64", '"SIGRTMIN+30"'),
])
def test_stop_signal_by_name_and_number(instance: Instance, written: str, shown: str) -> None:
    instance.define("web1", f"stop_signal = {written}\n")
    text = instance.read("web1", "config")
    assert f"stop_signal = {shown}\n" in text
    # the canonical form is a valid write, and means the same
    instance.write("web1", "config", text)
    assert instance.read("web1", "config") == text


@pytest.mark.parametrize("written", ["0", "65", '"SIGRTMIN+31"', '"SIGRTMAX+1"', '"SIGNOPE"'])
def test_bad_stop_signals(instance: Instance, written: str) -> None:
    instance.define("web1")
    with pytest.raises(OSError) as info:
        instance.write("web1", "config", f"stop_signal = {written}\n")
    assert info.value.errno == errno.EINVAL
    assert instance.read("web1", "error").startswith(
        "cannot replace the config of domain web1: stop_signal: ")


def test_error_quotes_a_short_prefix_of_the_input(instance: Instance) -> None:
    instance.define("web1")
    with pytest.raises(OSError):
        instance.write("web1", "state", "x " * 200_000)
    error = instance.read("web1", "error")
    assert len(error) < 200, error
    assert error.rstrip("\n").endswith("…")
    with pytest.raises(OSError):
        instance.write("web1", "config", f'hostname = "{"h" * 500_000}"\n')
    assert len(instance.read("web1", "error")) < 200

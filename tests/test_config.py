"""The config format: whole-document validation, canonical form, round trips."""

import errno
import signal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vzfs.base.errors import VzfsError
from vzfs.model import config
from vzfs.model.mountspec import MountSpec


def parse(text: str, default_id: int | None = 101) -> config.DomainConfig:
    return config.parse(text, name="web1", default_id=default_id)


def test_defaults_fill_id_hostname_init() -> None:
    cfg = parse("autostart = false")
    assert cfg.id == 101
    assert cfg.hostname == "web1"
    assert cfg.init == ("/sbin/init",)
    assert cfg.stop_signal == signal.SIGPWR
    assert cfg.rootfs_template == "busybox"
    assert cfg.vnc.listen == "127.0.0.1"


def test_full_example_from_the_contract() -> None:
    cfg = parse("""
id = 7
hostname = "web1.example"
init = ["/sbin/init", "-v"]
autostart = true
stop_signal = "TERM"
stop_timeout = 3

[rootfs]
path = "/srv/roots/web1/"
template = "busybox"

[limits]
memory = "256M"
cpus = 1.5
pids = 512

[[mount]]
source = "/srv/data"
target = "/data"
options = "ro,nosuid"

[vnc]
listen = "0.0.0.0"
port = 5901
password = "secret"
""")
    assert cfg.id == 7 and cfg.autostart and cfg.stop_signal == signal.SIGTERM
    assert cfg.rootfs_path == "/srv/roots/web1"
    assert cfg.limits == config.Limits(memory=256 << 20, cpus=1.5, pids=512)
    assert cfg.mounts == (MountSpec("/srv/data", "/data", ("ro", "nosuid")),)
    assert cfg.vnc == config.Vnc("0.0.0.0", 5901, "secret", websocket=True, websocket_port=0)


@pytest.mark.parametrize("text, key", [
    ("id = 0", "id"),
    ("id = 'x'", "id"),
    ("hostname = 'bad_host!'", "hostname"),
    ("init = []", "init"),
    ("init = ['sbin/init']", "init"),
    ("init = '/sbin/init'", "init"),
    ("autostart = 1", "autostart"),
    ("stop_signal = 'SIGNOPE'", "stop_signal"),
    ("stop_timeout = -1", "stop_timeout"),
    ("[limits]\nmemory = '12Q'", "limits.memory"),
    ("[limits]\nmemory = '1M'", "limits.memory"),
    ("[limits]\ncpus = 0", "limits.cpus"),
    ("[limits]\npids = true", "limits.pids"),
    ("[limits]\nmemroy = '1G'", "limits.memroy"),
    ("[rootfs]\npath = 'relative'", "rootfs.path"),
    ("[rootfs]\npath = '/'", "rootfs.path"),
    ("[vnc]\nport = 70000", "vnc.port"),
    ("[console]\nemulator = 'xterm'", "console.emulator"),
    ("[vnc]\npassword = 'ninechars'", "vnc.password"),
    ("[vnc]\nlisten = 'localhost; rm'", "vnc.listen"),
    ("[vnc]\nwebsocket = 'yes'", "vnc.websocket"),
    ("[vnc]\nwebsocket_port = -1", "vnc.websocket_port"),
    ("[vnc]\nport = 5905\nwebsocket_port = 5905", "vnc.websocket_port"),
    ("[[mount]]\nsource = '/a'\ntarget = 'b'", "mount[0].target"),
    ("[[mount]]\nsource = '/a'\ntarget = '/b'\noptions = 'ro,sticky'", "mount[0]"),
    ("[[mount]]\nsource = '/a'\ntarget = '/b'\n[[mount]]\nsource = '/c'\ntarget = '/b/'",
     "mount[1].target"),
    ("colour = 'red'", "colour"),
])
def test_invalid_values_name_the_key(text: str, key: str) -> None:
    with pytest.raises(VzfsError) as info:
        parse(text)
    assert info.value.errno == errno.EINVAL
    assert info.value.sentence.startswith(key + ":"), info.value.sentence


def test_invalid_toml_and_bytes() -> None:
    for bad in (b"[", b"id = ", b"\xff\xfe"):
        with pytest.raises(VzfsError) as info:
            config.parse(bad, name="web1", default_id=101)
        assert info.value.errno == errno.EINVAL


@pytest.mark.parametrize("text, size", [("4M", 4 << 20), ("256m", 256 << 20), ("1G", 1 << 30),
                                        ("2GiB", 2 << 30), ("8388608", 8 << 20)])
def test_sizes(text: str, size: int) -> None:
    assert config.parse_size(text, "k") == size


def test_names() -> None:
    assert config.is_valid_name("web1")
    assert config.is_valid_name("a.b-c_d")
    for bad in ("", ".", "..", "-x", "a/b", "a b", "x" * 64, "cgroup.procs", "é"):
        assert not config.is_valid_name(bad), bad


configs = st.builds(
    config.DomainConfig,
    id=st.integers(1, config.MAX_ID),
    hostname=st.from_regex(r"[a-z][a-z0-9]{0,10}(\.[a-z][a-z0-9]{0,5}){0,2}", fullmatch=True),
    init=st.lists(st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)),
                          max_size=8), max_size=3).map(lambda rest: ("/sbin/init", *rest)),
    autostart=st.booleans(),
    stop_signal=st.integers(1, 64),
    stop_timeout=st.floats(0, 3600),
    rootfs_path=st.none() | st.from_regex(r"/[a-z]{1,8}(/[a-z0-9]{1,8}){0,3}", fullmatch=True),
    rootfs_template=st.none() | st.just("busybox"),
    limits=st.builds(config.Limits, memory=st.none(), cpus=st.none() | st.floats(0.01, 64),
                     pids=st.none() | st.integers(1, 4194304)),
    mounts=st.lists(st.builds(MountSpec, source=st.just("/srv"),
                              target=st.from_regex(r"/[a-z]{1,8}", fullmatch=True),
                              options=st.sampled_from([(), ("ro",), ("ro", "nosuid"),
                                                       ("nodev", "rbind")])),
                    max_size=3, unique_by=lambda m: m.target).map(tuple),
    vnc=st.builds(config.Vnc, listen=st.just("127.0.0.1"), port=st.integers(0, 65535),
                  password=st.text(max_size=8).filter(
                      lambda s: "\0" not in s and len(s.encode()) <= 8),
                  websocket=st.booleans(), websocket_port=st.sampled_from([0, 5800, 6080])
                  ).filter(lambda v: v.port != v.websocket_port or not v.port),
    console=st.builds(config.Console, emulator=st.sampled_from(config.EMULATORS)),
)


@given(configs)
def test_dumps_parse_round_trip(cfg: config.DomainConfig) -> None:
    again = config.parse(config.dumps(cfg), name="x", default_id=None)
    assert again == cfg


@pytest.mark.parametrize("text", ["", "  \n\t\n", "# a comment only\n"])
def test_a_config_with_no_key_is_refused(text: str) -> None:
    with pytest.raises(VzfsError) as info:
        parse(text)
    assert info.value.errno == errno.EINVAL
    assert info.value.sentence.startswith("a config cannot be empty")


def test_deep_nesting_and_size_are_sentences() -> None:
    with pytest.raises(VzfsError) as info:
        parse("init = " + "[" * 5000 + "]" * 5000)
    assert info.value.errno == errno.EINVAL and "nest too deeply" in info.value.sentence
    with pytest.raises(VzfsError) as info:
        config.parse(b"#" * (config.MAX_BYTES + 1), name="web1", default_id=101)
    assert info.value.errno == errno.EFBIG


@pytest.mark.parametrize("prefix, mendable", [
    ("bad\n", False),
    ("[limits\n", False),
    ("a = \"x\n", False),
    ("init = [\n", True),
    ("init = [\n  \"/bin/sh\",\n", True),
    ("hostname = \"\"\"\nweb\n", True),
])
def test_prefix_errors_that_more_text_mends(prefix: str, mendable: bool) -> None:
    with pytest.raises(VzfsError) as info:
        config.parse(prefix, name="web1", default_id=101, complete=False)
    assert config.could_grow_valid(info.value) is mendable


def test_a_prefix_may_lack_what_later_lines_give() -> None:
    assert config.parse("", name="web1", default_id=101, complete=False).id == 101
    text = "[[mount]]\nsource = \"/srv\"\n"
    config.parse(text, name="web1", default_id=101, complete=False)
    with pytest.raises(VzfsError):
        parse(text)
    # a value given is final: no later line can change it
    with pytest.raises(VzfsError):
        config.parse("[limits]\nmemory = \"1M\"\n", name="web1", default_id=101, complete=False)


@pytest.mark.parametrize("value, number, canonical", [
    (37, 37, "SIGRTMIN+3"), ("SIGRTMIN+3", 37, "SIGRTMIN+3"), ("rtmin + 3", 37, "SIGRTMIN+3"),
    ("SIGRTMAX-2", 62, "SIGRTMIN+28"), ("SIGRTMAX", 64, "SIGRTMIN+30"), ("SIGRTMIN", 34, "SIGRTMIN"),
    ("TERM", 15, "SIGTERM"), (30, 30, "SIGPWR"), (32, 32, 32), (33, 33, 33), (1, 1, "SIGHUP"),
])
def test_signals_by_name_and_number(value: object, number: int, canonical: object) -> None:
    assert config.parse_signal(value, "stop_signal") == number
    assert config.signal_name(number) == canonical
    assert config.parse_signal(canonical, "stop_signal") == number


@pytest.mark.parametrize("value", [0, 65, -1, True, "SIGRTMIN+31", "SIGRTMAX+1", "SIGRTMIN-1",
                                   "SIGNOPE", "", 1.5])
def test_bad_signals(value: object) -> None:
    with pytest.raises(VzfsError) as info:
        config.parse_signal(value, "stop_signal")
    assert info.value.errno == errno.EINVAL


def test_quote_keeps_a_short_prefix() -> None:
    assert config.quote("abc") == "'abc'"
    long = config.quote("x" * 10_000)
    assert len(long) == 65 and long.endswith("…")


@pytest.mark.parametrize("path, words", [
    ("/", "the host's /"), ("/usr", "/usr"), ("/usr/local/ct", "/usr"), ("/etc", "/etc"),
    ("/lib64", "/lib64"), ("/proc/1/root", "/proc"), ("/sys", "/sys"), ("/dev/shm", "/dev"),
    ("/boot", "/boot"), ("/var", "system directory"), ("/home", "system directory"),
    ("/tmp", "system directory"), ("/run", "system directory"), ("/root", "system directory"),
    ("/var/lib", "system directory"), ("/var/lib/vz", "holds vzfs's state dir"), ("/var/lib/vz/vzfs/templates/busybox", "state dir"),
    ("/var/lib/vz/vzfs/private/7", "state dir"), ("/run/vzfs/domains", "vzfs mount"),
    ("/srv/a/b", "domain web2"), ("/srv/a", "domain web2"),
])
def test_rootfs_refusals(path: str, words: str) -> None:
    why = config.rootfs_refusal(path, state_dir="/var/lib/vz/vzfs",
                                own_private="/var/lib/vz/vzfs/private/101",
                                mountpoint="/run/vzfs", others={"web2": "/srv/a/b"})
    assert words in why, (path, why)


@pytest.mark.parametrize("path", ["/srv/web1", "/var/lib/machines/web1", "/home/u/ct", "/tmp/x",
                                  "/var/lib/vz/vzfs/private/101", "/srv/a/bc"])
def test_rootfs_places_that_are_fine(path: str) -> None:
    assert config.rootfs_refusal(path, state_dir="/var/lib/vz/vzfs",
                                 own_private="/var/lib/vz/vzfs/private/101",
                                 mountpoint="/run/vzfs", others={"web2": "/srv/a/b"}) == ""


def test_a_transaction_checks_at_line_ends_each_time_it_doubled() -> None:
    from vzfs.fs.files import Transaction
    tx = Transaction(config.MAX_BYTES, "cannot replace the config of domain web1")
    checks = 0
    line = b"# a comment line\n"
    for _ in range(5000):
        tx.write(len(tx.data), line)
        if tx.due():
            tx.mark_checked()
            checks += 1
    # 85 KB in 5000 writes: checked at the first line end and at each doubling only
    assert checks <= 14, checks
    tx.write(len(tx.data), b"partial")
    assert not tx.due()                       # not at a line end
    with pytest.raises(VzfsError) as info:
        tx.write(len(tx.data), b"\xff\n")     # not UTF-8: at once
    assert info.value.errno == errno.EINVAL
    with pytest.raises(VzfsError) as info:
        tx.write(config.MAX_BYTES, b"x")
    assert info.value.errno == errno.EFBIG
    # a rewrite in place lands at its offset, as in a file
    tx2 = Transaction(config.MAX_BYTES, "x")
    tx2.write(0, b"id = 1\n")
    tx2.write(5, b"2")
    assert bytes(tx2.data) == b"id = 2\n"

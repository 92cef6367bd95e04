"""The pure parts of the CRIU engine: its statistics images, its logs, its command lines."""

import dataclasses
from pathlib import Path

from vzfs.controller import checkpoint
from vzfs.model.mountspec import MountSpec

# Written by CRIU 4.1.1 on this kernel (a busybox domain's dump and restore).
STATS_DUMP = bytes.fromhex("4059105506330957230000000a2108e30410d1ec0318c60620b30128"
                           "34300038264000480050085808600068007000")
STATS_RESTORE = bytes.fromhex("40591055063309570f000000120d0809100218b60520cd9c052824")

DUMP_LOG = """\
(00.000000) CRIU run id = 0207f9c5-ff56-4066-8c34-fc48b1fd0a9d
(00.023105) Error (criu/util.c:1533): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted
Error (criu/util.c:641): execvp("iptables-save", ...) failed: No such file or directory
(00.202895) Error (criu/util.c:1722): iptables-save -V failed
(00.203829) Error (criu/util.c:1722): iptables-legacy-save -V failed
(00.240001) Error (criu/files-reg.c:1035): Can't dump ghost file /big of 2097152 size, increase limit
(00.240101) Error (criu/cr-dump.c:1815): Dump files (pid: 3) failed with -1
(00.259222) Error (criu/cr-dump.c:2111): Dumping FAILED.
"""


def test_read_stats_of_a_dump_and_a_restore(tmp_path: Path) -> None:
    (tmp_path / "stats-dump").write_bytes(STATS_DUMP)
    (tmp_path / "stats-restore").write_bytes(STATS_RESTORE)
    dump = checkpoint.read_stats(str(tmp_path / "stats-dump"))
    assert dump == {"freezing_time": 611, "frozen_time": 63057, "memdump_time": 838,
                    "memwrite_time": 179, "pages_scanned": 52, "pages_written": 38}
    restore = checkpoint.read_stats(str(tmp_path / "stats-restore"))
    assert restore == {"forking_time": 694, "restore_time": 85581, "pages_restored": 36}


def test_read_stats_of_nothing_or_garbage(tmp_path: Path) -> None:
    assert checkpoint.read_stats(str(tmp_path / "missing")) == {}
    (tmp_path / "short").write_bytes(STATS_DUMP[:6])
    assert checkpoint.read_stats(str(tmp_path / "short")) == {}
    (tmp_path / "cut").write_bytes(STATS_DUMP[:20])     # the size says more than there is
    assert checkpoint.read_stats(str(tmp_path / "cut")) == {}


def test_reasons_are_the_errors_that_matter(tmp_path: Path) -> None:
    log = tmp_path / "checkpoint.log"
    log.write_text(DUMP_LOG)
    assert checkpoint.reasons(str(log)) == (
        "Can't dump ghost file /big of 2097152 size, increase limit; "
        "Dump files (pid: 3) failed with -1")
    log.write_text("(00.1) Error (criu/cr-dump.c:2111): Dumping FAILED.\n")
    assert checkpoint.reasons(str(log)) == "Dumping FAILED."
    log.write_text("(00.1) Info nothing wrong\n")
    assert checkpoint.reasons(str(log)) == "it gave no reason in its log"
    assert checkpoint.reasons(str(tmp_path / "none")) == "its log could not be read"


def meta() -> checkpoint.Meta:
    return checkpoint.Meta(
        console_key="tty[8801:1a]", devtty_key="tty[500:2c]",
        mounts=(MountSpec("/srv/data", "/data", ("ro",)), MountSpec("tmpfs", "/scratch", ())),
        columns=100, lines=30, vnc_prefer={"rfb": 5901, "websocket": 15901}, dumped_at=12.5)


def test_meta_round_trip() -> None:
    m = meta()
    assert checkpoint.Meta.from_json(m.to_json()) == m


def test_command_lines_name_the_console_and_the_host_mounts() -> None:
    m = meta()
    dump = checkpoint.dump_args("/x/criu", 42, "/d/checkpoint.new", "/d/checkpoint.log",
                                "/root", None, m)
    assert dump[:4] == ["/x/criu", "dump", "-t", "42"]
    assert "--freeze-cgroup" not in dump
    pairs = list(zip(dump, dump[1:]))
    for value in ("tty[8801:1a]", "tty[500:2c]", "mnt[/dev/console]:console",
                  "mnt[/dev/tty1]:tty1", "mnt[/data]:m0"):
        assert ("--external", value) in pairs
    assert not any("/scratch" in a for a in dump), "tmpfs is CRIU's to save, not external"
    paused = checkpoint.dump_args("/x/criu", 42, "/i", "/l", "/root", "/sys/fs/cgroup/x", m)
    assert ("--freeze-cgroup", "/sys/fs/cgroup/x") in list(zip(paused, paused[1:]))
    restore = checkpoint.restore_args("/x/criu", "/d/checkpoint", "/l", "/root", "/p", m,
                                      7, 8, "/dev/pts/3")
    pairs = list(zip(restore, restore[1:]))
    for value in ("fd[7]:tty[8801:1a]", "fd[8]:tty[500:2c]"):
        assert ("--inherit-fd", value) in pairs
    for value in ("mnt[console]:/dev/pts/3", "mnt[tty1]:/dev/pts/3", "mnt[m0]:/srv/data"):
        assert ("--external", value) in pairs
    assert "--restore-sibling" in restore and "--restore-detached" in restore


def test_commit_retire_discard(tmp_path: Path) -> None:
    d = str(tmp_path)
    (tmp_path / checkpoint.PARTIAL).mkdir()
    (tmp_path / checkpoint.PARTIAL / "pages-1.img").write_bytes(b"x" * 10)
    assert not checkpoint.has_checkpoint(d)
    checkpoint.commit(d, meta())
    assert checkpoint.has_checkpoint(d)
    assert checkpoint.read_meta(d) == meta()
    checkpoint.retire(d)
    assert not checkpoint.has_checkpoint(d)
    checkpoint.discard(d)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_domain_without_dev_tty_declares_none() -> None:
    m = dataclasses.replace(meta(), devtty_key="")
    dump = checkpoint.dump_args("/x/criu", 42, "/i", "/l", "/root", None, m)
    restore = checkpoint.restore_args("/x/criu", "/i", "/l", "/root", "/p", m, 7, 8, "/dev/pts/3")
    assert "tty[500:2c]" not in " ".join(dump + restore)
    assert [a for a in restore if a.startswith("fd[")] == ["fd[7]:tty[8801:1a]"]

"""atomic_write: a reader, and a crash at any point, see the old file or the new, never
a mix or nothing; a symlink planted at the temporary name is never followed (issue 16).

The writer is a real process that we stop (SIGSTOP) and kill (SIGKILL) wherever it
happens to be in its steps — unlink of a stale temp file, create, write, fsync, rename,
fsync of the directory — many times over."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vzfs.base import atomicfile
from vzfs.base.atomicfile import atomic_write

SIZE = 1 << 20
CONTENTS = [bytes([b"A"[0] + i]) * SIZE for i in range(4)]

WRITER = """
import sys
from vzfs.base.atomicfile import atomic_write
path = sys.argv[1]
contents = [bytes([65 + i]) * (1 << 20) for i in range(4)]
i = 0
while True:
    atomic_write(path, contents[i % 4])
    i += 1
"""


def check(path: Path) -> bytes:
    data = path.read_bytes()
    assert data in CONTENTS, (len(data), data[:1], data[-1:])
    return data


@pytest.mark.slow
def test_a_stopped_or_killed_writer_leaves_old_or_new(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    atomic_write(str(path), CONTENTS[3])
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    rng = random.Random(16)
    seen = set()
    for round_ in range(40):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], env=env)
        try:
            time.sleep(0.15)                           # its imports, a first write or so
            for _ in range(10):
                time.sleep(rng.uniform(0, 0.02))
                writer.send_signal(signal.SIGSTOP)     # wherever it is in its steps
                seen.add(check(path))
                writer.send_signal(signal.SIGCONT)
            time.sleep(rng.uniform(0, 0.02))
        finally:
            writer.kill()                              # a crash, anywhere
            writer.wait()
        seen.add(check(path))
    assert len(seen) > 1                               # it did replace the file meanwhile
    # what the crashes left behind is only temp files, never the file itself half-made
    for leftover in tmp_path.iterdir():
        assert leftover == path or leftover.name.startswith("config.toml.tmp")


@pytest.mark.parametrize("with_dir_fd", [False, True])
def test_a_symlink_planted_at_the_temp_name_is_not_followed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_dir_fd: bool) -> None:
    """The container owns the directory of the screen file: it can plant a link at the
    temp name right after atomic_write removed a stale one (we act for it at that
    moment). The write must fail rather than write through the link."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    target = tmp_path / "file"
    target.write_bytes(b"old")
    tmp_name = f"{target.name if with_dir_fd else target}.tmp{os.getpid()}"
    real_unlink = os.unlink

    def unlink_then_plant(path, *args, **kwargs):     # type: ignore[no-untyped-def]
        try:
            real_unlink(path, *args, **kwargs)
        finally:
            if str(path) == tmp_name:
                os.symlink(victim, tmp_path / Path(tmp_name).name)

    monkeypatch.setattr(atomicfile.os, "unlink", unlink_then_plant)
    dir_fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY) if with_dir_fd else None
    try:
        with pytest.raises(OSError):
            if dir_fd is None:
                atomic_write(str(target), b"new")
            else:
                atomic_write(target.name, b"new", dir_fd=dir_fd)
    finally:
        if dir_fd is not None:
            os.close(dir_fd)
    assert victim.read_bytes() == b"precious"
    assert target.read_bytes() == b"old"

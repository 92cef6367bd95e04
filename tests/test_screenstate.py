"""The screen saved on a domain's root: round trip, one use, and no way out of the root."""

import json
import os
from pathlib import Path

import pytest

from vzfs.controller import screenstate
from vzfs.terminal import Terminal


def root_fd(path: Path) -> int:
    return os.open(path, os.O_PATH | os.O_DIRECTORY)


def test_round_trip_restores_the_same_screen_once(tmp_path: Path) -> None:
    term = Terminal(40, 10)
    term.feed(b"\x1b[1;31mred\x1b[0m and \xe2\x9c\x93\r\n\x1b[?1049hin the alternate screen")
    fd = root_fd(tmp_path)
    try:
        screenstate.save(fd, term.snapshot())
        saved = tmp_path / ".vzfs" / "console.json"
        assert saved.stat().st_mode & 0o777 == 0o600
        again = Terminal.restore(screenstate.load(fd) or {})
        assert again.text() == term.text() and again.cells(0) == term.cells(0)
        assert not saved.exists()                 # one moment: loaded once
        assert screenstate.load(fd) is None
    finally:
        os.close(fd)


def test_a_restore_keeps_the_file_until_it_succeeded(tmp_path: Path) -> None:
    term = Terminal(40, 10)
    term.feed(b"kept for a retry")
    fd = root_fd(tmp_path)
    try:
        screenstate.save(fd, term.snapshot())
        for _ in range(2):                         # a failed restore, then the retry
            snapshot = screenstate.load(fd, consume=False)
            assert snapshot is not None and Terminal.restore(snapshot).text() == term.text()
        screenstate.remove(fd)
        assert screenstate.load(fd) is None
        screenstate.remove(fd)                     # nothing left: nothing to do
    finally:
        os.close(fd)


def test_symlinks_planted_by_the_container_are_never_followed(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "host"
    root.mkdir()
    outside.mkdir()
    (root / ".vzfs").symlink_to(outside)
    fd = root_fd(root)
    try:
        with pytest.raises(OSError):
            screenstate.save(fd, Terminal(10, 4).snapshot())
        assert list(outside.iterdir()) == []
        (root / ".vzfs").unlink()
        (root / ".vzfs").mkdir()
        secret = outside / "secret"
        secret.write_text("host file")
        (root / ".vzfs" / "console.json").symlink_to(secret)
        with pytest.raises(OSError):
            screenstate.load(fd)
        assert secret.read_text() == "host file"
        # Saving replaces the link itself, never writes through it.
        screenstate.save(fd, Terminal(10, 4).snapshot())
        assert secret.read_text() == "host file"
        assert not (root / ".vzfs" / "console.json").is_symlink()
        # Nor through a link planted at the temp file's name.
        (root / ".vzfs" / f"console.json.tmp{os.getpid()}").symlink_to(secret)
        screenstate.save(fd, Terminal(10, 4).snapshot())
        assert secret.read_text() == "host file"
    finally:
        os.close(fd)


@pytest.mark.parametrize("body", [b"not json", b"[]", json.dumps({"version": 99, "terminal": {}}).encode()])
def test_a_bad_file_is_refused_with_a_reason(tmp_path: Path, body: bytes) -> None:
    (tmp_path / ".vzfs").mkdir()
    (tmp_path / ".vzfs" / "console.json").write_bytes(body)
    fd = root_fd(tmp_path)
    try:
        with pytest.raises(OSError) as info:
            screenstate.load(fd)
        assert "saved console state" in str(info.value)
    finally:
        os.close(fd)

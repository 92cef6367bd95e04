"""A running controller keeps controller.log bounded: real files, two appending writers."""

import os
from pathlib import Path

from vzfs.controller.controller import bound_log


def test_a_log_past_its_limit_moves_aside_and_every_appender_goes_on_at_the_start(
        tmp_path: Path) -> None:
    path = tmp_path / "controller.log"
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    ours = os.open(path, flags, 0o600)          # the controller's fd 2
    theirs = os.open(path, flags, 0o600)        # a VNC server's own open of the file
    try:
        os.write(ours, b"a" * 600)
        assert not bound_log(ours, str(path), limit=1000)
        assert path.stat().st_size == 600
        os.write(theirs, b"b" * 600)
        assert bound_log(ours, str(path), limit=1000)
        assert (tmp_path / "controller.log.1").read_bytes() == b"a" * 600 + b"b" * 600
        marker = path.read_bytes()
        assert marker == (b"vzfs: this log passed 1000 bytes; the older lines are in "
                          b"controller.log.1\n")
        # Both writers append after the marker: no hole of zeros where they were.
        os.write(theirs, b"next\n")
        os.write(ours, b"last\n")
        assert path.read_bytes() == marker + b"next\nlast\n"
        assert not bound_log(ours, str(path), limit=1000)
    finally:
        os.close(ours)
        os.close(theirs)

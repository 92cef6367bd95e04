"""The events log on its own (real bytes, no daemon)."""

import re

from vzfs.daemon import events


def test_a_line_is_time_domain_kind_detail() -> None:
    data = events.line("web1", "error", "cannot start\n  domain web1:  gone")
    assert re.fullmatch(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z web1 error "
                        rb"cannot start domain web1: gone\n", data), data
    assert events.line("", "state").endswith(b" - state\n")


def test_lines_have_sequence_numbers_and_offsets() -> None:
    log = events.EventLog(capacity=3)
    for i in range(5):
        log.append(f"line {i}\n".encode())      # 7 bytes each
    assert (log.first, log.end, log.first_offset, log.size) == (2, 5, 14, 35)
    assert [log.seq_at(offset) for offset in (14, 20, 21, 27, 28, 34, 35)] == \
        [2, 2, 3, 3, 4, 4, 5]
    assert b" - overflow 7 events were dropped: this reader fell behind\n" in events.overflow(7)


def test_the_log_is_also_a_growing_file_read_at_offsets() -> None:
    log = events.EventLog(capacity=3)
    assert (log.size, log.read_at(0, 100)) == (0, b"")
    stream = b""
    for i in range(5):
        item = f"line {i}\n".encode()
        log.append(item)
        stream += item
    assert log.size == len(stream)
    kept = stream[len(stream) - 3 * 7:]               # the last three lines
    assert log.first_offset == len(stream) - len(kept)
    # Every offset and length within what is kept reads as the same bytes of the
    # stream; the end and what was dropped read as an end of file.
    for offset in range(log.first_offset, log.size + 1):
        for size in (1, 3, 7, 100):
            assert log.read_at(offset, size) == stream[offset:offset + size], (offset, size)
    assert log.read_at(0, 100) == b""
    assert log.read_at(log.first_offset - 1, 100) == b""
    assert log.read_at(log.size + 5, 100) == b""
    # A stream reader's read: the same bytes, and where it goes on, in one walk.
    for offset in range(0, log.size + 3):
        for size in (1, 3, 7, 100):
            data = log.read_at(offset, size)
            assert log.read_on(offset, size) == (data, log.seq_at(offset + len(data))), \
                (offset, size)


def test_stream_readers_and_positioned_readers() -> None:
    # cat (128 KiB), a Python buffered reader (8192), os.read(fd, 65536): streams.
    for size in (131072, 8192, 65536):
        assert events.is_stream_read(0, size, 300)
        assert events.is_stream_read(0, size, 50_000)
    # GNU tail reads the last block of the file: from offset 0 only when that block
    # is the whole (small) file, and then exactly its size.
    assert not events.is_stream_read(0, 300, 300)
    assert not events.is_stream_read(0, 8192, 8192)
    assert not events.is_stream_read(40_960, 8192, 50_000)
    # Any first read elsewhere than at 0 is positioned (less, dd skip=, tail -c).
    assert not events.is_stream_read(1, 131072, 300)

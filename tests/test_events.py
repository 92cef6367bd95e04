"""The events log on its own (real bytes, no daemon)."""

import re

from vzfs import events


def test_a_line_is_time_domain_kind_detail() -> None:
    data = events.line("web1", "error", "cannot start\n  domain web1:  gone")
    assert re.fullmatch(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z web1 error "
                        rb"cannot start domain web1: gone\n", data), data
    assert events.line("", "state").endswith(b" - state\n")


def test_readers_see_from_where_they_opened_in_order() -> None:
    log = events.EventLog()
    log.append(b"a\n")
    cursor = log.end
    for word in (b"b\n", b"c\n", b"d\n"):
        log.append(word)
    data, cursor = log.read(cursor, 4096)
    assert data == b"b\nc\nd\n"
    assert log.read(cursor, 4096) == (b"", cursor)
    # Small reads get whole lines, one at least.
    log.append(b"eeee\n")
    log.append(b"f\n")
    data, cursor2 = log.read(cursor, 3)
    assert data == b"eee" and cursor2 == cursor + 1
    assert log.read(cursor2, 3) == (b"f\n", cursor2 + 1)


def test_a_reader_that_fell_behind_is_told_and_goes_on() -> None:
    log = events.EventLog(capacity=3)
    cursor = log.end
    for i in range(10):
        log.append(f"{i}\n".encode())
    data, cursor = log.read(cursor, 4096)
    assert b" - overflow 7 events were dropped" in data
    assert log.read(cursor, 4096)[0] == b"7\n8\n9\n"
    assert len(log.lines) == 3


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

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

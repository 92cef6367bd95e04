"""The `events` stream: one line per event, `TIME DOMAIN KIND DETAIL` (pure).

A bounded log of whole lines: each has a sequence number and a byte offset in
the whole stream since the log began, and `size` is where the next one will
start. Readers read bytes at offsets, as in a file. A stream reader (cat, a
script's loop) starts at the size it found when it opened, sees the events
from then on in order and waits at the end; one that fell behind the log is
told how many events it missed, in a line of its own, and goes on from the
oldest kept. A positioned reader (tail -f, less) reads the file as it is, the
end being an end of file: tail needs one, and a stream that never ends cannot
give it. `is_stream_read` tells the two apart by their first read. Offsets let
a reader seek back over what it read, as bash's `read` does on a seekable file.
Nothing a reader does (or does not do) ever holds up `append`.
"""

import bisect
import collections
import datetime

CAPACITY = 10000          # lines kept for readers that are behind
# GNU tail reads a file's last block first: at most BUFSIZ (8192) bytes, and from
# offset 0 only when that block is the whole file.
TAIL_BLOCK = 8192


def is_stream_read(offset: int, size: int, file_size: int) -> bool:
    """Whether a reader's first read makes it a stream reader (cat, a script's read
    loop: from offset 0, for a buffer) rather than a positioned one (tail, less: a
    read at an offset, or of exactly the little the file holds)."""
    return offset == 0 and (size > file_size or file_size > TAIL_BLOCK)


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


def line(domain: str, kind: str, detail: str = "", time: str | None = None) -> bytes:
    """One event as a line; white space in the detail (a sentence, a path) becomes
    single spaces so that the line stays one line."""
    detail = " ".join(detail.split())
    words = [time or now_iso(), domain or "-", kind] + ([detail] if detail else [])
    return (" ".join(words) + "\n").encode()


class EventLog:
    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self.lines: collections.deque[bytes] = collections.deque()
        self.first = 0            # sequence number of lines[0]
        self.first_offset = 0     # byte offset of lines[0] in the whole stream
        self.size = 0             # byte offset of the next line

    @property
    def end(self) -> int:
        """The sequence number the next event will have (a new reader's cursor)."""
        return self.first + len(self.lines)

    def append(self, data: bytes) -> None:
        self.lines.append(data)
        self.size += len(data)
        if len(self.lines) > self.capacity:
            self.first_offset += len(self.lines.popleft())
            self.first += 1

    def _from(self, offset: int) -> tuple[int, int, list[bytes]]:
        """The line that holds *offset* and the lines after it, oldest first, with that
        line's offset and sequence number (the size and `end` past the last line).
        Readers read near the end (tail follows it): the walk goes back from there."""
        pos, seq, after = self.size, self.end, []
        for item in reversed(self.lines):
            if pos <= offset:
                break
            pos -= len(item)
            seq -= 1
            after.append(item)
        after.reverse()
        return pos, seq, after

    def read_at(self, offset: int, size: int) -> bytes:
        """The bytes at *offset* of the whole stream, as a file holds them: b"" at its
        end, and before the oldest line kept (those are gone)."""
        return self.read_on(offset, size)[0]

    def read_on(self, offset: int, size: int) -> tuple[bytes, int]:
        """`read_at`'s bytes, and the sequence number of the line that holds the offset
        after them (`seq_at` there): where a stream reader goes on, in one walk."""
        if offset >= self.size:
            return b"", self.end
        if offset < self.first_offset:
            return b"", self.first
        pos, seq, after = self._from(offset)
        out = bytearray()
        ends: list[int] = []            # each joined line's end offset
        for item in after:              # only as many lines as the read takes
            out += item
            ends.append(pos + len(out))
            if len(out) >= offset - pos + size:
                break
        data = bytes(out[offset - pos:offset - pos + size])
        return data, seq + bisect.bisect_right(ends, offset + len(data))

    def seq_at(self, offset: int) -> int:
        """The sequence number of the line that holds *offset* (`end` at the size)."""
        return self._from(offset)[1]


def overflow(missed: int) -> bytes:
    """What a stream reader that fell behind the log reads where the events it missed were."""
    return line("-", "overflow", f"{missed} events were dropped: this reader fell behind")

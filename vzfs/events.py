"""The `events` stream: one line per event, `TIME DOMAIN KIND DETAIL` (pure).

A bounded log of whole lines, each with a sequence number. A reader holds the
number of the next line it wants: it sees the events from when it opened, in
order; one that fell behind the log is told how many it missed, in a line of
its own, and goes on from the oldest kept. Nothing a reader does (or does not
do) ever holds up `append`.

The same lines are also a file that grows: each has a byte offset in the whole
stream since the log began, and `size` is where the next one will start. That is
what `tail -f` needs (it reads the last lines before the size, then what comes
after it, up to an end of file), and a stream that never ends cannot give it:
`is_stream_read` tells the two kinds of reader apart by their first read.
"""

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

    def read_at(self, offset: int, size: int) -> bytes:
        """The bytes at *offset* of the whole stream, as a file holds them: b"" at its
        end, and before the oldest line kept (those are gone)."""
        if offset < self.first_offset or offset >= self.size:
            return b""
        # Readers read near the end (tail follows it): walk back from there.
        pos, chunks = self.size, []
        for item in reversed(self.lines):
            if pos <= offset:
                break
            pos -= len(item)
            chunks.append(item)
        data = b"".join(reversed(chunks))
        return data[offset - pos:offset - pos + size]

    def read(self, cursor: int, size: int) -> tuple[bytes, int]:
        """Whole lines from *cursor*, up to *size* bytes (at least one line, cut only
        if that one is longer than *size*); returns (data, new cursor)."""
        if cursor < self.first:
            missed = self.first - cursor
            note = line("-", "overflow", f"{missed} events were dropped: this reader "
                                         "fell behind")
            return note[:size], self.first
        out = bytearray()
        i = cursor - self.first
        while i < len(self.lines):
            item = self.lines[i]
            if out and len(out) + len(item) > size:
                break
            out += item[:size] if not out else item
            i += 1
            if len(out) >= size:
                break
        return bytes(out), self.first + i

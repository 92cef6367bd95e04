"""The `events` stream: one line per event, `TIME DOMAIN KIND DETAIL` (pure).

A bounded log of whole lines, each with a sequence number. A reader holds the
number of the next line it wants: it sees the events from when it opened, in
order; one that fell behind the log is told how many it missed, in a line of
its own, and goes on from the oldest kept. Nothing a reader does (or does not
do) ever holds up `append`.
"""

import collections
import datetime

CAPACITY = 10000          # lines kept for readers that are behind


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

    @property
    def end(self) -> int:
        """The sequence number the next event will have (a new reader's cursor)."""
        return self.first + len(self.lines)

    def append(self, data: bytes) -> None:
        self.lines.append(data)
        if len(self.lines) > self.capacity:
            self.lines.popleft()
            self.first += 1

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

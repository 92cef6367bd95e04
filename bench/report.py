"""The run's results as a markdown table and as a JSON document; pure."""

import string
from collections.abc import Mapping

from .registry import KEYS, ROWS, Row, Value

MISSING = "—"


class _Blank(dict[str, object]):
    # A peer name's field that this run did not fill (its measurement did not
    # run) shows as "?" rather than failing the whole table.
    def __missing__(self, key: str) -> str:
        return "?"


def number(value: Value) -> str:
    if value is None:
        return MISSING
    if isinstance(value, float):
        if value >= 100:
            return f"{value:.0f}"
        if value >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    return str(value)


def ratio(mine: Value, peer: Value) -> str:
    if not isinstance(mine, (int, float)) or not isinstance(peer, (int, float)) or peer == 0:
        return MISSING
    r = mine / peer
    # Two significant digits below 0.01 (a scrolled line against a whole Raw frame).
    return f"{r:.2g}×" if 0 < r < 0.01 else f"{r:.2f}×"


def row_line(row: Row, values: Mapping[str, Value]) -> str:
    mine = values.get(row.figure)
    peer = values.get(row.peer) if row.peer else None
    name = string.Formatter().vformat(row.peer_name, (), _Blank(values))
    peer_cell = number(peer) if row.peer else ""
    return (f"| {row.figure} | {number(mine)} | {peer_cell} | {name} | "
            f"{ratio(mine, peer) if row.peer else ''} |")


def table(values: Mapping[str, Value]) -> str:
    """The markdown table of every row; ratio is vzfs ÷ peer (lower is better for times)."""
    lines = ["| figure | vzfs | peer | peer's name | ratio |", "|---|---:|---:|---|---:|"]
    lines += [row_line(row, values) for row in ROWS]
    return "\n".join(lines)


def _rounded(value: Value) -> Value:
    # Timers resolve nanoseconds, but the machines' noise is far larger than that.
    return round(value, 3) if isinstance(value, float) else value


def document(values: Mapping[str, Value], info: Mapping[str, object]) -> dict[str, object]:
    """The JSON document: every registry key (null when missing), extra figures, then the run's info."""
    doc: dict[str, object] = {key: _rounded(values.get(key)) for key in KEYS}
    doc.update((k, _rounded(v)) for k, v in values.items() if k not in doc)
    doc.update(info)
    return doc

"""Order statistics of benchmark samples (medians, nearest-rank percentiles); pure."""

import math
import statistics
from collections.abc import Sequence


def median(samples: Sequence[float]) -> float:
    if not samples:
        raise ValueError("median of no samples")
    return float(statistics.median(samples))


def percentile(samples: Sequence[float], q: float) -> float:
    """The nearest-rank q-th percentile: the smallest sample with at least q% at or below it."""
    if not samples:
        raise ValueError("percentile of no samples")
    if not 0 < q <= 100:
        raise ValueError(f"percentile {q} is not in (0, 100]")
    ordered = sorted(samples)
    return float(ordered[math.ceil(q / 100 * len(ordered)) - 1])


def alternate(i: int, pair: tuple[str, ...]) -> tuple[str, ...]:
    """The sides in the order of repetition *i*: runs rotate which side goes first,
    so neither side always inherits the other's warm caches or its leftover work."""
    k = i % len(pair)
    return pair[k:] + pair[:k]

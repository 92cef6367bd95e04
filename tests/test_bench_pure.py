"""The benchmark suite's pure parts: order statistics, the registry, the table and the JSON (no timings)."""

import pytest

from bench import registry, report, stats


def test_percentile_is_nearest_rank() -> None:
    samples = list(range(1, 101))          # 1..100
    assert stats.percentile(samples, 99) == 99
    assert stats.percentile(samples, 100) == 100
    assert stats.percentile(samples, 50) == 50
    assert stats.percentile([7.0], 99) == 7.0
    assert stats.percentile([3, 1, 2], 99) == 3


def test_statistics_refuse_no_samples() -> None:
    with pytest.raises(ValueError):
        stats.median([])
    with pytest.raises(ValueError):
        stats.percentile([], 50)
    with pytest.raises(ValueError):
        stats.percentile([1], 0)


def test_alternate_switches_who_goes_first() -> None:
    assert stats.alternate(0, ("a", "b")) == ("a", "b")
    assert stats.alternate(1, ("a", "b")) == ("b", "a")
    assert stats.alternate(2, ("a", "b")) == ("a", "b")


def test_every_row_names_registered_keys() -> None:
    for row in registry.ROWS:
        assert row.figure in registry.KEYS
        assert row.peer is None or row.peer in registry.KEYS


def test_a_measurement_of_an_unknown_key_is_refused() -> None:
    with pytest.raises(ValueError, match="not in registry.KEYS"):
        registry.measurement("no_such_figure")(lambda ctx: {})


def test_table_shows_missing_figures_and_ratios() -> None:
    values = {"start_ms_p50": 12.0, "crun_start_ms_p50": 24.0, "crun_name": "crun 1.8.1"}
    lines = report.table(values).splitlines()
    assert lines[0] == "| figure | vzfs | peer | peer's name | ratio |"
    assert "| start_ms_p50 | 12.0 | 24.0 | crun 1.8.1: run -d | 0.50× |" in lines
    # The kill row: no figures, and its peer name's field is filled all the same.
    assert "| stop_ms_p50 | — | — | crun 1.8.1: delete -f | — |" in lines
    # A field no measurement filled shows as "?" rather than failing.
    assert "| domain_pss_mb | — |  | (mean of ? domains) |  |" in lines
    assert len(lines) == 2 + len(registry.ROWS)


def test_document_holds_every_key_null_when_missing() -> None:
    doc = report.document({"start_ms_p50": 12.3456789, "extra_ms": 1.0}, {"quick": True})
    assert list(doc)[:len(registry.KEYS)] == list(registry.KEYS)
    assert doc["start_ms_p50"] == 12.346
    assert doc["crun_start_ms_p50"] is None
    assert doc["extra_ms"] == 1.0
    assert doc["quick"] is True

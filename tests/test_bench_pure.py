"""The benchmark suite's pure parts: order statistics, the registry, the table and the JSON (no timings)."""

import struct

import pytest

from bench import registry, report, stats
from vzfs.vnc.rfb import NEED_DATA


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
    assert stats.alternate(1, ("a", "b", "c")) == ("b", "c", "a")


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


# -- bench/vnc.py's framing of server messages, against vzfs's own encoders -----------------

def _vnc_frames(encoding: int) -> bytes:
    """Two updates (a full frame with the pseudo-rectangles, then a scroll and a dirty
    row) and a Bell, from an RFB server connection that was offered *encoding* first."""
    import numpy as np

    from bench import vnc
    from vzfs.vnc.rfb import RFBServerConnection

    rng = np.random.default_rng(3)
    frame = np.zeros((64, 80), dtype=np.uint32)
    frame[8:24, 4:70] = rng.choice([0xAAAAAA, 0x00FF00, 0x123456], size=(16, 66))
    frame[40:56, :] = rng.integers(0, 1 << 24, size=(16, 80), dtype=np.uint32)   # many colours
    conn = RFBServerConnection()
    conn.receive_data(b"RFB 003.008\n\x01\x01")
    conn.next_event()
    conn.send_server_init(80, 64, "bench")
    encodings = [encoding, *(e for e in vnc.BEST_ENCODINGS if e != encoding)]
    conn.receive_data(struct.pack(f">BxH{len(encodings)}i", 2, len(encodings), *encodings)
                      + struct.pack(">BBHHHH", 3, 0, 0, 0, 80, 64))
    while conn.next_event() is not NEED_DATA:
        pass
    conn.data_to_send()          # the handshake's bytes
    data = conn.send_framebuffer_update(frame, [(0, 0, 80, 64)])
    data += conn.send_framebuffer_update(frame, [(0, 48, 80, 16)], [(0, 0, 80, 48, 0, 16)])
    return data + conn.send_bell()


@pytest.mark.parametrize("encoding", [0, 5, 6, 7, 16])     # Raw, Hextile, zlib, Tight, ZRLE
def test_vnc_framing_finds_every_message_end(encoding: int) -> None:
    from bench import vnc

    data = _vnc_frames(encoding)
    sizes = vnc.PixelSizes.of(vzfs_native_format())
    pos, kinds, updates, starts = 0, [], [], []
    while pos < len(data):
        starts.append(pos)
        kind, pos, rects = vnc.parse_message(data, pos, sizes)
        kinds.append(kind)
        updates.append(rects)
    assert pos == len(data)
    # The layout (asked by the non-incremental request) in an update of its own, then
    # the full frame with the cursor and the name, then the scroll, then the Bell.
    assert kinds == [0, 0, 0, 2]
    assert [r.encoding for r in updates[0]] == [vnc.EXTENDED_DESKTOP_SIZE]
    assert {r.encoding for r in updates[1] if r.pixels} == {encoding}
    assert {vnc.CURSOR, vnc.DESKTOP_NAME} <= {r.encoding for r in updates[1]}
    assert updates[2][0].encoding == vnc.COPY_RECT
    assert all(r.pixels for r in updates[2])
    # Every cut inside the full frame is seen as incomplete, never misparsed.
    start, end = starts[1], starts[2]
    for cut in range(start, end, max(1, (end - start) // 97)):
        with pytest.raises(vnc.Incomplete):
            vnc.parse_message(data[:cut], start, sizes)


def vzfs_native_format() -> bytes:
    from vzfs.vnc.encodings import NATIVE_FORMAT
    return NATIVE_FORMAT.pack()


def test_vnc_pixel_sizes() -> None:
    from bench import vnc

    assert vnc.PixelSizes.of(vzfs_native_format()) == vnc.PixelSizes(4, 3)
    bgr233 = bytes([8, 8, 0, 1]) + struct.pack(">HHH", 7, 7, 3) + bytes([0, 3, 6, 0, 0, 0])
    assert vnc.PixelSizes.of(bgr233) == vnc.PixelSizes(1, 1)


def test_tiny_ratios_keep_their_digits() -> None:
    from bench.report import ratio
    assert ratio(195, 1024016) == "0.00019×"
    assert ratio(3.0, 2.0) == "1.50×"

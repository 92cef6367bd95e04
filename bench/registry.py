"""The registry of figures: every JSON key the suite reports, the table's rows, and the measurements.

A measurement is one function decorated with `@measurement(KEY, …)`: it takes
the run's `Context` and returns a mapping of figure keys (and any extra
descriptive keys) to values. Every key of `KEYS` is in the JSON whatever
happens: a figure no measurement produced — its issue has not landed, or its
measurement failed — stays null (missing), never guessed.
"""

import dataclasses
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .context import Context

Value = float | int | str | None
Values = Mapping[str, Value]

# Suspend/resume beside raw CRIU (issue 7): one set of figures per size of the
# memory the container holds.
CHECKPOINT_SIZES_MB: tuple[int, ...] = (10, 100, 500)


def checkpoint_keys(size_mb: int) -> tuple[str, ...]:
    tag = f"{size_mb}mb"
    return (f"suspend_frozen_ms_{tag}", f"raw_criu_frozen_ms_{tag}",
            f"suspend_dump_ms_{tag}", f"raw_criu_dump_ms_{tag}",
            f"resume_restore_ms_{tag}", f"raw_criu_restore_ms_{tag}",
            f"suspend_write_ms_{tag}", f"resume_write_ms_{tag}",
            f"frozen_overhead_pct_{tag}", f"resume_overhead_pct_{tag}")


# Online migration (issue 8), for the same sizes: the downtime a ticker inside sees,
# vzfs's own figure for it, and the whole move beside rsync + raw CRIU.
def migration_keys(size_mb: int) -> tuple[str, ...]:
    tag = f"{size_mb}mb"
    return (f"migrate_downtime_ms_{tag}", f"criu_dump_restore_ms_{tag}",
            f"migrate_vzfs_downtime_ms_{tag}",
            f"migrate_total_ms_{tag}", f"rsync_criu_ms_{tag}", f"migrate_total_ratio_{tag}")


# The keys of the bench issue's table (issue 3), in its order.
KEYS: tuple[str, ...] = (
    "start_ms_p50", "crun_start_ms_p50",
    "stop_ms_p50", "crun_kill_ms_p50",
    "start_unprivileged_ms_p50", "start_privileged_ms_p50", "crun_userns_start_ms_p50",
    "suspend_unprivileged_ms_p50", "suspend_privileged_ms_p50",
    "resume_unprivileged_ms_p50", "resume_privileged_ms_p50",
    "control_read_us_p50", "control_read_us_p99", "tmpfs_read_us_p50", "cgroupfs_read_us_p50",
    "pyfuse3_floor_read_us_p50",
    "control_write_us_p50", "cgroupfs_write_us_p50",
    "emulator_plain_mbps", "emulator_sgr_mbps", "pyte_plain_mbps", "pyte_sgr_mbps",
    "emulator_pyte_backend_plain_mbps", "emulator_pyte_backend_sgr_mbps",
    "console_throughput_mbps", "devnull_throughput_mbps",
    "render_full_ms", "render_row_ms",
    "vnc_key_latency_ms_p50",
    "vnc_bytes_per_scrolled_line", "vnc_raw_frame_bytes",
    "vnc_bytes_per_scrolled_line_paced", "vnc_restart_ms",
    "mount_add_ms_p50", "mount_del_ms_p50",
    *(key for size in CHECKPOINT_SIZES_MB for key in checkpoint_keys(size)),
    *(key for size in CHECKPOINT_SIZES_MB for key in migration_keys(size)),
    "domain_pss_mb",
    "control_read_us_p99_100_domains",
    "inotify_crash_ms_p50", "inotify_crash_ms_p99", "events_crash_ms_p50",
    "start_with_hook_ms_p50", "start_without_hook_ms_p50",
)


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of the table: a vzfs figure, and the peer figure it is compared with."""
    figure: str
    peer: str | None = None
    # The peer's name; `{key}` fields are filled from the run's descriptive
    # values (e.g. the crun version and cgroup mode found on this host).
    peer_name: str = ""


def _checkpoint_rows(size_mb: int) -> tuple[Row, ...]:
    tag = f"{size_mb}mb"
    raw = "raw {criu_name}, same container"
    return (
        Row(f"suspend_frozen_ms_{tag}", f"raw_criu_frozen_ms_{tag}", f"{raw}: dump's frozen_time"),
        Row(f"suspend_dump_ms_{tag}", f"raw_criu_dump_ms_{tag}", f"{raw}: criu dump"),
        Row(f"suspend_write_ms_{tag}", f"raw_criu_dump_ms_{tag}", f"{raw}: criu dump"),
        Row(f"resume_restore_ms_{tag}", f"raw_criu_restore_ms_{tag}", f"{raw}: criu restore"),
        Row(f"resume_write_ms_{tag}", f"raw_criu_restore_ms_{tag}", f"{raw}: criu restore"),
        Row(f"frozen_overhead_pct_{tag}"),
        Row(f"resume_overhead_pct_{tag}"),
    )


def _migration_rows(size_mb: int) -> tuple[Row, ...]:
    tag = f"{size_mb}mb"
    raw = "raw {criu_name}, same container"
    return (
        Row(f"migrate_downtime_ms_{tag}", f"criu_dump_restore_ms_{tag}",
            f"{raw}: dump + restore (no copy)"),
        Row(f"migrate_vzfs_downtime_ms_{tag}", f"criu_dump_restore_ms_{tag}",
            f"{raw}: dump + restore (no copy)"),
        Row(f"migrate_total_ms_{tag}", f"rsync_criu_ms_{tag}",
            f"{raw}: rsync -aHAX of the root over ssh + dump + restore"),
    )


ROWS: tuple[Row, ...] = (
    Row("start_ms_p50", "crun_start_ms_p50", "{crun_name}: run -d"),
    Row("stop_ms_p50", "crun_kill_ms_p50", "{crun_name}: delete -f"),
    Row("start_unprivileged_ms_p50", "start_privileged_ms_p50", "the same domain, privileged"),
    Row("start_unprivileged_ms_p50", "crun_userns_start_ms_p50",
        "{crun_name}: run -d, with a user namespace"),
    Row("suspend_unprivileged_ms_p50", "suspend_privileged_ms_p50", "the same domain, privileged"),
    Row("resume_unprivileged_ms_p50", "resume_privileged_ms_p50", "the same domain, privileged"),
    Row("control_read_us_p50", "tmpfs_read_us_p50", "tmpfs file ({tmpfs_path})"),
    Row("control_read_us_p50", "cgroupfs_read_us_p50", "cgroupfs {cgroupfs_file}"),
    Row("control_read_us_p50", "pyfuse3_floor_read_us_p50",
        "a minimal pyfuse3 + trio filesystem (bench/pyfuse3_floor.py)"),
    Row("control_read_us_p99"),
    Row("control_write_us_p50", "cgroupfs_write_us_p50", "cgroupfs {cgroupfs_file}, same value"),
    Row("control_read_us_p99_100_domains", None, "({control_read_domains} domains running)"),
    Row("domain_pss_mb", None, "(mean of {domain_pss_domains} domains)"),
    Row("emulator_plain_mbps", "pyte_plain_mbps", "pyte Screen, same bytes"),
    Row("emulator_sgr_mbps", "pyte_sgr_mbps", "pyte Screen, same bytes"),
    Row("emulator_pyte_backend_plain_mbps", "pyte_plain_mbps", "pyte Screen, same bytes"),
    Row("emulator_pyte_backend_sgr_mbps", "pyte_sgr_mbps", "pyte Screen, same bytes"),
    Row("console_throughput_mbps", "devnull_throughput_mbps", "same writer to /dev/null"),
    Row("render_full_ms"),
    Row("render_row_ms"),
    Row("vnc_key_latency_ms_p50"),
    Row("vnc_bytes_per_scrolled_line", "vnc_raw_frame_bytes", "one Raw frame"),
    Row("vnc_bytes_per_scrolled_line_paced", "vnc_raw_frame_bytes", "one Raw frame"),
    Row("vnc_restart_ms"),
    Row("mount_add_ms_p50"),
    Row("mount_del_ms_p50"),
    Row("inotify_crash_ms_p50", None, "(init killed from the host → IN_MODIFY on state)"),
    Row("inotify_crash_ms_p99"),
    Row("events_crash_ms_p50", None, "(→ `state crashed` read from events)"),
    Row("start_with_hook_ms_p50", "start_without_hook_ms_p50", "same start, no hooks"),
    *(row for size in CHECKPOINT_SIZES_MB for row in _checkpoint_rows(size)),
    *(row for size in CHECKPOINT_SIZES_MB for row in _migration_rows(size)),
)


@dataclasses.dataclass(frozen=True)
class Measurement:
    name: str
    keys: tuple[str, ...]          # the figures it produces (null when it fails)
    run: Callable[["Context"], Values]


MEASUREMENTS: list[Measurement] = []


def measurement(*keys: str) -> Callable[[Callable[["Context"], Values]],
                                        Callable[["Context"], Values]]:
    """Register the decorated function as the measurement of *keys*, in definition order."""
    def register(fn: Callable[["Context"], Values]) -> Callable[["Context"], Values]:
        unknown = [k for k in keys if k not in KEYS]
        if unknown:
            raise ValueError(f"measurement {fn.__name__}: keys {unknown} are not in registry.KEYS")
        MEASUREMENTS.append(Measurement(fn.__name__, keys, fn))
        return fn
    return register

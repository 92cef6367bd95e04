"""One run of the suite: its settings, its temporary root, and what it started, stopped on exit."""

import dataclasses
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

from . import host
from .instance import BenchError, Instance

if TYPE_CHECKING:
    from .crun import Crun


@dataclasses.dataclass(frozen=True)
class Settings:
    quick: bool
    cycles: int               # start/kill cycles per side
    iterations: int           # control-file operations per target
    domains: int              # running domains for the loaded read figure
    pss_domains: int          # domains whose controllers' PSS is averaged
    emulator_bytes: int
    emulator_runs: int
    crun_cgroups: str         # "cgroupfs" or "disabled"

    @classmethod
    def for_run(cls, quick: bool, crun_cgroups: str) -> "Settings":
        if quick:
            return cls(True, cycles=8, iterations=3000, domains=20, pss_domains=20,
                       emulator_bytes=1 << 20, emulator_runs=1, crun_cgroups=crun_cgroups)
        return cls(False, cycles=40, iterations=20000, domains=100, pss_domains=50,
                   emulator_bytes=10 << 20, emulator_runs=3, crun_cgroups=crun_cgroups)


class Context:
    """Owns the temporary root and the vzfs instance and crun peer, started when first asked for."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = tempfile.mkdtemp(prefix="vzfs-bench.")
        # Names of peers and run parameters, for the JSON and the table's peer names.
        self.meta: dict[str, str | int | float] = {}
        self._instance: Instance | None = None
        self._mount_error: BaseException | None = None
        self._crun: "Crun | None" = None
        # Undo actions of the measurements (files, cgroups), run first on close.
        self.cleanups: list[Callable[[], object]] = []
        self.problems: list[str] = []

    def log(self, text: str) -> None:
        print(f"bench: {text}", file=sys.stderr, flush=True)

    def instance(self) -> Instance:
        if self._instance is None:
            inst = Instance(os.path.join(self.root, "vzfs"))
            self._instance = inst      # set before mounting: a half-started one is cleaned too
            try:
                inst.mount()
            except BaseException as exc:
                self._mount_error = exc
                raise
        if self._mount_error is not None:
            raise BenchError(f"vzfs is not mounted: {self._mount_error}")
        return self._instance

    def crun(self) -> "Crun":
        if self._crun is None:
            from .crun import Crun
            self._crun = Crun(os.path.join(self.root, "crun"), self.settings.crun_cgroups)
            self._crun.open()
            self.meta["crun_name"] = self._crun.name
        return self._crun

    def __enter__(self) -> "Context":
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Undo what measurements made, stop the peer and the instance, then remove
        the root — only once nothing is mounted in it. A second Ctrl-C (or SIGTERM)
        while this runs is ignored: half a clean-up would leave containers behind."""
        previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._close()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _close(self) -> None:
        for undo in reversed(self.cleanups):
            try:
                result = undo()
            except OSError as exc:
                self.problems.append(f"clean-up: {exc}")
            else:
                if isinstance(result, list) and result:
                    self.problems.append(f"clean-up left: {', '.join(map(str, result))}")
        if self._crun is not None:
            self.problems += self._crun.close()
        if self._instance is not None:
            self.problems += self._instance.close()
        busy = [point for point, _ in host.mounts() if point.startswith(self.root + "/")]
        if busy:
            self.problems.append(f"still mounted, {self.root} kept: {', '.join(busy)}")
            return
        shutil.rmtree(self.root, ignore_errors=True)

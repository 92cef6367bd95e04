"""Figures measured by modules other issues add to this package: run them when present, else leave them null.

Contracts (each module is optional; a missing one leaves its figures null):
- `bench/emulator.py`: `plain_input(n) -> bytes` and `sgr_input(n) -> bytes` give
  n bytes of `seq`-like text and of colour-heavy text; `measure(backend, data)
  -> float` feeds *data* to *backend* (`"vzfs"`: the emulator layer's fast engine,
  `"pyte_backend"`: its pyte-based backend, `"pyte"`: a stock pyte Screen) and
  returns MB/s.
- `bench/render.py`: `full_render_ms() -> float` (a busy 80×25 screen) and
  `dirty_row_ms() -> float` (one changed row), medians in ms; `scroll_ms()` and
  `first_render_ms()` (the cold first frame) when it has them.
"""

import importlib
from types import ModuleType

from .context import Context
from .instance import BenchError
from .registry import Values, measurement
from .stats import alternate, median


def optional_module(name: str) -> ModuleType | None:
    """Import `bench.NAME` if it exists; an import error *inside* it is a real error."""
    full = f"{__package__}.{name}"
    try:
        return importlib.import_module(full)
    except ModuleNotFoundError as exc:
        if exc.name == full:
            return None
        raise


def _require(module: ModuleType, *attrs: str) -> None:
    missing = [a for a in attrs if not callable(getattr(module, a, None))]
    if missing:
        raise BenchError(f"{module.__name__} lacks {', '.join(missing)} (see bench/hooks.py)")


@measurement("emulator_plain_mbps", "emulator_sgr_mbps", "pyte_plain_mbps", "pyte_sgr_mbps",
             "emulator_pyte_backend_plain_mbps", "emulator_pyte_backend_sgr_mbps")
def emulator(ctx: Context) -> Values:
    mod = optional_module("emulator")
    if mod is None:
        return {}
    _require(mod, "measure", "plain_input", "sgr_input")
    size = ctx.settings.emulator_bytes
    out: dict[str, float] = {}
    for kind, data in (("plain", mod.plain_input(size)), ("sgr", mod.sgr_input(size))):
        runs: dict[str, list[float]] = {"vzfs": [], "pyte": [], "pyte_backend": []}
        for i in range(ctx.settings.emulator_runs):
            for backend in alternate(i, ("vzfs", "pyte", "pyte_backend")):
                runs[backend].append(float(mod.measure(backend, data)))
        out[f"emulator_{kind}_mbps"] = median(runs["vzfs"])
        out[f"pyte_{kind}_mbps"] = median(runs["pyte"])
        out[f"emulator_pyte_backend_{kind}_mbps"] = median(runs["pyte_backend"])
    ctx.meta["emulator_bytes"] = size
    return out


@measurement("render_full_ms", "render_row_ms")
def render(ctx: Context) -> Values:
    mod = optional_module("render")
    if mod is None:
        return {}
    _require(mod, "full_render_ms", "dirty_row_ms")
    out = {"render_full_ms": float(mod.full_render_ms()),
           "render_row_ms": float(mod.dirty_row_ms())}
    for key, fn in (("render_scroll_ms", "scroll_ms"), ("render_first_ms", "first_render_ms")):
        if callable(getattr(mod, fn, None)):
            out[key] = float(getattr(mod, fn)())
    return out

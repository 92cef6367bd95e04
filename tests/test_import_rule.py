"""Pure cores never import I/O frameworks: trio, pyfuse3, socket or the cffi binding —
neither themselves nor through another vzfs module, so every vzfs module a pure one
imports is pure too."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "vzfs"
# Every pure module (a directory: each module in it). The packages they sit in are
# checked too, since importing a module runs its package's __init__.py.
PURE = [
    "model", "base/errors.py", "daemon/events.py", "controller/states.py",
    "wire/framing.py", "wire/consolestream.py", "wire/messages.py",
    "kernel/mountinfo.py", "migrate/target.py",
    "terminal", "vnc/rfb.py", "vnc/encodings.py", "vnc/errors.py", "vnc/render.py", "vnc/font.py",
    "vnc/keys.py",
]
FORBIDDEN = {"trio", "pyfuse3", "socket", "cffi", "vzfs.kernel", "selectors", "asyncio"}
# What a module's docstring says when it claims to be pure: such a module must be listed.
CLAIMS = ("(pure)", "sans I/O", "sans-I/O")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> list[Path]:
    out = []
    for entry in PURE:
        path = ROOT / entry
        if path.is_dir():
            out.extend(sorted(path.rglob("*.py")))
        elif path.exists():
            out.append(path)
    return out


def packages(paths: list[Path]) -> list[Path]:
    """The __init__.py of each package (vzfs and below) that holds one of *paths*."""
    found = {parent / "__init__.py" for path in paths for parent in path.parents
             if parent == ROOT or ROOT in parent.parents}
    return sorted(found - set(paths))


def imported(path: Path, source: str | None = None) -> set[str]:
    """Every module name *path* (or *source*, as if it were *path*) imports, anywhere
    in it, relative imports resolved; for `from X import y` both X and X.y (y may be a
    module)."""
    names: set[str] = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path.parent)
    for node in ast.walk(ast.parse(path.read_text() if source is None else source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def forbidden(names: set[str]) -> set[str]:
    return {name for name in names for bad in FORBIDDEN
            if name == bad or name.startswith(bad + ".")}


def vzfs_modules(names: set[str]) -> set[str]:
    """The names that are vzfs modules (files or packages), not names inside them."""
    def exists(name: str) -> bool:
        path = ROOT.parent.joinpath(*name.split("."))
        return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()
    return {name for name in names if name.split(".")[0] == "vzfs" and exists(name)}


PURE_NAMES = {module_name(path) for path in modules() + packages(modules())}


@pytest.mark.parametrize("path", modules() + packages(modules()),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_pure_module_imports(path: Path) -> None:
    names = imported(path)
    assert not forbidden(names), f"{path.name} imports {sorted(forbidden(names))}"
    impure = vzfs_modules(names) - PURE_NAMES
    assert not impure, f"{path.name} imports {sorted(impure)}, which are not pure"


def test_every_module_that_claims_to_be_pure_is_checked() -> None:
    claiming = {module_name(path) for path in ROOT.rglob("*.py")
                if any(claim in (ast.get_docstring(ast.parse(path.read_text())) or "")
                       .split("\n\n")[0] for claim in CLAIMS)}
    unlisted = sorted(claiming - PURE_NAMES)
    assert not unlisted, f"{unlisted} say they are pure: list them in PURE"


def test_the_rule_has_teeth() -> None:
    assert len(modules()) >= 15
    assert {"vzfs.terminal.parser", "vzfs.terminal.interface", "vzfs.terminal.sgr",
            "vzfs.terminal.emulator", "vzfs.terminal.pyte_backend"} <= PURE_NAMES
    assert "trio" in imported(ROOT / "daemon" / "registry.py")
    here = ROOT / "model" / "lifecycle.py"
    for line, caught in [("import trio", "trio"), ("from ..kernel import syscalls", "vzfs.kernel"),
                         ("from ..kernel.syscalls import mount", "vzfs.kernel.syscalls"),
                         ("from socket import socketpair", "socket")]:
        assert caught in forbidden(imported(here, line)), line
    for line in ["from ..daemon import registry", "from ..daemon.registry import Registry",
                 "from ..controller import controller", "import vzfs.daemon.main"]:
        assert vzfs_modules(imported(here, line)) - PURE_NAMES, line
    assert not vzfs_modules(imported(here, "from ..base.errors import VzfsError")) - PURE_NAMES


# The layers (docs/design.md, "Who may import whom"): a package may import the ones
# it stands on, never one that stands on it. The controller side never imports the
# daemon side; the daemon side reads what controllers leave on disk through the
# controller's own modules (paths, checkpoint, screenstate) and starts the zygote.
BELOW = {
    "base": set(),
    "model": {"base"},
    "wire": {"base", "model"},
    "kernel": {"base", "model"},
    "terminal": {"base"},
    "vnc": {"base", "model", "wire", "kernel", "terminal"},
    "controller": {"base", "model", "wire", "kernel", "terminal", "vnc", "migrate"},
    "daemon": {"base", "model", "wire", "kernel", "controller", "fs", "migrate"},
    "fs": {"base", "model", "wire", "kernel", "controller", "daemon", "terminal"},
    "migrate": {"base", "model", "wire", "kernel", "controller", "daemon"},
    "cli": {"base", "model", "wire", "kernel", "controller", "daemon", "migrate"},
}
# The controller side runs migrations out (migrate/source, target, mux); the arrival
# (incoming, receiver) is the daemon side's, and the controller side never imports it.
DAEMON_SIDE = {"vzfs.daemon", "vzfs.fs", "vzfs.migrate.incoming", "vzfs.migrate.receiver"}
CONTROLLER_SIDE = {"controller", "vnc", "terminal", "wire", "model", "base", "kernel"}


def _layer_imports(path: Path) -> set[str]:
    return {name for name in vzfs_modules(imported(path)) if name != "vzfs"}


@pytest.mark.parametrize("package", sorted(BELOW))
def test_a_package_imports_only_what_it_stands_on(package: str) -> None:
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in _layer_imports(path):
            other = name.split(".")[1]
            assert other == package or other in BELOW[package], \
                f"{path.relative_to(ROOT)} imports {name}: {package} does not stand on {other}"
            if package in CONTROLLER_SIDE:
                assert not any(name == d or name.startswith(d + ".") for d in DAEMON_SIDE), \
                    f"{path.relative_to(ROOT)} (the controller side) imports {name}"


def test_every_package_has_its_layer() -> None:
    packages_here = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert packages_here == set(BELOW)
    # The top level holds packages and the entry point only.
    assert {p.name for p in ROOT.glob("*.py")} == {"__init__.py", "__main__.py"}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_no_module_imports_another_modules_private_names() -> None:
    # A name with a leading underscore is its module's own: no other module (nor a test)
    # imports it, and no module outside a package imports the package's private modules.
    tree = ROOT.parent
    for path in sorted(list(ROOT.rglob("*.py")) + list((tree / "tests").rglob("*.py"))
                       + list((tree / "bench").rglob("*.py"))):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "")
                                                     .startswith("vzfs")):
                module = node.module or ""
                assert not any(_private(part) for part in module.split(".")), \
                    f"{path.relative_to(tree)} imports the private module {module}"
                for alias in node.names:
                    assert not _private(alias.name), \
                        f"{path.relative_to(tree)} imports {alias.name} from {module}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("vzfs"):
                        assert not any(_private(p) for p in alias.name.split(".")), \
                            f"{path.relative_to(tree)} imports {alias.name}"

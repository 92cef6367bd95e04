"""Pure cores never import I/O frameworks: trio, pyfuse3, socket or the cffi binding."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "vzfs"
PURE = [
    "config.py", "errors.py", "mountspec.py",
    "controller/lifecycle.py", "controller/protocol.py", "kernel/mountinfo.py",
    "terminal", "vnc/rfb.py", "vnc/encodings.py", "vnc/render.py", "vnc/font.py", "vnc/keys.py",
]
FORBIDDEN = {"trio", "pyfuse3", "socket", "cffi", "vzfs.kernel", "selectors", "asyncio"}


def modules() -> list[Path]:
    out = []
    for entry in PURE:
        path = ROOT / entry
        if path.is_dir():
            out.extend(sorted(path.rglob("*.py")))
        elif path.exists():
            out.append(path)
    return out


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts[:-node.level])
                names.add(f"{base}.{node.module}" if node.module else base)
            elif node.module:
                names.add(node.module)
    return names


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_pure_module_imports(path: Path) -> None:
    for name in imported(path):
        for bad in FORBIDDEN:
            assert name != bad and not name.startswith(bad + "."), f"{path.name} imports {name}"


def test_the_rule_has_teeth() -> None:
    assert len(modules()) >= 4
    sample = ROOT / "registry.py"
    assert any(n == "trio" for n in imported(sample))

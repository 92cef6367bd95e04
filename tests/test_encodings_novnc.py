"""noVNC's own decoders (run under node) read our encodings pixel for pixel.

noVNC is looked for in $VZFS_NOVNC_DIRS (colon-separated package directories),
Debian's /usr/share/novnc and npm installs of @novnc/novnc under /tmp and
/usr/lib/node_modules. Debian's 1.3.0 decodes Raw, CopyRect, Hextile and Tight;
1.4+ adds zlib and ZRLE.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import struct
import subprocess

import numpy as np
import pytest

from tests.test_encodings import terminal_frame
from vzfs.vnc import encodings as enc

HARNESS = pathlib.Path(__file__).with_name("novnc_decode.mjs")
NOVNC_FORMAT = enc.PixelFormat(32, 24, False, True, 255, 255, 255, 0, 8, 16)  # noVNC's SetPixelFormat
DECODER_FILES = {enc.RAW: "raw", enc.HEXTILE: "hextile", enc.ZLIB: "zlib", enc.TIGHT: "tight", enc.ZRLE: "zrle"}


def candidate_dirs() -> list[pathlib.Path]:
    env = os.environ.get("VZFS_NOVNC_DIRS", "")
    dirs = [pathlib.Path(d) for d in env.split(":") if d]
    dirs.append(pathlib.Path("/usr/share/novnc"))
    repo_cache = pathlib.Path(__file__).resolve().parent.parent / ".cache"
    for base in (repo_cache, pathlib.Path("/usr/lib"), pathlib.Path("/usr/local/lib")):
        dirs += sorted(base.glob("*/node_modules/@novnc/novnc")) + sorted(base.glob("node_modules/@novnc/novnc"))
    return [d for d in dirs if readable(d / "core" / "decoders" / "tight.js")]


def readable(path: pathlib.Path) -> bool:
    try:
        return path.exists()
    except OSError:  # a dead mount on the way (ENOTCONN) is no noVNC
        return False


def as_package(src: pathlib.Path, tmp: pathlib.Path) -> pathlib.Path:
    """Debian ships bare ES modules: give node a package.json that says so."""
    meta = src / "package.json"
    if meta.exists() and (json.loads(meta.read_text()).get("type") == "module" or (src / "lib").exists()):
        return src
    dst = tmp / "novnc"
    for sub in ("core", "vendor"):
        if (src / sub).exists():
            shutil.copytree(src / sub, dst / sub)
    (dst / "package.json").write_text('{"type": "module"}')
    return dst


NODE = shutil.which("node")
DIRS = candidate_dirs()
pytestmark = [
    pytest.mark.skipif(NODE is None, reason="node is not installed"),
    pytest.mark.skipif(not DIRS, reason="noVNC not found (Debian novnc or npm @novnc/novnc)"),
]


def novnc_decode(package: pathlib.Path, width: int, height: int, updates: bytes) -> np.ndarray:
    assert NODE is not None
    proc = subprocess.run([NODE, str(HARNESS), str(package), str(width), str(height)],
                          input=updates, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    return np.frombuffer(proc.stdout, dtype=np.uint8).reshape(height, width, 4)[..., :3]


def rgb_of(frame: np.ndarray) -> np.ndarray:
    return np.stack([(frame >> 16) & 0xFF, (frame >> 8) & 0xFF, frame & 0xFF], axis=-1).astype(np.uint8)


def update(rects: list[bytes]) -> bytes:
    return struct.pack(">BxH", 0, len(rects)) + b"".join(rects)


# One case per encoding, whatever noVNC is installed: one that no noVNC here decodes
# (Debian's 1.3.0 has no zlib or ZRLE decoder) is a visible skip, never a missing test.
@pytest.mark.parametrize("encoding", list(DECODER_FILES), ids=lambda e: enc.ENCODING_NAMES[e])
def test_novnc_decodes(encoding: int, tmp_path: pathlib.Path) -> None:
    name = DECODER_FILES[encoding]
    roots = [root for root in DIRS if (root / "core" / "decoders" / f"{name}.js").exists()]
    if not roots:
        pytest.skip(f"no noVNC here decodes {enc.ENCODING_NAMES[encoding]} (looked in "
                    f"{', '.join(map(str, DIRS))}; npm @novnc/novnc 1.7 does: put it in "
                    "VZFS_NOVNC_DIRS)")
    for i, root in enumerate(roots):
        check_novnc_decodes(root, encoding, tmp_path / str(i))


def check_novnc_decodes(root: pathlib.Path, encoding: int, tmp_path: pathlib.Path) -> None:
    tmp_path.mkdir(parents=True)
    package = as_package(root, tmp_path)
    rng = np.random.default_rng(encoding)
    # a terminal page, a photo-like corner (Tight copy filter, ZRLE raw tiles), many colours
    frame = terminal_frame(6, 30, seed=encoding)
    frame[:40, :70] = rng.integers(0, 1 << 24, (40, 70), dtype=np.uint32)
    frame[50:60, 100:260] = rng.choice(rng.integers(0, 1 << 24, 40, dtype=np.uint32), (10, 160))
    height, width = frame.shape
    encoder = enc.Encoder(NOVNC_FORMAT)
    stream = update(encoder.encode(encoding, frame, 0, 0, width, height))
    # then a scroll by one text row, as the shell sends it: CopyRect + the new row
    scrolled = np.vstack([frame[16:], terminal_frame(1, 30, seed=99)])
    stream += update([enc.copy_rect(0, 0, width, height - 16, 0, 16)]
                     + encoder.encode(encoding, scrolled, 0, height - 16, width, 16))
    # and a small change elsewhere, through the same zlib streams
    scrolled[30:45, 17:90] = 0xFF00FF
    stream += update(encoder.encode(encoding, scrolled, 17, 30, 73, 15))
    assert np.array_equal(novnc_decode(package, width, height, stream), rgb_of(scrolled))

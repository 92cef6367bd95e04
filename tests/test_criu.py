"""Finding CRIU: the one ./bootstrap installs, VZFS_CRIU, and refusing what cannot work."""

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.system import Instance
from vzfs.kernel import criu


@pytest.fixture
def bootstrap_criu(monkeypatch: pytest.MonkeyPatch) -> str:
    """The criu ./bootstrap put beside this interpreter (skips when it has not run)."""
    monkeypatch.delenv(criu.ENV, raising=False)
    path = os.path.join(sys.prefix, "bin", "criu")
    if not os.access(path, os.X_OK):
        pytest.skip(f"no {path}: run ./bootstrap")
    return path


def fake_criu(tmp_path: Path, output: str) -> str:
    """An executable that answers --version with *output*, as an old or odd CRIU would."""
    path = tmp_path / "criu"
    path.write_text(f"#!/bin/sh\nprintf '%s' '{output}'\n")
    path.chmod(0o755)
    return str(path)


def test_locate_finds_bootstraps_criu(bootstrap_criu: str) -> None:
    assert criu.locate() == bootstrap_criu


def test_bootstraps_criu_is_4_or_later(bootstrap_criu: str) -> None:
    found = criu.version(bootstrap_criu)
    assert criu.parse_version(found) >= criu.MIN_VERSION
    assert criu.require(bootstrap_criu) == found
    assert criu.find() == bootstrap_criu
    assert criu.describe() == f"criu {found} {bootstrap_criu}"


@pytest.mark.system
def test_criu_check_passes(bootstrap_criu: str) -> None:
    done = subprocess.run([criu.find(), "check"], check=False, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Looks good." in done.stdout + done.stderr


def test_env_names_a_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(criu.ENV, str(tmp_path / "nothing"))
    with pytest.raises(OSError) as caught:
        criu.locate()
    assert caught.value.errno == errno.ENOENT
    assert caught.value.strerror == (f"VZFS_CRIU names {tmp_path / 'nothing'}, "
                                     "which is not an executable file")
    assert criu.describe() == f"none ({caught.value.strerror})"


def test_env_names_a_file_that_cannot_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = fake_criu(tmp_path, "Version: 4.1.1\n")
    os.chmod(path, 0o644)
    monkeypatch.setenv(criu.ENV, path)
    with pytest.raises(OSError) as caught:
        criu.locate()
    assert caught.value.errno == errno.ENOENT and "VZFS_CRIU" in caught.value.strerror


def test_env_wins_and_too_old_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = fake_criu(tmp_path, "Version: 3.17.1\n")
    monkeypatch.setenv(criu.ENV, path)
    assert criu.locate() == path
    assert criu.version(path) == "3.17.1"
    with pytest.raises(OSError) as caught:
        criu.find()
    assert caught.value.errno == errno.ENOTSUP
    assert caught.value.strerror == (f"CRIU 3.17.1 at {path} is too old: vzfs needs 4.0 or later; "
                                     "set VZFS_CRIU or run ./bootstrap")
    assert criu.describe() == f"none ({caught.value.strerror})"


@pytest.mark.parametrize("output,expected", [
    ("Version: 4.1.1\n", "4.1.1"),
    ("Version: 4.0\nGitID: v4.0-12-g0123abc\n", "4.0"),
    ("Version:4.2 \n", "4.2"),
])
def test_version_line(tmp_path: Path, output: str, expected: str) -> None:
    assert criu.version(fake_criu(tmp_path, output)) == expected


@pytest.mark.parametrize("output", ["", "criu 4.1.1\n", "Version: 4\n", "Version: four\n",
                                    "Version: 4.1.1 (dirty)\n"])
def test_version_unreadable(tmp_path: Path, output: str) -> None:
    path = fake_criu(tmp_path, output)
    with pytest.raises(OSError) as caught:
        criu.version(path)
    assert caught.value.errno == errno.EIO
    assert caught.value.strerror.startswith(f"cannot tell the version of CRIU {path}: ")


def test_version_of_what_cannot_run(tmp_path: Path) -> None:
    path = tmp_path / "criu"
    path.write_text("#!/nonexistent/interpreter\n")
    path.chmod(0o755)
    with pytest.raises(OSError) as caught:
        criu.version(str(path))
    assert caught.value.errno == errno.EIO
    assert caught.value.strerror == f"cannot run CRIU {path}: No such file or directory"


def test_version_file_names_criu(bootstrap_criu: str, instance: Instance) -> None:
    lines = (instance.mnt / "version").read_text().splitlines()
    version = dict(line.split(" ", 1) for line in lines)
    assert version["checkpoint"] == f"criu {criu.version(bootstrap_criu)} {bootstrap_criu}"
    assert version["checkpoint"].startswith("criu 4.")

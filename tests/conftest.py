"""Fixtures for system tests (real vzfs instances on real FUSE mounts, as root), and the
tiers: every test that uses a fixture in SYSTEM_FIXTURES is marked `system`, so
`pytest -m "not system"` runs the fast tiers alone."""

from collections.abc import Iterator
from typing import Any
from pathlib import Path

import pytest

from tests.system import Instance, system_ready


# Fixtures that need the real kernel, root or an outside program: each mounts, starts a
# daemon, forks namespaces or runs sshd/chromium. A test using one, directly or through
# another fixture (item.fixturenames is the closure), is a system test. Modules whose
# tests need root without any of these carry `pytestmark = pytest.mark.system` instead,
# single such tests `@pytest.mark.system`. A `slow` test (pure, but seconds long: a
# hypothesis run of hundreds of examples, a loop of killed processes) runs with them.
SYSTEM_FIXTURES = frozenset({
    "instance", "second_instance",   # a mounted vzfs daemon (here)
    "sshd",                          # test_migrate: a private sshd, two daemons
    "service",                       # test_systemd: the daemon as a Type=notify service
    "ramfs_dir",                     # test_idshift: a ramfs mounted on the host
    "container",                     # test_kernel_mounts: a real container (spawn)
    "browser",                       # test_vnc_novnc_browser: headless chromium
})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if (SYSTEM_FIXTURES.intersection(getattr(item, "fixturenames", ()))
                or item.get_closest_marker("slow")):
            item.add_marker(pytest.mark.system)


def _mounted(base: Path) -> Iterator[Instance]:
    reason = system_ready()
    if reason:
        pytest.skip(reason)
    inst = Instance(base)
    inst.mount()
    try:
        yield inst
    finally:
        inst.cleanup()


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[Instance]:
    yield from _mounted(tmp_path / "a")


@pytest.fixture
def second_instance(tmp_path: Path) -> Iterator[Instance]:
    yield from _mounted(tmp_path / "b")


@pytest.fixture(scope="session")
def vncdotool_api() -> Iterator[Any]:
    """vncdotool's blocking API. It runs twisted's reactor in a thread, which cannot be
    started again once stopped: one for the whole session, shut down at its end."""
    api = pytest.importorskip("vncdotool.api")
    yield api
    api.shutdown()

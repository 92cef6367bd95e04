"""Fixtures for system tests: real vzfs instances on real FUSE mounts, as root."""

from collections.abc import Iterator
from typing import Any
from pathlib import Path

import pytest

from tests.system import Instance, system_ready


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

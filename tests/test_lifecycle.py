"""The lifecycle table: allowed verbs, refusals with their errnos, and outcomes."""

import errno

import pytest

from vzfs.controller import lifecycle
from vzfs.controller.lifecycle import State
from vzfs.errors import VzfsError


@pytest.mark.parametrize("state, verb, nxt", [
    (State.STOPPED, "start", State.STARTING),
    (State.CRASHED, "start", State.STARTING),
    (State.RUNNING, "stop", State.STOPPING),
    (State.RUNNING, "kill", State.STOPPING),
    (State.STOPPING, "kill", State.STOPPING),
    (State.RUNNING, "restart", State.STOPPING),
])
def test_allowed(state: State, verb: str, nxt: State) -> None:
    assert lifecycle.begin("web1", state, verb) == nxt


@pytest.mark.parametrize("state, verb, words", [
    (State.RUNNING, "start", "it is already running"),
    (State.STARTING, "start", "it is already starting"),
    (State.STOPPED, "stop", "it is not running (stopped)"),
    (State.CRASHED, "kill", "it is not running (crashed)"),
    (State.STOPPED, "restart", "it is not running (stopped)"),
    (State.STOPPING, "stop", "it is stopping"),
])
def test_refused_with_ebusy(state: State, verb: str, words: str) -> None:
    with pytest.raises(VzfsError) as info:
        lifecycle.begin("web1", state, verb)
    assert info.value.errno == errno.EBUSY
    assert info.value.sentence == f"cannot {verb} domain web1: {words}"


def test_unknown_and_unavailable_verbs_are_einval() -> None:
    for verb in ("bogus", "START", "pause", "resume", "suspend"):
        with pytest.raises(VzfsError) as info:
            lifecycle.begin("web1", State.RUNNING, verb)
        assert info.value.errno == errno.EINVAL
        assert "web1" in info.value.sentence


def test_outcomes() -> None:
    assert lifecycle.outcome(State.STARTING, "started") == State.RUNNING
    assert lifecycle.outcome(State.RUNNING, "crashed") == State.CRASHED
    assert lifecycle.outcome(State.STOPPING, "crashed") == State.STOPPED
    assert lifecycle.outcome(State.RUNNING, "nonsense") == State.RUNNING
    assert lifecycle.outcome(State.RUNNING, "exited") == State.STOPPED
    assert lifecycle.outcome(State.STOPPED, "crashed") == State.CRASHED
    assert lifecycle.outcome(State.STOPPED, "exited") == State.STOPPED
    assert lifecycle.outcome(State.CRASHED, "exited") == State.CRASHED


def test_every_transition_names_a_state_and_verb() -> None:
    for (state, verb), nxt in lifecycle.VERBS.items():
        assert isinstance(state, State) and isinstance(nxt, State)
        assert verb in lifecycle.ALL_VERBS

"""The lifecycle table: allowed verbs, refusals with their errnos, and outcomes."""

import errno

import pytest

from vzfs.base.errors import VzfsError
from vzfs.model import lifecycle
from vzfs.model.lifecycle import State


@pytest.mark.parametrize("state, verb, nxt", [
    (State.STOPPED, "start", State.STARTING),
    (State.CRASHED, "start", State.STARTING),
    (State.RUNNING, "stop", State.STOPPING),
    (State.RUNNING, "kill", State.STOPPING),
    (State.STOPPING, "kill", State.STOPPING),
    (State.STARTING, "kill", State.STOPPING),
    (State.MIGRATING, "kill", State.STOPPING),
    (State.PAUSED, "kill", State.STOPPING),
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


def test_pause_resume_suspend_transitions() -> None:
    assert lifecycle.begin("web1", State.RUNNING, "pause") == State.PAUSED
    assert lifecycle.begin("web1", State.PAUSED, "resume") == State.RUNNING
    # A suspend keeps the state while CRIU works; a resume of a suspended domain starts it.
    assert lifecycle.begin("web1", State.RUNNING, "suspend") == State.RUNNING
    assert lifecycle.begin("web1", State.PAUSED, "suspend") == State.PAUSED
    assert lifecycle.begin("web1", State.SUSPENDED, "resume") == State.STARTING
    assert lifecycle.begin("web1", State.SUSPENDED, "start") == State.STARTING
    assert lifecycle.begin("web1", State.SUSPENDED, "kill") == State.STOPPED
    for state, verb in ((State.STOPPED, "pause"), (State.STOPPED, "suspend"),
                        (State.RUNNING, "resume"), (State.SUSPENDED, "stop"),
                        (State.SUSPENDED, "pause")):
        with pytest.raises(VzfsError) as info:
            lifecycle.begin("web1", state, verb)
        assert info.value.errno == errno.EBUSY
    assert lifecycle.outcome(State.RUNNING, "suspended") == State.SUSPENDED
    assert lifecycle.outcome(State.PAUSED, "suspended") == State.SUSPENDED
    assert lifecycle.outcome(State.STOPPED, "suspended") == State.SUSPENDED


def test_unknown_verbs_are_einval() -> None:
    for verb in ("bogus", "START", "freeze"):
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


def test_the_questions_asked_of_a_state_follow_the_table() -> None:
    S = State
    assert lifecycle.DOWN == {S.STOPPED, S.CRASHED, S.SUSPENDED}
    assert lifecycle.UP == {S.RUNNING, S.PAUSED}
    assert lifecycle.OFF == {S.STOPPED, S.CRASHED}
    for state in State:
        # Down: start is taken; up: a graceful stop is; off: down, and kill has nothing.
        assert lifecycle.is_down(state) == ((state, "start") in lifecycle.VERBS)
        assert lifecycle.is_up(state) == ((state, "stop") in lifecycle.VERBS)
        assert lifecycle.is_off(state) == (lifecycle.is_down(state)
                                           and (state, "kill") not in lifecycle.VERBS)
        assert not (lifecycle.is_up(state) and lifecycle.is_down(state))


@pytest.mark.parametrize("busy, words", [
    (lifecycle.Busy.SUSPEND, "it is being suspended"),
    (lifecycle.Busy.MIGRATE_OUT, "it is being migrated"),
    (lifecycle.Busy.MIGRATED_AWAY, "it is being migrated away"),
    (lifecycle.Busy.MIGRATE_IN, "it is being migrated here"),
])
def test_a_busy_domain_refuses_verbs_the_table_allows(busy: lifecycle.Busy, words: str) -> None:
    with pytest.raises(VzfsError) as info:
        lifecycle.begin("web1", State.RUNNING, "pause", busy)
    assert info.value.errno == errno.EBUSY
    assert info.value.sentence == f"cannot pause domain web1: {words}"
    assert busy.refusal("web1", "migrate").sentence == f"cannot migrate domain web1: {words}"
    # What the table refuses is said first, as without the busy.
    with pytest.raises(VzfsError) as info:
        lifecycle.begin("web1", State.RUNNING, "start", busy)
    assert info.value.sentence == "cannot start domain web1: it is already running"


def test_only_a_kill_cuts_through_a_move_out() -> None:
    assert lifecycle.begin("web1", State.MIGRATING, "kill", lifecycle.Busy.MIGRATE_OUT) \
        == State.STOPPING
    for busy in set(lifecycle.Busy) - {lifecycle.Busy.MIGRATE_OUT}:
        with pytest.raises(VzfsError) as info:
            lifecycle.begin("web1", State.RUNNING, "kill", busy)
        assert info.value.errno == errno.EBUSY


def test_a_controllers_word_for_an_end_is_an_outcome() -> None:
    assert lifecycle.ending("stopped") == "exited"
    assert lifecycle.ending("no such word") == "exited"
    for word in ("crashed", "suspended", "migrated"):
        assert lifecycle.ending(word) == word
    events = {event for _, event in lifecycle.OUTCOMES}
    assert lifecycle.ENDINGS <= events
    assert lifecycle.outcome(State.RUNNING, lifecycle.ending("stopped")) == State.STOPPED

"""The controller's state machine (controller/states.py): the table read as a whole, and the
paths through it the controller takes."""

import errno

import pytest

from vzfs.base.errors import VzfsError
from vzfs.controller import states
from vzfs.controller.states import ENDED, INIT_ENDS, OUTCOMES, SHOWN, VERBS, S
from vzfs.model.lifecycle import State as Shown

VERB_NAMES = sorted({verb for _, verb in VERBS})
EVENTS = sorted({event for _, event in OUTCOMES})


def run(state: S, *steps: str) -> S:
    """Verbs (plain) and outcomes (prefixed `=`) in turn."""
    for step in steps:
        state = states.outcome(state, step[1:]) if step.startswith("=") else \
            states.begin(state, step)
    return state


def test_every_state_shows_a_word_of_the_daemons_lifecycle() -> None:
    assert set(SHOWN) == set(S)
    # A live one a state of the daemon's, an ended one the end's name (registry.ENDED).
    assert {SHOWN[s] for s in set(S) - ENDED} <= {s.value for s in Shown}
    assert {SHOWN[s] for s in ENDED} == {"stopped", "crashed", "suspended", "migrated"}
    assert set(states.WORDS) == set(S)


@pytest.mark.parametrize("state", list(S))
@pytest.mark.parametrize("verb", VERB_NAMES)
def test_a_verb_missing_from_the_table_is_refused_with_what_the_domain_is(state: S,
                                                                        verb: str) -> None:
    if (state, verb) in VERBS:
        assert states.begin(state, verb) == VERBS[(state, verb)]
        return
    with pytest.raises(VzfsError) as info:
        states.begin(state, verb)
    if verb == "migrate_cancel":
        assert (info.value.errno, info.value.sentence) == (errno.EINVAL, "no migration is under way")
    else:
        assert info.value.errno == errno.EBUSY
        assert info.value.sentence == f"it is {states.WORDS[state]}"


def test_the_refusals_today_sentences() -> None:
    with pytest.raises(VzfsError, match="^it is paused$"):
        states.begin(S.PAUSED, "pause")
    with pytest.raises(VzfsError, match="^it is running$"):
        states.begin(S.RUNNING, "resume")
    with pytest.raises(VzfsError, match="^it is being suspended$"):
        states.begin(S.SUSPENDING_PAUSED, "resume")
    with pytest.raises(VzfsError, match="^it is being migrated$"):
        states.begin(S.CHECKING, "migrate")


def test_a_kill_is_taken_in_every_state() -> None:
    for state in S:
        if state == S.STARTING:
            continue              # (no request is served before the start is reported)
        assert (state, "kill") in VERBS, state
        assert VERBS[(state, "kill")] in (S.STOPPING, state)


def test_an_ended_domain_stays_ended() -> None:
    for (state, _), nxt in {**VERBS, **OUTCOMES}.items():
        if state in ENDED:
            assert nxt == state


@pytest.mark.parametrize("state", sorted(set(S) - ENDED, key=lambda s: s.value))
def test_init_s_end_leads_every_live_state_to_an_end_or_a_new_init(state: S) -> None:
    for end in INIT_ENDS:
        nxt = OUTCOMES[(state, end)]
        if end == "init_rebooted" and nxt not in ENDED:
            assert nxt in (S.RUNNING, S.CHECKING)   # init is made again
        else:
            assert nxt in ENDED, (state, end)
    assert OUTCOMES[(state, "init_crashed")] in (S.CRASHED, S.STOPPED, S.SUSPENDED, S.MIGRATED)


def test_every_state_is_reachable_from_the_start() -> None:
    seen = {S.STARTING}
    frontier = [S.STARTING]
    while frontier:
        state = frontier.pop()
        for (src, _), nxt in {**VERBS, **OUTCOMES}.items():
            if src == state and nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    assert seen == set(S)


@pytest.mark.parametrize("steps,end", [
    (("=started", "pause", "=frozen", "resume", "=thawed"), S.RUNNING),
    (("=started", "pause", "=frozen", "suspend", "=dumped", "=init_crashed"), S.SUSPENDED),
    (("=started", "suspend", "=dump_failed"), S.RUNNING),
    (("=started", "pause", "=frozen", "suspend", "=dump_failed"), S.PAUSED),
    (("=started", "suspend", "kill", "=dump_failed", "=init_crashed"), S.STOPPED),
    (("=started", "suspend", "kill", "=dumped", "=init_crashed"), S.SUSPENDED),
    (("=started", "migrate", "=refused"), S.RUNNING),
    (("=started", "migrate", "=checked"), S.RUNNING),
    (("=started", "migrate", "=passed", "migrate_cancel", "=undone"), S.RUNNING),
    (("=started", "migrate", "=passed", "=moved", "=init_crashed"), S.MIGRATED),
    (("=started", "migrate", "kill", "=passed", "=init_crashed"), S.STOPPED),
    (("=started", "migrate", "=passed", "kill", "=moved", "=init_stopped"), S.MIGRATED),
    (("=started", "stop", "stop", "kill", "=init_rebooted"), S.STOPPED),
    (("=started", "=init_rebooted", "=init_crashed"), S.CRASHED),
    (("=started", "pause", "=frozen", "=init_rebooted"), S.RUNNING),
    (("=started", "=init_stopped", "kill", "stop"), S.STOPPED),
])
def test_paths(steps: tuple[str, ...], end: S) -> None:
    assert run(S.STARTING, *steps) == end


def test_what_the_controller_refuses_while_busy() -> None:
    for state, verb in [(S.SUSPENDING, "pause"), (S.SUSPENDING, "migrate"),
                        (S.CHECKING, "suspend"), (S.MIGRATING, "pause"), (S.MIGRATING, "stop"),
                        (S.DUMPED, "resume"), (S.PAUSED, "migrate"), (S.STOPPING, "pause")]:
        with pytest.raises(VzfsError):
            states.begin(state, verb)

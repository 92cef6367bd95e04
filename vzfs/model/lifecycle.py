"""The domain lifecycle state machine: which verb is allowed in which state, and where it leads.

Theory of operation
-------------------
A domain is in exactly one of the states of INTERFACE.md (`stopped`, `starting`,
`running`, …). Two kinds of input move it:

* verbs a user writes to `state` (`start`, `stop`, `kill`, …) — VERBS below says,
  for each (state, verb), the transitional state the domain enters while the verb
  is carried out. A pair missing from the table is refused with EBUSY (the verb
  exists but not now) — or EINVAL for words that are not verbs at all.
  `kill` is taken from every state with processes whatever else is under way:
  it cuts a start or a stop short, and cancels a migration first (the registry
  does the cutting; a suspend writing its checkpoint still refuses it).
* outcomes reported by the controller (`started`, `start_failed`, `exited`…) —
  OUTCOMES says where each leads from each transitional state.

A long verb (a suspend writing its checkpoint, a migration) holds every other verb
off whatever the state says: the domain is `Busy` meanwhile, and a verb is refused
with EBUSY and the sentence its Busy value makes ("it is being suspended").

The table is data so that the documentation, the refusal sentences and the
tests are all derived from one place (the model is h11's `_state.py`); what the
rest of vzfs asks of a state (is anything of the domain running? may its
definition be replaced whole?) is asked here, of sets derived from the table
(DOWN, UP, OFF), never of a list of states written out elsewhere.
"""

import enum
from errno import EBUSY, EINVAL

from ..base.errors import VzfsError


class State(enum.Enum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    SUSPENDED = "suspended"
    MIGRATING = "migrating"
    STOPPING = "stopping"
    CRASHED = "crashed"


S = State

# (state, verb) -> the state the domain is in while the verb is carried out.
VERBS: dict[tuple[State, str], State] = {
    (S.STOPPED, "start"): S.STARTING,
    (S.CRASHED, "start"): S.STARTING,
    (S.RUNNING, "stop"): S.STOPPING,
    (S.PAUSED, "stop"): S.STOPPING,
    (S.RUNNING, "kill"): S.STOPPING,
    (S.PAUSED, "kill"): S.STOPPING,
    (S.STOPPING, "kill"): S.STOPPING,     # cut a graceful stop short
    (S.STARTING, "kill"): S.STOPPING,     # cut a start short
    (S.MIGRATING, "kill"): S.STOPPING,    # cancel the move, then kill
    (S.RUNNING, "restart"): S.STOPPING,
    (S.RUNNING, "pause"): S.PAUSED,
    (S.PAUSED, "resume"): S.RUNNING,
    # A suspend keeps its state while CRIU works (the domain is `busy` meanwhile): on
    # failure the domain is exactly as it was, on success it is `suspended`.
    (S.RUNNING, "suspend"): S.RUNNING,
    (S.PAUSED, "suspend"): S.PAUSED,
    (S.SUSPENDED, "start"): S.STARTING,
    (S.SUSPENDED, "resume"): S.STARTING,
    (S.SUSPENDED, "kill"): S.STOPPED,     # forget the checkpoint
}

# What the rest of vzfs asks of a state, derived from VERBS so that the answers can
# never disagree with what the verbs allow.
# Down: nothing of the domain runs (the states `start` is taken from).
DOWN = frozenset(state for state, verb in VERBS if verb == "start")
# Up: its init runs and its controller carries out requests — the freezer, live
# mounts, the screen (the states a graceful `stop` is taken from).
UP = frozenset(state for state, verb in VERBS if verb == "stop")
# Off: down, with nothing kept of a run for `kill` to forget (a suspended domain keeps
# its checkpoint): such a domain may be undefined, and its definition replaced whole.
OFF = frozenset(state for state in DOWN if (state, "kill") not in VERBS)


def is_down(state: State) -> bool:
    """Nothing of the domain runs: no processes, no cgroup, no controller."""
    return state in DOWN


def is_up(state: State) -> bool:
    """Its init runs and its controller takes requests."""
    return state in UP


def is_off(state: State) -> bool:
    """Down, and no checkpoint either: nothing of the domain exists but its definition."""
    return state in OFF


# Verbs that are part of the contract but not available in this build: refused
# with EINVAL and a sentence that says so, whatever the state.
UNAVAILABLE: dict[str, str] = {}

ALL_VERBS = frozenset(verb for _, verb in VERBS)

# (transitional state, outcome) -> resting state.
OUTCOMES: dict[tuple[State, str], State] = {
    (S.STARTING, "started"): S.RUNNING,
    (S.STARTING, "start_failed"): S.STOPPED,
    (S.STARTING, "exited"): S.STOPPED,
    (S.STOPPING, "exited"): S.STOPPED,
    (S.RUNNING, "exited"): S.STOPPED,       # a clean poweroff from inside
    (S.RUNNING, "crashed"): S.CRASHED,
    (S.PAUSED, "crashed"): S.CRASHED,
    (S.STARTING, "crashed"): S.CRASHED,
    (S.STOPPING, "crashed"): S.STOPPED,     # we asked it to go: any exit is a stop
    (S.RUNNING, "suspended"): S.SUSPENDED,
    (S.PAUSED, "suspended"): S.SUSPENDED,
    (S.STOPPED, "suspended"): S.SUSPENDED,  # a daemon that starts finds a checkpoint
    # A daemon that starts assumes `stopped` until it hears otherwise; the
    # record of a crash while it was away makes that `crashed`.
    (S.STOPPED, "crashed"): S.CRASHED,
    # A migration: the domain runs elsewhere now (the source then forgets it), or
    # it ended on its own while being moved.
    (S.MIGRATING, "migrated"): S.STOPPED,
    (S.MIGRATING, "exited"): S.STOPPED,
    (S.MIGRATING, "crashed"): S.CRASHED,
}


def _why_not(state: State, verb: str) -> str:
    if verb == "start" and state in (S.RUNNING, S.PAUSED, S.STARTING):
        return f"it is already {state.value}"
    if verb in ("stop", "kill", "restart", "pause", "suspend") and state in OFF:
        return f"it is not running ({state.value})"
    return f"it is {state.value}"


class Busy(enum.Enum):
    """A long verb under way, which holds the others off whatever the state (EBUSY);
    its value is the participle its refusals say: "it is being suspended"."""
    SUSPEND = "suspended"              # CRIU writes the checkpoint
    MIGRATE_OUT = "migrated"           # from the write to migrate_target to the move's end
    MIGRATED_AWAY = "migrated away"    # moved: forgotten here once its hooks saw it go
    MIGRATE_IN = "migrated here"       # arriving, until the source commits the move

    def holds_off(self, verb: str) -> bool:
        """Whether *verb* waits its turn: all do, but a `kill` during a move out,
        which cancels the move first."""
        return not (verb == "kill" and self is Busy.MIGRATE_OUT)

    def refusal(self, name: str, verb: str) -> VzfsError:
        return VzfsError(EBUSY, f"cannot {verb} domain {name}: it is being {self.value}")


def begin(name: str, state: State, verb: str, busy: Busy | None = None) -> State:
    """Check *verb* against *state* (and what the domain is *busy* with); return the
    transitional state or raise VzfsError."""
    if verb not in ALL_VERBS:
        raise VzfsError(EINVAL, f"cannot {verb!r} domain {name}: unknown verb "
                                f"(verbs: {', '.join(sorted(ALL_VERBS))})")
    if verb in UNAVAILABLE:
        raise VzfsError(EINVAL, f"cannot {verb} domain {name}: {UNAVAILABLE[verb]}")
    try:
        nxt = VERBS[(state, verb)]
    except KeyError:
        raise VzfsError(EBUSY, f"cannot {verb} domain {name}: {_why_not(state, verb)}") from None
    if busy is not None and busy.holds_off(verb):
        raise busy.refusal(name, verb)
    return nxt


def outcome(state: State, event: str) -> State:
    """Where a controller-reported *event* leads from *state* (unlisted: stays)."""
    return OUTCOMES.get((state, event), state)


# A run's end, in OUTCOMES' words: a controller says "stopped" for `exited`.
ENDINGS = frozenset({"exited", "crashed", "suspended", "migrated"})


def ending(word: str) -> str:
    """The OUTCOMES event of a controller's word for how a run ended (its status or
    its record in last_exit.json): `crashed`, `suspended`, `migrated` as they are,
    anything else (`stopped`) `exited`."""
    return word if word in ENDINGS else "exited"

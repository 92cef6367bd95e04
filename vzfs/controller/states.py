"""The controller's own state machine (pure): what its domain is doing now, which request
may begin, and where each outcome leads.

Theory of operation
-------------------
The daemon's model (model/lifecycle.py) is what the user sees; this one is the
controller's, finer where the controller must know more: that a checkpoint is being
written, that a migration's preflight or move is under way, that a dump has succeeded
and the tree it ended is on its way out. The domain is in exactly one State. Two kinds
of input move it:

* requests (VERBS): (state, verb) → the state while the verb is carried out. A pair
  missing from the table is refused: EBUSY "it is WORDS[state]", or, for a verb of
  NOTHING_TO_DO (a cancel with nothing to cancel), EINVAL with its sentence. A pause or
  a resume keeps its state while the freezer works (`frozen`/`thawed` move it on), so
  that a freezer that refuses leaves the domain as it was. `kill` is taken whatever
  else is under way; in a state that ends by itself (the dump or the move has ended
  the tree) and once ended, it has nothing left to do, nor has `stop`.
* outcomes (OUTCOMES): what a carried-out verb came to, and init's end. A pair missing
  from the table leaves the state as it is: whatever came first has the last word (a
  kill during a preflight: the preflight's `passed` no longer moves anything).
  Init's end is `init_stopped`, `init_crashed` or `init_rebooted` (describe_exit); every
  state has a row for each, which leads to one of the ENDED states, or (a reboot
  inside a running domain) to a live one: the controller then has init made again.

SHOWN is the word the controller's status reports for each state (the daemon's
lifecycle.State values): a suspend shows the state it began in, a migration
`migrating`, until the end.
"""

import enum
from errno import EBUSY, EINVAL

from ..base.errors import VzfsError


class State(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    SUSPENDING = "suspending"                   # CRIU writes the checkpoint of a running one
    SUSPENDING_PAUSED = "suspending-paused"     # … of a paused one
    DUMPED = "dumped"                           # the checkpoint is written; the tree goes
    CHECKING = "checking"                       # a migration's preflight
    MIGRATING = "migrating"                     # the move
    MOVED = "moved"                             # it runs on the target; the tree here goes
    STOPPING = "stopping"
    # Ended: init is gone and its end recorded (the value is the end's name).
    STOPPED = "stopped"
    CRASHED = "crashed"
    SUSPENDED = "suspended"
    MIGRATED = "migrated"


S = State
ENDED = frozenset({S.STOPPED, S.CRASHED, S.SUSPENDED, S.MIGRATED})

SHOWN: dict[State, str] = {
    S.STARTING: "starting", S.RUNNING: "running", S.PAUSED: "paused",
    S.SUSPENDING: "running", S.SUSPENDING_PAUSED: "paused", S.DUMPED: "running",
    S.CHECKING: "migrating", S.MIGRATING: "migrating", S.MOVED: "migrating",
    S.STOPPING: "stopping",
    **{s: s.value for s in ENDED},
}

# What a refusal says the domain is doing: "it is …".
WORDS: dict[State, str] = {
    **SHOWN,
    S.SUSPENDING: "being suspended", S.SUSPENDING_PAUSED: "being suspended",
    S.DUMPED: "being suspended", S.CHECKING: "being migrated", S.MIGRATING: "being migrated",
    S.MOVED: "being migrated",
}

_KILLABLE = (S.RUNNING, S.PAUSED, S.STOPPING, S.SUSPENDING, S.SUSPENDING_PAUSED,
             S.CHECKING, S.MIGRATING)
_ENDING_BY_ITSELF = (S.DUMPED, S.MOVED, *ENDED)

# (state, verb) -> the state while the verb is carried out.
VERBS: dict[tuple[State, str], State] = {
    (S.RUNNING, "pause"): S.RUNNING,
    (S.PAUSED, "resume"): S.PAUSED,
    (S.RUNNING, "suspend"): S.SUSPENDING,
    (S.PAUSED, "suspend"): S.SUSPENDING_PAUSED,
    (S.RUNNING, "migrate"): S.CHECKING,
    (S.MIGRATING, "migrate_cancel"): S.MIGRATING,
    (S.RUNNING, "stop"): S.STOPPING,
    (S.PAUSED, "stop"): S.STOPPING,
    (S.STOPPING, "stop"): S.STOPPING,           # asked already: its end is the answer
    **{(s, "kill"): S.STOPPING for s in _KILLABLE},
    **{(s, verb): s for s in _ENDING_BY_ITSELF for verb in ("stop", "kill")},
}

# Verbs refused with EINVAL, not EBUSY, where the table has no row: there is nothing
# for them to act on (the daemon takes that EINVAL for "none under way").
NOTHING_TO_DO: dict[str, str] = {
    "migrate_cancel": "no migration is under way",
}

# (state, outcome) -> the next state.
OUTCOMES: dict[tuple[State, str], State] = {
    (S.STARTING, "started"): S.RUNNING,
    (S.RUNNING, "frozen"): S.PAUSED,            # a pause; a controller taking over finds it so
    (S.PAUSED, "thawed"): S.RUNNING,
    (S.SUSPENDING, "dumped"): S.DUMPED,
    (S.SUSPENDING_PAUSED, "dumped"): S.DUMPED,
    (S.STOPPING, "dumped"): S.DUMPED,           # the checkpoint was complete before the kill
    (S.SUSPENDING, "dump_failed"): S.RUNNING,
    (S.SUSPENDING_PAUSED, "dump_failed"): S.PAUSED,
    (S.CHECKING, "refused"): S.RUNNING,
    (S.CHECKING, "checked"): S.RUNNING,         # a dry run
    (S.CHECKING, "passed"): S.MIGRATING,
    (S.MIGRATING, "undone"): S.RUNNING,
    (S.MIGRATING, "moved"): S.MOVED,
    (S.STOPPING, "moved"): S.MOVED,             # the target had every page before the kill
    # Init's end.
    **{(s, "init_stopped"): S.STOPPED
       for s in (S.STARTING, S.RUNNING, S.PAUSED, S.SUSPENDING, S.SUSPENDING_PAUSED,
                 S.CHECKING, S.MIGRATING)},
    **{(s, "init_crashed"): S.CRASHED
       for s in (S.STARTING, S.RUNNING, S.PAUSED, S.SUSPENDING, S.SUSPENDING_PAUSED,
                 S.CHECKING, S.MIGRATING)},
    # A reboot inside: init is made again, unless something else owns the tree now.
    (S.RUNNING, "init_rebooted"): S.RUNNING,
    (S.PAUSED, "init_rebooted"): S.RUNNING,
    (S.CHECKING, "init_rebooted"): S.CHECKING,
    **{(s, "init_rebooted"): S.STOPPED
       for s in (S.STARTING, S.SUSPENDING, S.SUSPENDING_PAUSED, S.MIGRATING)},
    **{(S.STOPPING, end): S.STOPPED for end in ("init_stopped", "init_crashed", "init_rebooted")},
    **{(S.DUMPED, end): S.SUSPENDED for end in ("init_stopped", "init_crashed", "init_rebooted")},
    **{(S.MOVED, end): S.MIGRATED for end in ("init_stopped", "init_crashed", "init_rebooted")},
}

INIT_ENDS = ("init_stopped", "init_crashed", "init_rebooted")


def begin(state: State, verb: str) -> State:
    """The state *verb* is carried out in, from *state*; or VzfsError (the sentence
    after the daemon's "cannot VERB domain NAME: ")."""
    try:
        return VERBS[(state, verb)]
    except KeyError:
        if verb in NOTHING_TO_DO:
            raise VzfsError(EINVAL, NOTHING_TO_DO[verb]) from None
        raise VzfsError(EBUSY, f"it is {WORDS[state]}") from None


def outcome(state: State, event: str) -> State:
    """Where *event* leads from *state* (unlisted: it stays)."""
    return OUTCOMES.get((state, event), state)

"""The one exception type vzfs raises for a refused or failed operation."""

import errno as _errno


class VzfsError(Exception):
    """An operation failed: *errno* for the surface, *sentence* for the person.

    The sentence names the object and the action, e.g.
    ``VzfsError(EBUSY, "cannot start domain web1: it is already running")``.
    Each surface's boundary turns it into its own form (FUSEError + `error`
    file, CLI message + exit code).
    """

    def __init__(self, errno: int, sentence: str) -> None:
        super().__init__(errno, sentence)
        self.errno = errno
        self.sentence = sentence

    def __str__(self) -> str:
        return self.sentence


def from_oserror(exc: OSError, what: str) -> VzfsError:
    """Wrap a kernel or engine refusal, keeping its errno and its words."""
    code = exc.errno if exc.errno else _errno.EIO
    reason = exc.strerror or str(exc)
    if exc.filename:
        reason = f"{reason} ({exc.filename})"
    return VzfsError(code, f"{what}: {reason}")

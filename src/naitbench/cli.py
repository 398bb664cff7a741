"""How every command ends on a user's mistake: the message (which file, line, field or key,
and what would be accepted) in a line or two on stderr, exit status 2, no traceback.
`NAITBENCH_TRACEBACK=1` shows the traceback instead. Errors that are not the user's (bugs,
crashes) keep their traceback."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from naitbench.errors import UserError

TRACEBACK = "NAITBENCH_TRACEBACK"
#: exit status of a command stopped by a user error (2, as argparse uses for bad arguments)
EXIT_USER_ERROR = 2


def user_error(error: BaseException) -> BaseException | None:
    """The user error behind `error` (itself, or what a Hydra instantiation wrapped), if any;
    a missing file (an input not prepared, a path mistyped) and a mandatory config value left
    out (`???`) count."""
    from omegaconf.errors import MissingMandatoryValue

    while error is not None:
        if isinstance(error, UserError | FileNotFoundError | MissingMandatoryValue):
            return error
        if type(error).__name__ != "InstantiationException":
            return None
        error = error.__cause__
    return None


@contextmanager
def reported_errors() -> Iterator[None]:
    """Run a command's body; a user error becomes its message and exit status 2."""
    try:
        yield
    except Exception as error:
        cause = user_error(error)
        if cause is None or os.environ.get(TRACEBACK, "") not in ("", "0"):
            raise
        print(f"error: {cause}", file=sys.stderr)
        print(f"(set {TRACEBACK}=1 to see where it was raised)", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)

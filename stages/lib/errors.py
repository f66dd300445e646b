"""One exception type for mistakes a user can fix, and the wrapper every stage's entry point uses."""
from __future__ import annotations

import functools
import sys
from typing import Callable


class UserError(Exception):
    """Bad input: params, a data file, a missing model. The message names the key, file or line."""


def stage_main(fn: Callable[..., None]) -> Callable[..., None]:
    """Run a stage's main(); turn a UserError into one clear line on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)

    return wrapper

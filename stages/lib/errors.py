"""One exception type for mistakes a user can fix, and the wrapper every stage's entry point uses."""
from __future__ import annotations

import errno
import functools
import sys
from typing import Callable

from .optional_packages import hide_bitsandbytes_without_gpu

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class UserError(Exception):
    """Bad input: params, a data file, a missing model. The message names the key, file or line."""


def disk_full(exc: BaseException) -> bool:
    """A full disk or quota, also when a library (safetensors, torch) re-raised it as its own error."""
    if isinstance(exc, OSError) and exc.errno in DISK_FULL:
        return True
    return "No space left on device" in str(exc) or "Disk quota exceeded" in str(exc)


def stage_main(fn: Callable[..., None]) -> Callable[..., None]:
    """Run a stage's main(); turn a UserError, or a full disk, into one clear line on stderr and exit status 2.
    On a host without a GPU the stage runs without bitsandbytes (stages.lib.optional_packages).

    Outputs are written atomically, so the interrupted write has already removed its temporary files.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        hide_bitsandbytes_without_gpu()
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        except Exception as err:  # noqa: BLE001 - only a full disk is handled; anything else re-raises
            if not disk_full(err):
                raise
            where = getattr(err, "filename", None)
            print(f"error: no space left on the device{f' writing {where}' if where else ''}: free some space "
                  "and rerun; no partial output was kept", file=sys.stderr)
            sys.exit(2)

    return wrapper

"""How every recipe ends on bad input (a config or data error): one line on stderr naming the
problem (file, row, field for data) and exit code 2, no traceback. With NEMO_REPO_DEBUG=1 in the
environment the exception propagates instead, with its traceback."""

import os
import sys

EXIT_INVALID_INPUT = 2
DEBUG_ENV = "NEMO_REPO_DEBUG"


def invalid_input(error: Exception, label: str, show: bool = True) -> int:
    """Call from an `except` block: print `label: error` (when `show`, e.g. on rank 0 only) and
    return EXIT_INVALID_INPUT; re-raise `error` when NEMO_REPO_DEBUG is set (not 0)."""
    if os.environ.get(DEBUG_ENV, "0") not in ("", "0"):
        raise error
    if show:
        print(f"{label}: {error}", file=sys.stderr, flush=True)
    return EXIT_INVALID_INPUT

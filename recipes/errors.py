"""How every recipe ends on bad input (a config or data error): one line on stderr naming the
problem (file, row, field for data; the key for a config) and exit code 2, no traceback. With
NEMO_REPO_DEBUG=1 in the environment the exception propagates instead, with its traceback."""

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


def composition_error(error: Exception) -> str:
    """One line for an override Hydra cannot apply: the key OmegaConf names (`data.nosuch=1`:
    unknown key data.nosuch; valid keys: ...), else Hydra's message without its search path."""
    from omegaconf.errors import OmegaConfBaseException

    from nemo_repo.config_schema import describe

    if isinstance(error.__cause__, OmegaConfBaseException):
        return describe(error.__cause__)
    text = str(error).split("Config search path:")[0]
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def run_hydra(main) -> None:
    """Call a @hydra.main function `main`; an override that does not compose (an unknown key
    without `+`, a missing group option, bad syntax) ends like every config error, one line
    `config error: ...` and exit 2, instead of Hydra's message and exit 1."""
    from hydra.errors import ConfigCompositionException, OverrideParseException

    from nemo_repo.training.distenv import distributed_env

    os.environ["HYDRA_FULL_ERROR"] = "1"   # Hydra raises its errors instead of printing them
    try:
        main()
    except (ConfigCompositionException, OverrideParseException) as error:
        line = ValueError(composition_error(error))
        line.__cause__ = error
        sys.exit(invalid_input(line, "config error", distributed_env().rank == 0))

"""Errors about the user's input, reported before training starts.

The command-line entry points print these as one message (what is wrong, what to do) without
a traceback; anything else is a bug and keeps its traceback.
"""


class VaeZooError(Exception):
    """Base class of errors a user can fix from the config or the files on disk."""


class ConfigError(VaeZooError, ValueError):
    """The config asks for something that cannot work (shapes, names, values)."""


class DataError(VaeZooError):
    """A dataset's files are unreadable or not what they claim to be."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A dataset's files are missing and could not be downloaded."""


def report_and_exit(error: VaeZooError, exit_code: int = 2) -> None:
    """Print a user error as one readable message (no traceback) and exit."""
    import sys

    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print(
        f"[bold red]error:[/bold red] {escape(str(error))}", soft_wrap=True, highlight=False
    )
    sys.exit(exit_code)


def report_or_reraise(error: VaeZooError) -> None:
    """For a user error inside a Hydra job: in a multirun, re-raise it (Hydra records the job
    as failed, runs the others and reports the failure after the last one); in a single run,
    print the one-line message and exit."""
    import logging

    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        logging.getLogger(__name__).error("%s", error)
        raise error
    report_and_exit(error)

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


class UntrustedFileError(VaeZooError):
    """A file asks to run code: a checkpoint holding objects other than tensors and plain values,
    or a config naming a ``_target_`` outside the trusted set. Nothing from it was run."""


class CheckpointError(VaeZooError):
    """A checkpoint is unreadable (truncated, empty, not a checkpoint) or does not fit the run."""


class RunFolderError(VaeZooError):
    """The run folder cannot be used as asked: another process holds it, it already holds a run,
    or it could not be written (e.g. the disk is full)."""


class NonFiniteLossError(VaeZooError):
    """The training loss (or the validation ELBO) became NaN or infinite."""


class Preempted(Exception):
    """The job was told to stop (SIGTERM, or SIGUSR1 from SLURM) and saved ``last.ckpt``.

    Not an error: the entry point exits with :attr:`exit_code`, ``128 + signal number`` (143 for
    SIGTERM, 138 for SIGUSR1), the status a shell gives a process ended by that signal, so a
    scheduler (SLURM ``--requeue`` / ``RequeueExit``, submitit, a retry loop) sees that the job
    did not finish and requeues it; it resumes with ``ckpt_path=last``.
    """

    def __init__(self, signal_name: str, signal_number: int, step: int, checkpoint: str):
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint
        self.exit_code = 128 + signal_number
        super().__init__(
            f"{signal_name}: stopped at step {step} and saved {checkpoint}. Exit status {self.exit_code} "
            f"(128 + {signal_name}) tells the scheduler to requeue; continue with ckpt_path=last in the same run folder."
        )


def report_and_exit(error: VaeZooError, exit_code: int = 2) -> None:
    """Print a user error as one readable message (no traceback) and exit."""
    import sys

    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print(f"[bold red]error:[/bold red] {escape(str(error))}", soft_wrap=True, highlight=False)
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


def check_non_negative(**weights: object) -> None:
    """Refuse a loss weight that is negative or not a number, named as ``model.<name>``: a
    negative β rewards the very KL it is meant to penalise, and trains without an error.

    Raises:
        ConfigError: naming each such weight and what it must be.
    """
    bad = [
        f"model.{name}={value!r}"
        for name, value in weights.items()
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0
    ]
    if bad:
        raise ConfigError(f"{', '.join(bad)}: a loss weight must be a number >= 0 (0 leaves its term out).")

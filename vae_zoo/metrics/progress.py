"""Progress of a long evaluation, with its rate and the time left.

On a terminal, a rich progress bar (rich's ``Progress``: bar, count, elapsed, remaining); in a
log file or a batch job's output, where a redrawn bar would be noise, one log line at every tenth
of the way, with the elapsed and the remaining time. Rich draws; only the choice between the two
and the log lines are written here.
"""

from __future__ import annotations

import logging
import sys
import time
from types import TracebackType

log = logging.getLogger(__name__)


class EvaluationProgress:
    """``with EvaluationProgress("test NLL, k=1000", total=10_000_000, unit="decodes") as progress:
    progress.advance(n)``: ``total`` units of work, ``advance`` after each piece done."""

    def __init__(self, description: str, total: int, unit: str = "", terminal: bool | None = None):
        self.description, self.total, self.unit = description, max(int(total), 1), unit
        self.terminal = sys.stderr.isatty() if terminal is None else terminal
        self.done, self._next_tenth, self._start = 0, 1, 0.0
        self._bar = self._task = None

    def __enter__(self) -> EvaluationProgress:
        self._start = time.monotonic()
        if self.terminal:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

            self._bar = Progress(
                "{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                "left",
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=self.total)
        return self

    def advance(self, amount: int) -> None:
        self.done += amount
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)
            return
        while self.done * 10 >= self._next_tenth * self.total and self._next_tenth <= 10:
            elapsed = time.monotonic() - self._start
            left = elapsed * (self.total - self.done) / self.done if self.done else float("nan")
            log.info(
                "%s: %d%% (%d of %d %s), %s elapsed, %s left.",
                self.description,
                self._next_tenth * 10,
                self.done,
                self.total,
                self.unit,
                _duration(elapsed),
                _duration(left),
            )
            self._next_tenth += 1

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()
        if kind is None:
            log.info("%s: done in %s.", self.description, _duration(time.monotonic() - self._start))


def _duration(seconds: float) -> str:
    if seconds != seconds:  # NaN: nothing done yet
        return "?"
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"

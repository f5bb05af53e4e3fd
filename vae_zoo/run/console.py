"""A console a person reads: Lightning's messages we know to be wrong or irrelevant for vae_zoo,
silenced narrowly (each by its message and where it comes from, never a whole category).

| message | why it does not apply |
|---|---|
| "`isinstance(treespec, LeafSpec)` is deprecated" (lightning.pytorch.utilities._pytree) | Lightning's own use of a torch API; nothing a user can change |
| "Tip: ... try installing litlogger" | an advertisement, printed at every trainer start |
| "The '...dataloader' does not have many workers" | our batches are slices of tensors in memory: workers would only add copies |
| "It is recommended to use `self.log('val/...', ..., sync_dist=True)`" | vae_zoo's epoch means are exact sums over examples, reduced across ranks once per epoch before they are logged (:class:`vae_zoo.blocks.stats.ExampleMeans`) |
| "setup plugin alembic..." (logger ``alembic``, INFO) | Alembic's start-up chatter, printed because Optuna imports it; its warnings still show |
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

_KNOWN_WARNINGS = (
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", r"lightning\.pytorch\.utilities\._pytree"),
    (r"The '\w+' does not have many workers", r"lightning\.pytorch\..*"),
    (r"It is recommended to use `self\.log\('(val|test)/", r"lightning\.pytorch\..*"),
)


class _DropMessages(logging.Filter):
    def __init__(self, *fragments: str):
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(fragment in str(record.msg) for fragment in self.fragments)


def quiet_known_noise() -> None:
    """Install the filters (idempotent: the warnings module and the logger keep one copy each)."""
    for message, module in _KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, module=module)
    # Alembic (imported by Optuna's storages, so by hparams_search=optuna) announces each of its
    # plugins at INFO: seven "setup plugin alembic..." lines before every search
    logging.getLogger("alembic").setLevel(logging.WARNING)
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropMessages) for f in rank_zero.filters):
        rank_zero.addFilter(_DropMessages("try installing [litlogger]"))


def lightning_logs_through_root() -> None:
    """One line per Lightning message. ``import lightning`` gives the ``lightning`` logger its own
    handler ("INFO: ..." on stderr) and lets its children propagate to the root logger too; under
    Hydra the root logger has the job's console handler, so every message printed twice. When
    the root logger has handlers, Lightning's own is removed (call after importing Lightning)."""
    root, lightning = logging.getLogger(), logging.getLogger("lightning")
    if root.handlers:
        for handler in [h for h in lightning.handlers if type(h) is logging.StreamHandler]:
            lightning.removeHandler(handler)


# ------------------------------------------------------------------ the console, also in train.log
# Hand-written: no library we use copies a live console to a plain file. Rich can record what one
# Console prints, but not Lightning's logging, Python warnings or print(); and a terminal's
# progress bar redraws itself (cursor up, erase line) hundreds of times per epoch. _PlainText
# plays those few terminal codes back, so the file holds what the screen finally showed.
_ESCAPE = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])|\x1b\][^\x07]*\x07|\x1b[()][0-9A-B]")


class _PlainText:
    """Turns console output (ANSI colours, ``\\r``, cursor-up and erase-line codes) into the plain
    lines a terminal would finally show. Lines more than ``reach`` rows above the cursor can no
    longer be redrawn by a progress bar and are final."""

    def __init__(self, reach: int = 64):
        self.rows: list[str] = [""]
        self.cursor = 0
        self.reach = reach

    def feed(self, text: str) -> list[str]:
        """Play ``text`` back; return the lines that became final."""
        position = 0
        for match in _ESCAPE.finditer(text):
            self._text(text[position : match.start()])
            argument, command = match.group(1), match.group(2)
            if command == "A":  # cursor up
                self.cursor = max(0, self.cursor - int(argument or 1))
            elif command == "K":  # erase line
                self.rows[self.cursor] = ""
            position = match.end()
        self._text(text[position:])
        final = len(self.rows) - 1 - self.reach
        if final <= 0 or self.cursor < final:
            return []
        done, self.rows = self.rows[:final], self.rows[final:]
        self.cursor -= final
        return done

    def pending(self) -> list[str]:
        """The lines that could still change (the live tail), without trailing empty rows."""
        rows = list(self.rows)
        while rows and not rows[-1].strip():
            rows.pop()
        return rows

    def _text(self, text: str) -> None:
        for char_run in re.split(r"(\n|\r)", text):
            if char_run == "\n":
                self.cursor += 1
                if self.cursor == len(self.rows):
                    self.rows.append("")
            elif char_run == "\r":
                self.rows[self.cursor] = ""  # a carriage return starts the line again
            elif char_run:
                self.rows[self.cursor] += char_run


class _Tee:
    """A text stream that writes to the real console and to a :class:`ConsoleLog`. Everything a
    library asks of a terminal (``isatty``, ``fileno``, ``encoding``) is answered by the real
    one, so colours and progress bars look as they would without the copy."""

    def __init__(self, stream: Any, log: ConsoleLog):
        self.stream, self.log = stream, log

    def write(self, text: str) -> int:
        self.stream.write(text)
        self.log.record(text)
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


class ConsoleLog:
    """Copy this process's console (``sys.stdout``, ``sys.stderr`` and the logging handlers that
    write to them) into a plain-text file, as a context manager.

    What is printed before the file is known is held in memory: :meth:`write_to` names the file
    once the run folder may be written (after the resume checks, so a refused resume leaves the
    folder as it was) and appends to it, so a resumed run's console follows the first one's. On
    other DDP ranks, call nothing: the copy is dropped at exit. The file is rewritten at most
    every ``flush_seconds`` and at exit, so a killed run keeps its console up to that moment.
    """

    def __init__(self, flush_seconds: float = 1.0):
        self.flush_seconds = flush_seconds
        self.path: Path | None = None
        self._plain = _PlainText()
        self._final: list[str] = []
        self._offset = 0  # where the file's live tail starts
        self._last_flush = 0.0
        self._lock = threading.Lock()
        self._saved: list[tuple[Any, str, Any]] = []

    def __enter__(self) -> ConsoleLog:
        streams = {id(sys.stdout): _Tee(sys.stdout, self), id(sys.stderr): _Tee(sys.stderr, self)}
        for name in ("stdout", "stderr"):
            self._saved.append((sys, name, getattr(sys, name)))
            setattr(sys, name, streams[id(getattr(sys, name))])
        for logger in (
            logging.getLogger(),
            logging.getLogger("lightning.pytorch"),
            logging.getLogger("lightning.fabric"),
        ):
            for handler in logger.handlers:
                if isinstance(handler, logging.StreamHandler) and id(handler.stream) in streams:
                    self._saved.append((handler, "stream", handler.stream))
                    handler.setStream(streams[id(handler.stream)])
        return self

    def __exit__(self, *exc_info: object) -> None:
        for owner, name, value in reversed(self._saved):
            if isinstance(owner, logging.StreamHandler):
                owner.setStream(value)
            else:
                setattr(owner, name, value)
        self._saved.clear()
        self.flush()

    def record(self, text: str) -> None:
        with self._lock:
            self._final += self._plain.feed(text)
        if self.path is not None and time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def write_to(self, path: Path) -> None:
        """From now on (and for everything recorded so far), the copy goes to ``path``."""
        self.path = path
        self._offset = path.stat().st_size if path.is_file() else 0
        self.flush()

    def flush(self) -> None:
        """Write the final lines, then the live tail (rewritten at the next flush)."""
        if self.path is None:
            return
        with self._lock:
            done, self._final = self._final, []
            tail = self._plain.pending()
        self._last_flush = time.monotonic()  # also after a failed write: no retry on every print
        try:
            with open(self.path, "r+" if self.path.is_file() else "w", encoding="utf-8") as file:
                file.seek(self._offset)
                file.truncate()
                for line in done:
                    file.write(line.rstrip() + "\n")
                self._offset = file.tell()
                file.writelines(line.rstrip() + "\n" for line in tail)
        except OSError:  # a full disk must not stop training; the run's checkpoints say what failed
            return

"""The evaluation report: named results with their units, the number of examples and the
standard errors they were measured with, written as ``metrics.json`` and ``metrics.md``. Below
the metrics (which fill it) and the evaluation (which writes it), so neither imports the other."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("vae_zoo.evaluation.runner")


@dataclass
class EvaluationReport:
    """Named results with units and what they were measured with.

    Attributes:
        context: what was evaluated (checkpoint, model, data, split, counts).
        metrics: name -> ``{"value": float, "unit": str, ...details}`` in the order computed.
        skipped: name -> why it was not computed.
    """

    context: dict[str, Any]
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, value: float, unit: str, **details: Any) -> None:
        self.metrics[name] = {"value": float(value), "unit": unit, **details}

    def skip(self, name: str, reason: str) -> None:
        self.skipped[name] = reason
        log.info("%s: not computed (%s)", name, reason)

    def values(self) -> dict[str, float]:
        """name -> value."""
        return {name: entry["value"] for name, entry in self.metrics.items()}

    def to_dict(self) -> dict[str, Any]:
        return {**self.context, "metrics": self.metrics, "skipped": self.skipped}

    def rows(self, notes: bool = True) -> list[tuple[str, ...]]:
        """(metric, value, unit, details[, note]) as text, for the Markdown and console tables."""
        rows = []
        for name, entry in self.metrics.items():
            details = ", ".join(
                f"{key}={_format(value)}" for key, value in entry.items() if key not in ("value", "unit", "note")
            )
            row = (name, _format(entry["value"]), entry["unit"], details)
            rows.append((*row, entry.get("note", "")) if notes else row)
        return rows

    def to_markdown(self) -> str:
        lines = [f"# Evaluation of {self.context['checkpoint']}", ""]
        lines += [f"- {key}: {value}" for key, value in self.context.items() if key != "checkpoint"]
        lines += ["", "| metric | value | unit | details | note |", "|---|---:|---|---|---|"]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in self.rows()]
        if self.skipped:
            lines += ["", "Not computed:", ""]
            lines += [f"- {name}: {reason}" for name, reason in self.skipped.items()]
        return "\n".join(lines) + "\n"

    def write(self, folder: str | Path) -> tuple[Path, Path]:
        """Write ``metrics.json`` and ``metrics.md`` into ``folder``; return their paths."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        json_path, markdown_path = folder / "metrics.json", folder / "metrics.md"
        json_path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        markdown_path.write_text(self.to_markdown())
        return json_path, markdown_path

    def print(self) -> None:
        """The table on the console (rich)."""
        from rich.console import Console
        from rich.table import Table

        title = f"vae_zoo evaluation ({self.context['split']} split, {self.context['num_examples']} examples)"
        table = Table(title=title, header_style="bold")
        table.add_column("metric")
        table.add_column("value", justify="right")
        table.add_column("unit")
        table.add_column("details", overflow="fold")
        for row in self.rows(notes=False):
            table.add_row(*row)
        console = Console()
        console.print(table)
        for name, reason in self.skipped.items():
            console.print(f"[dim]not computed: {name}: {reason}[/dim]", soft_wrap=True, highlight=False)


def _format(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or (math.isfinite(value) and value == int(value) and abs(value) < 1e6):
        return str(int(value))
    if not math.isfinite(value):
        return str(value)
    return f"{value:.2f}" if abs(value) >= 100 else f"{value:.4g}"

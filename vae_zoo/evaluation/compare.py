"""Comparing training runs: their swept settings against their final metrics, as a table
(Markdown, CSV) and a plot; ``python -m vae_zoo.compare`` (:mod:`vae_zoo.compare`) is the command.

A run's swept settings are its command-line overrides (``.hydra/overrides.yaml``) whose values
differ between the runs, else its resolved ``config.yaml``; its metrics are the last validation
and test rows of ``csv/metrics.csv`` and, when evaluated, ``evaluation/metrics.json`` as
``eval/<name>``. No Hydra needed (:func:`collect_runs`, :func:`comparison_table`).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vae_zoo.errors import ConfigError

#: Metrics plotted by default (those present in some run).
DEFAULT_PLOT_METRICS = ("val/recon", "val/kl", "eval/mig")
#: Config keys that differ between runs without being a setting (folders, file names).
_PATH_LIKE = ("paths.", "dirpath", "save_dir", "default_root_dir", "output_dir", "log_dir", "run_dir")


@dataclass
class RunRecord:
    """One run's settings and final metrics.

    Attributes:
        path: the run folder.
        label: its name in the table (the path relative to the folder given).
        overrides: command-line overrides, key -> value as written (None: no ``.hydra/overrides.yaml``).
        config: the resolved ``config.yaml`` flattened to dotted keys -> value as text.
        metrics: metric name -> value (``val/...``, ``test/...``, ``eval/...``).
    """

    path: Path
    label: str
    overrides: dict[str, str] | None
    config: dict[str, str]
    metrics: dict[str, float]


# ----------------------------------------------------------------------------- reading runs
def is_run_folder(path: Path) -> bool:
    """A training run's folder: it has the resolved ``config.yaml`` or Hydra's record of the job."""
    return (path / "config.yaml").is_file() or (path / ".hydra" / "overrides.yaml").is_file()


def _natural_key(path: Path) -> tuple[int, int | str]:
    return (0, int(path.name)) if path.name.isdigit() else (1, path.name)


def find_run_folders(paths: Sequence[str | Path]) -> list[tuple[Path, str]]:
    """Expand the given folders into run folders with their labels: a run folder is itself; any
    other folder (a Hydra multirun folder) stands for the run folders directly inside it.

    Raises:
        ConfigError: a path is not a folder, or no run folder is found.
    """
    found: list[tuple[Path, str]] = []
    for given in map(Path, paths):
        if not given.is_dir():
            raise ConfigError(f"{given} is not a folder: give run folders or a multirun folder.")
        if is_run_folder(given):
            found.append((given, given.name))
            continue
        runs = sorted((child for child in given.iterdir() if child.is_dir() and is_run_folder(child)), key=_natural_key)
        if not runs:
            raise ConfigError(
                f"No run folders in {given}: a run folder holds config.yaml (written by python -m vae_zoo.train)."
            )
        found += [(run, run.name if len(paths) == 1 else f"{given.name}/{run.name}") for run in runs]
    return found


def read_overrides(run: Path) -> dict[str, str] | None:
    """``.hydra/overrides.yaml`` as key -> value text (``+``/``++`` dropped), or None."""
    from omegaconf import OmegaConf

    path = run / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return None
    overrides = {}
    for line in OmegaConf.to_container(OmegaConf.load(path)):
        key, _, value = str(line).partition("=")
        overrides[key.lstrip("+")] = value
    return overrides


def read_config(run: Path) -> dict[str, str]:
    """The resolved ``config.yaml`` flattened to dotted keys -> value text ({} if absent)."""
    from omegaconf import OmegaConf

    from vae_zoo.run.config import flatten_config

    path = run / "config.yaml"
    return flatten_config(OmegaConf.load(path)) if path.is_file() else {}


def _last_values(rows: list[dict[str, str]], prefix: str) -> dict[str, float]:
    """The ``prefix`` metrics of the last row that has any (without ``kl_dim/<i>``)."""
    for row in reversed(rows):
        values = {key: float(value) for key, value in row.items() if key.startswith(prefix) and value not in ("", None)}
        if values:
            return {key: value for key, value in values.items() if "/kl_dim/" not in key}
    return {}


def read_metrics(run: Path) -> dict[str, float]:
    """Final ``val/...`` and ``test/...`` metrics from ``csv/metrics.csv`` and ``eval/...`` from
    ``evaluation/metrics.json``; whatever of them exists."""
    metrics: dict[str, float] = {}
    csv_path = run / "csv" / "metrics.csv"
    if csv_path.is_file():
        with open(csv_path, newline="") as f:
            rows = list(csv.DictReader(f))
        metrics.update(_last_values(rows, "val/"))
        metrics.update(_last_values(rows, "test/"))
    json_path = run / "evaluation" / "metrics.json"
    if json_path.is_file():
        evaluation = json.loads(json_path.read_text())
        metrics.update({f"eval/{name}": float(entry["value"]) for name, entry in evaluation.get("metrics", {}).items()})
    return metrics


def collect_runs(paths: Sequence[str | Path]) -> list[RunRecord]:
    """Read every run under ``paths`` (see :func:`find_run_folders`)."""
    return [
        RunRecord(
            path=run, label=label, overrides=read_overrides(run), config=read_config(run), metrics=read_metrics(run)
        )
        for run, label in find_run_folders(paths)
    ]


# ------------------------------------------------------------------------------ the table
def swept_settings(runs: Sequence[RunRecord]) -> tuple[list[str], list[dict[str, str]]]:
    """The settings that differ between runs, and each run's value of them (``""``: not set).

    From the command-line overrides when every run has them, else from the resolved configs
    (paths and folders left out). With one run there is nothing swept.
    """
    if all(run.overrides is not None for run in runs):
        settings = [run.overrides for run in runs]
        path_like: tuple[str, ...] = ("hydra.",)
    else:
        settings = [run.config for run in runs]
        path_like = _PATH_LIKE
    keys = list(dict.fromkeys(key for setting in settings for key in setting))
    swept = [
        key
        for key in keys
        if not any(part in key for part in path_like) and len({setting.get(key, "") for setting in settings}) > 1
    ]
    return swept, [{key: setting.get(key, "") for key in swept} for setting in settings]


def comparison_table(runs: Sequence[RunRecord]) -> tuple[list[str], list[list[str | float | None]]]:
    """Header and rows: ``run``, the swept settings, then every metric any run has (``val/``,
    ``test/``, ``eval/`` in that order, each in first-seen order); None where a run lacks one."""
    swept, values = swept_settings(runs)
    metric_names = list(dict.fromkeys(name for run in runs for name in run.metrics))
    order = {"val": 0, "test": 1, "eval": 2}
    metric_names.sort(key=lambda name: order.get(name.split("/", 1)[0], 3))  # stable within a group
    header = ["run", *swept, *metric_names]
    rows = [
        [run.label, *(value[key] for key in swept), *(run.metrics.get(name) for name in metric_names)]
        for run, value in zip(runs, values)
    ]
    return header, rows


def _cell(value: str | float | None) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value == int(value) and abs(value) < 1e6:
            return str(int(value))
        return f"{value:.2f}" if abs(value) >= 100 else f"{value:.4g}"
    return str(value)


def to_markdown(header: Sequence[str], rows: Sequence[Sequence[str | float | None]]) -> str:
    """A GitHub Markdown table (``|`` in cells escaped)."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    numeric = [any(isinstance(row[i], float) for row in rows) for i in range(len(header))]
    aligns = ["---:" if is_numeric else "---" for is_numeric in numeric]
    return (
        "\n".join([line(header), "|" + "|".join(aligns) + "|", *(line([_cell(v) for v in row]) for row in rows)]) + "\n"
    )


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[str | float | None]]) -> None:
    """Full-precision values; empty where a run lacks a metric."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows([["" if value is None else value for value in row] for row in rows])


# ------------------------------------------------------------------------------- the plot
def _as_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def plot_comparison(path: Path, runs: Sequence[RunRecord], metrics: Sequence[str] = DEFAULT_PLOT_METRICS) -> list[str]:
    """One panel per metric (those some run has) against the swept setting, saved as PNG.

    Returns the metrics plotted (none: no PNG is written).
    """
    from matplotlib.figure import Figure  # not pyplot: the process's backend is left alone

    present = [name for name in metrics if any(name in run.metrics for run in runs)]
    if not present:
        return []
    swept, values = swept_settings(runs)
    numeric = [_as_float(value[swept[0]]) for value in values] if len(swept) == 1 else []
    if numeric and all(x is not None for x in numeric):
        xs, xlabel, ticks = numeric, swept[0], None
    else:  # one tick per run, labelled by its settings
        xs = list(range(len(runs)))
        xlabel = ", ".join(swept) if swept else "run"
        ticks = [", ".join(value[key] for key in swept) if swept else run.label for run, value in zip(runs, values)]
    order = sorted(range(len(runs)), key=lambda i: xs[i])
    figure = Figure(figsize=(4.0 * len(present), 3.4), dpi=100)
    axes = figure.subplots(1, len(present), squeeze=False)
    for axis, name in zip(axes[0], present):
        points = [(xs[i], runs[i].metrics[name]) for i in order if name in runs[i].metrics]
        axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", color="tab:blue")
        axis.set(title=name, xlabel=xlabel, ylabel=unit_of(name))
        axis.ticklabel_format(axis="y", useOffset=False)
        if ticks is not None:
            axis.set_xticks(range(len(runs)), ticks, rotation=30, ha="right", fontsize=8)
        elif min(xs) > 0 and max(xs) / min(xs) >= 8:
            axis.set_xscale("log")
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    return present


def unit_of(metric: str) -> str:
    """The unit of a logged or evaluated metric, from its name ("" for unitless scores)."""
    name = metric.rsplit("/", 1)[-1]
    if "bits_per_dim" in name:
        return "bits/dim"
    if name in ("elbo", "recon", "kl", "loss", "nll") or metric.split("/")[-2:-1] == ["kl_dim"]:
        return "nats/example"
    return {"active_units": "dimensions", "psnr": "dB", "perplexity": "codes", "dead_codes": "codes"}.get(name, "")


# ---------------------------------------------------------------------------- entry point
@dataclass
class ComparisonFiles:
    markdown: Path
    csv: Path
    plot: Path | None


def compare(
    paths: Sequence[str | Path],
    output_dir: str | Path | None = None,
    plot_metrics: Sequence[str] = DEFAULT_PLOT_METRICS,
) -> ComparisonFiles:
    """Collect the runs, write ``comparison.md``, ``comparison.csv`` and ``comparison.png``
    (when a plotted metric exists) into ``output_dir`` (default: see the module docstring)."""
    runs = collect_runs(paths)
    if output_dir is None:
        single = Path(paths[0]) if len(paths) == 1 else None
        output_dir = single if single is not None and not is_run_folder(single) else Path.cwd()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    header, rows = comparison_table(runs)
    files = ComparisonFiles(output_dir / "comparison.md", output_dir / "comparison.csv", output_dir / "comparison.png")
    files.markdown.write_text(to_markdown(header, rows))
    write_csv(files.csv, header, rows)
    if not plot_comparison(files.plot, runs, plot_metrics):
        files.plot = None
    return files

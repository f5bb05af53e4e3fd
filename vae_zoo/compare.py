"""Compare runs: ``python -m vae_zoo.compare <run folders or multirun folders> [-o DIR]``.

One table of what was swept against the final metrics, as Markdown and CSV, and one plot:

* **Swept settings**: the command-line overrides (each run's ``.hydra/overrides.yaml``) whose
  values differ between the runs, e.g. ``model.beta``. If a run has no such file, the runs'
  resolved ``config.yaml`` files are compared instead (leaving out paths and folders).
* **Metrics**: from each run's ``csv/metrics.csv``, the last row with validation values
  (``val/...``) and the last with test values (``test/...``), without the per-dimension
  ``kl_dim/<i>``; and, if ``python -m vae_zoo.evaluate`` was run, every number of
  ``evaluation/metrics.json`` as ``eval/<name>``. Units are those of the run: nats per example
  for ELBO, recon, KL and NLL, bits/dim for ``bits_per_dim``.
* **Plot**: each of ``--plot`` (default ``val/recon``, ``val/kl``, ``eval/mig``; those no run has
  are left out) against the swept value, one panel each: a numeric axis when one numeric
  setting was swept (logarithmic when it spans a factor of 8 or more), else one tick per run.

Written as ``comparison.md``, ``comparison.csv`` and ``comparison.png`` into ``-o`` (default:
the multirun folder when one was given, else the current folder). No Hydra needed; the
functions work on their own (:func:`collect_runs`, :func:`comparison_table`).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from vae_zoo.errors import VaeZooError, report_and_exit
from vae_zoo.evaluation.compare import DEFAULT_PLOT_METRICS, compare


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m vae_zoo.compare",
        description="Table (Markdown, CSV) and plot of swept settings against final metrics of training runs.",
    )
    parser.add_argument("paths", nargs="+", help="run folders, or multirun folders (their numbered run folders)")
    parser.add_argument(
        "-o", "--output", default=None, help="folder for comparison.md/.csv/.png (default: the multirun folder, else .)"
    )
    parser.add_argument(
        "--plot",
        nargs="+",
        default=list(DEFAULT_PLOT_METRICS),
        metavar="METRIC",
        help="metrics to plot (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    try:
        files = compare(args.paths, args.output, args.plot)
    except VaeZooError as error:
        report_and_exit(error)
    from rich.console import Console
    from rich.markup import escape

    console = Console()
    console.print(files.markdown.read_text(), soft_wrap=True, highlight=False, markup=False)
    for name, path in (("table", files.markdown), ("csv", files.csv), ("plot", files.plot)):
        if path is not None:
            console.print(f"[bold]{name}:[/bold] {escape(str(path))}", soft_wrap=True, highlight=False)


if __name__ == "__main__":
    main()

"""A W&B workspace for comparing the runs of a project or of one sweep: ``python -m vae_zoo.dashboard``.

    python -m vae_zoo.dashboard --entity <you> --project vae_zoo                 # all runs of the project
    python -m vae_zoo.dashboard --entity <you> --project vae_zoo --group <sweep> # the runs of one multirun
    python -m vae_zoo.dashboard --project vae_zoo --json workspace.json          # offline: the spec, not saved

Built with W&B's ``wandb-workspaces`` library (``pip install 'vae_zoo[dashboard]'``). The panels:

* **ELBO**: the validation ELBO, reconstruction and KL and the training loss (nats per example)
  over steps, one line per model (runs grouped by ``model._target_``, mean and range);
* **rate-distortion**: each run's validation KL (rate) against its reconstruction term (distortion);
* **latent usage**: active units, the KL of every latent dimension (``val/kl_dim/<i>``), the KL
  bar chart;
* **pictures**: every picture a run logs (reconstructions, prior samples, traversals, ...).

Every key comes from the names the models and callbacks log under (:mod:`vae_zoo.blocks.stats`,
:func:`vae_zoo.callbacks.media.media_key` of each picture callback's ``name``), so a renamed metric
renames its panel; ``tests/test_dashboard.py`` checks each panel's key against a real offline run.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path

from vae_zoo.evaluation.dashboard import workspace


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m vae_zoo.dashboard", description=__doc__.split("\n\n")[0])
    parser.add_argument("--entity", default=None, help="W&B entity (user or team); default: $WANDB_ENTITY")
    parser.add_argument("--project", required=True, help="the W&B project the runs logged to (logger.wandb.project)")
    parser.add_argument(
        "--group", default=None, help="only the runs of this W&B group (a multirun's sweep folder name)"
    )
    parser.add_argument("--name", default=None, help="the workspace's name")
    parser.add_argument(
        "--json", type=Path, default=None, help="write the workspace's spec to this file instead of saving it to W&B"
    )
    args = parser.parse_args(argv)
    entity = args.entity or os.environ.get("WANDB_ENTITY") or ("offline" if args.json else None)
    if entity is None:
        parser.error("give --entity (or set WANDB_ENTITY): the workspace is saved under it")
    built = workspace(entity, args.project, args.group, args.name)
    if args.json:
        spec = built._to_model().model_dump(by_alias=True)  # what W&B would store
        args.json.write_text(json.dumps(spec, indent=1, default=str))
        print(f"wrote {args.json}")
        return
    built.save()
    print(f"saved the workspace: {built.url}")


if __name__ == "__main__":
    main()

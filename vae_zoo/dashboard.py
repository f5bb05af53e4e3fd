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

Every key comes from the names the models and callbacks log under (:mod:`vae_zoo.stats`,
:func:`vae_zoo.callbacks.media.media_key` of each picture callback's ``name``), so a renamed metric
renames its panel; ``tests/test_dashboard.py`` checks each panel's key against a real offline run.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vae_zoo.extras import require
from vae_zoo.stats import ACTIVE_UNITS, BITS_PER_DIM, ELBO_TERMS, KL_PER_DIM, metric_key

#: The config key the runs are grouped by: the model's class (W&B's run config is the resolved Hydra config).
GROUP_BY = "model._target_"


def _workspaces() -> tuple[Any, Any]:
    require("dashboard", "The W&B dashboard (python -m vae_zoo.dashboard)")
    import wandb_workspaces.reports.v2 as reports
    import wandb_workspaces.workspaces as workspaces

    return workspaces, reports


def picture_names() -> list[str]:
    """The names of the pictures the callbacks log (``media/<name>``)."""
    from vae_zoo.callbacks.images import MediaCallback

    return [callback.name for callback in MediaCallback.__subclasses__()]


def workspace(entity: str, project: str, group: str | None = None, name: str | None = None) -> Any:
    """The workspace (a ``wandb_workspaces.workspaces.Workspace``, not yet saved) for the runs of
    ``project``, or only those of the W&B run group ``group`` (a multirun's sweep folder name)."""
    ws, wr = _workspaces()
    from vae_zoo.callbacks.media import media_key

    def line(stage: str, term: str, title: str) -> Any:
        return wr.LinePlot(
            title=title,
            y=[metric_key(stage, term)],
            groupby=GROUP_BY,
            groupby_aggfunc="mean",
            groupby_rangefunc="minmax",
        )

    loss, elbo, recon, kl = ELBO_TERMS
    curves = ws.Section(
        name="ELBO (nats per example)",
        is_open=True,
        panels=[
            line("val", elbo, "validation ELBO"),
            line("val", recon, "validation reconstruction, -E_q[log p(x|z)]"),
            line("val", kl, "validation KL(q(z|x) || p(z))"),
            line("train", loss, "training loss (the objective)"),
            line("val", BITS_PER_DIM, "validation bits/dim"),
        ],
    )
    rate_distortion = ws.Section(
        name="Rate-distortion",
        is_open=True,
        panels=[
            wr.ScatterPlot(
                title="rate (KL) vs distortion (reconstruction), nats per example, validation",
                x=metric_key("val", kl),
                y=metric_key("val", recon),
            ),
        ],
    )
    latents = ws.Section(
        name="Latent usage",
        is_open=True,
        panels=[
            line("val", ACTIVE_UNITS, "active units (Cov_x E_q[z_u] > 0.01)"),
            wr.LinePlot(
                title="KL of each latent dimension, nats", metric_regex=f"^{metric_key('val', KL_PER_DIM)}/[0-9]+$"
            ),
            wr.MediaBrowser(title="KL per dimension", media_keys=[media_key("kl_per_dim")]),
        ],
    )
    pictures = ws.Section(
        name="Pictures",
        is_open=True,
        panels=[
            wr.MediaBrowser(title=picture.replace("_", " "), media_keys=[media_key(picture)])
            for picture in picture_names()
            if picture != "kl_per_dim"
        ],
    )
    runs = ws.RunsetSettings(groupby=[ws.Config(GROUP_BY)], filters=[ws.Metric("Group") == group] if group else [])
    return ws.Workspace(
        entity=entity,
        project=project,
        name=name or f"vae_zoo: {group or project}",
        sections=[curves, rate_distortion, latents, pictures],
        runset_settings=runs,
    )


def panel_keys(built: Any) -> dict[str, list[str]]:
    """What the panels of a workspace read: ``{"metrics": [...], "regex": [...], "media": [...], "config": [...]}``."""
    keys: dict[str, list[str]] = {"metrics": [], "regex": [], "media": [], "config": []}
    for section in built.sections:
        for panel in section.panels:
            for attribute in ("x", "y", "z", "metrics"):
                value = getattr(panel, attribute, None) or []
                keys["metrics"] += [str(key) for key in ([value] if isinstance(value, str) else value) if key != "Step"]
            if getattr(panel, "metric_regex", None):
                keys["regex"].append(panel.metric_regex)
            keys["media"] += list(getattr(panel, "media_keys", None) or [])
            if getattr(panel, "groupby", None):
                keys["config"].append(str(panel.groupby))
    keys["config"] += [GROUP_BY]
    return keys


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
    import os

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

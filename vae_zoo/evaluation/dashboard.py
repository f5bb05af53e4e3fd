"""The W&B workspace that compares the runs of a project or of one sweep, built with W&B's
``wandb-workspaces`` library; ``python -m vae_zoo.dashboard`` (:mod:`vae_zoo.dashboard`) is the
command, which lists the panels. Every key comes from the names the models and callbacks log
under (:mod:`vae_zoo.blocks.stats`, :func:`vae_zoo.callbacks.media.media_key`), so a renamed
metric renames its panel."""

from __future__ import annotations

from typing import Any

from vae_zoo.blocks.stats import ACTIVE_UNITS, BITS_PER_DIM, ELBO_TERMS, KL_PER_DIM, metric_key
from vae_zoo.support.extras import require

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

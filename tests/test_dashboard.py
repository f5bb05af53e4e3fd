"""The W&B workspace (vae_zoo/evaluation/dashboard.py) is built offline, and every panel reads a key that real
offline W&B runs logged: a renamed metric cannot leave a dead panel."""

from __future__ import annotations

import json
import re

import pytest

from vae_zoo.dashboard import main
from vae_zoo.evaluation.dashboard import panel_keys, workspace
from vae_zoo.run.config import compose_config
from vae_zoo.run.experiment import train

from conftest import TINY_DATA, TINY_NET, TINY_RUN
from wandb_records import config, history, read_records

NEEDS = "wandb_workspaces"  # the dashboard extra (in .[dev]); a venv without it skips these tests


@pytest.fixture(scope="module")
def logged(tmp_path_factory) -> tuple[set[str], set[str], list[dict]]:
    """Keys logged by an offline W&B run of a CVAE (every Gaussian picture and the class grid) and
    of a VQ-VAE (its codebook picture), and the runs' configs."""
    pytest.importorskip(NEEDS)
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    scalars, media, configs = set(), set(), []
    runs = {"cvae": [*TINY_NET["gaussian"]], "vq_vae": TINY_NET["vq_vae"]}
    try:
        for model, net in runs.items():
            folder = tmp_path_factory.mktemp(model)
            train(
                compose_config(
                    [
                        *TINY_DATA,
                        *TINY_RUN,
                        *net,
                        f"model={model}",
                        "logger=wandb",
                        "test=false",
                        "trainer.log_every_n_steps=4",
                    ],
                    output_dir=folder,
                )
            )
            [records_file] = folder.glob("wandb/offline-run-*/run-*.wandb")
            records = read_records(records_file)
            for row in history(records):
                for key, value in row.items():
                    if key.endswith("/_type"):  # a picture: W&B logs it as <key>/_type, <key>/filenames, ...
                        if value.startswith("image"):
                            media.add(key.removesuffix("/_type"))
                    elif not key.startswith("media/"):
                        scalars.add(key)
            configs.append(config(records))
    finally:
        monkeypatch.undo()
    return scalars, media, configs


def test_every_panel_reads_a_key_a_real_run_logged(logged):
    scalars, media, configs = logged
    keys = panel_keys(workspace("someone", "vae_zoo", group="2026-12-01_12-00-00"))
    assert keys["metrics"] and keys["media"] and keys["regex"]
    assert not set(keys["metrics"]) - scalars, (set(keys["metrics"]) - scalars, sorted(scalars))
    assert not set(keys["media"]) - media, (set(keys["media"]) - media, sorted(media))
    for pattern in keys["regex"]:
        assert any(re.match(pattern, key) for key in scalars), pattern
    for dotted in set(keys["config"]):  # the grouping key is in the run config
        for run_config in configs:
            node = run_config
            for part in dotted.split("."):
                node = node[part]
            assert node.startswith("vae_zoo.models.")


def test_the_command_writes_the_workspace_spec_offline(tmp_path, capsys):
    pytest.importorskip(NEEDS)
    main(["--project", "vae_zoo", "--group", "my-sweep", "--json", str(tmp_path / "workspace.json")])
    spec = json.loads((tmp_path / "workspace.json").read_text())
    text = json.dumps(spec)
    assert spec["project"] == "vae_zoo" and '"value": "my-sweep"' in text
    assert "val/elbo" in text and "media/reconstructions" in text and "wrote" in capsys.readouterr().out

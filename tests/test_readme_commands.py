"""Every ``python -m vae_zoo.train`` command the README shows composes, and builds the data and
model it names.

The commands are read from README.md itself, so a command added there is checked here without
anyone writing a test for it, and a renamed key or group fails the suite (as ``-m model.beta=1,4,16``
under the default ``model=vae`` did: the VAE has no ``beta``). Sweeps are expanded: each value of a
``-m`` sweep is composed. Placeholders (``<run folder>``, ``/path/to/folder``) become a temporary
folder; data is built, not read (no download), and the trainer is not built (the GPU commands
need CUDA). Running the commands for real is the job of the CLI tests; which test runs which
README command is listed in the notes of issue 16.
"""

from __future__ import annotations

import itertools
import re
import shlex
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from vae_zoo.models.data_fit import check_compatible
from vae_zoo.run.config import config_dir
from vae_zoo.run.experiment import instantiate

from conftest import REPO, make_vq_vae_run

# continuing a run folder needs the folder's own config.yaml: tests/test_faults.py runs those from the CLI
NEEDS_A_RUN_FOLDER = "hydra.run.dir="


def readme_train_commands() -> list[str]:
    """The train commands of README.md: lines of its bash blocks (continuations joined, comments
    dropped) and the inline ones."""
    text = (REPO / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" # ")[0].strip()
            if "python -m vae_zoo.train" in line:
                commands.append(line[line.index("python -m vae_zoo.train") :].split("&&")[0].strip())
    for inline in re.findall(r"`((?:PYTHONPATH=\S+ )?python\s+-m\s+vae_zoo\.train\s[^`]*)`", text):
        commands.append(" ".join(inline.split()))
    return sorted(set(commands))


def expand(command: str, placeholder: Path) -> tuple[list[str], list[list[str]]]:
    """The PYTHONPATH entries and, for each job of the command, its overrides."""
    words = shlex.split(re.sub(r"<[^>]*>|/path/to/folder|/data\b", str(placeholder), command))
    python_path = [word.split("=", 1)[1] for word in words if word.startswith("PYTHONPATH=")]
    args, rest = [], iter(words[words.index("vae_zoo.train") + 1 :])
    for word in rest:
        if word == "--cfg":  # print the config instead of running: its argument (job, hydra, all) goes too
            next(rest)
        elif word != "-m":
            args.append(word)
    parsed = OverridesParser.create().parse_overrides(args)
    choices = []
    for override, text in zip(parsed, args):
        if override.is_sweep_override():
            key = text.split("=", 1)[0]
            choices.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            choices.append([text])
    return python_path, [list(job) for job in itertools.product(*choices)]


COMMANDS = readme_train_commands()


def test_the_readme_has_the_commands_this_test_expects():
    assert len(COMMANDS) >= 20
    assert any("hydra/launcher=slurm" in command for command in COMMANDS)
    assert any("PYTHONPATH=docs/examples" in command for command in COMMANDS)


@pytest.mark.parametrize("command", [c for c in COMMANDS if NEEDS_A_RUN_FOLDER not in c])
def test_readme_train_command_composes_and_builds(command, tmp_path, monkeypatch):
    python_path, jobs = expand(command, tmp_path)
    for entry in python_path:
        monkeypatch.syspath_prepend(str(REPO / entry))
    try:
        for overrides in jobs:
            compose_and_build(overrides, tmp_path)
    finally:
        sys.modules.pop("mmd_vae", None)  # the README's example variant, imported from docs/examples: forgotten


def compose_and_build(overrides: list[str], tmp_path: Path) -> None:
    """Compose one job of a README command as the CLI would, and build its data and model. A
    second stage (``model.first_stage.path=<run>``) gets an untrained first-stage run folder there,
    made with the command's data settings."""
    for override in overrides:
        if override.startswith("model.first_stage.path="):
            data = [o for o in overrides if o.startswith("data")]
            make_vq_vae_run(Path(override.split("=", 1)[1]), [*data, f"paths.data_dir={tmp_path}"])
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[*overrides, f"paths.data_dir={tmp_path}", f"paths.log_dir={tmp_path}"],
            return_hydra_config=True,
        )
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model)
    check_compatible(datamodule, model)
    if "hydra/launcher=slurm" in overrides:  # what the README says the preset does
        launcher = cfg.hydra.launcher
        assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (
            cfg.trainer.num_nodes,
            cfg.trainer.devices,
            cfg.trainer.devices,
        )

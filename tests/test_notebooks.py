"""The notebooks in notebooks/ run top to bottom on tiny settings, are stored without outputs, and
a broken one fails.

Each notebook has one cell tagged ``parameters`` (papermill's convention); the tests run it with
papermill, which injects the tiny values below after that cell, in a fresh Jupyter kernel of this
Python. The notebooks' defaults (MNIST, 10 epochs) are what a person runs; here they train for one
epoch on the MNIST fixture files or on a few procedural sprites. A notebook checks its own
numbers where there is something to check (the KL per dimension adds up to the logged KL, the
AUROC agrees with scikit-learn's, PSNR matches 10 log10(1/MSE)), so a wrong result fails too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill
import pytest

from conftest import REPO, TINY_DATA, TINY_NET, TINY_RUN, make_mnist_files

NOTEBOOKS = REPO / "notebooks"
PICTURES = [
    "callbacks.reconstructions.num_images=8",
    "callbacks.prior_samples.num_images=8",
    "callbacks.interpolations.num_pairs=2",
]
TINY_MNIST = ["data.val_size=50", "data.eval_batch_size=100", *PICTURES]
TINY_MLP = ["model.encoder.hidden=[32]", "model.decoder.hidden=[32]"]
TINY_CONV = ["model.latent_dim=4", "model.encoder.hidden_channels=[8,8]", "model.encoder.fc_features=32"]


def tiny_parameters(data_root: Path, output_root: Path) -> dict[str, dict]:
    """Per notebook: the values that replace its parameters cell, and how many pictures (PNG
    outputs) it shows."""
    mnist = {"data_root": str(data_root), "max_epochs": 1, "output_root": str(output_root)}
    return {
        "01_quickstart": {**mnist, "latent_dim": 4, "overrides": [*TINY_MNIST, *TINY_MLP]},
        "02_latent_space": {**mnist, "overrides": [*TINY_MNIST, *TINY_MLP]},
        "03_anomaly_detection": {**mnist, "importance_samples": 8, "overrides": [*TINY_MNIST, *TINY_MLP]},
        "04_comparing_runs": {
            "betas": [1, 16],
            "max_epochs": 1,
            "output_root": str(output_root),
            "overrides": [
                *TINY_DATA,
                *TINY_NET["gaussian"],
                *(o for o in TINY_RUN if not o.startswith(("trainer.max_epochs", "callbacks.progress_bar"))),
            ],
        },
        "05_denoising": {**mnist, "overrides": [*TINY_MNIST, *TINY_CONV]},
    }


PICTURES_SHOWN = {
    "01_quickstart": 6,
    "02_latent_space": 4,
    "03_anomaly_detection": 3,
    "04_comparing_runs": 4,
    "05_denoising": 2,
}


def notebook_names() -> list[str]:
    return sorted(path.stem for path in NOTEBOOKS.glob("*.ipynb"))


def execute(name_or_path: str | Path, tmp_path: Path, parameters: dict) -> nbformat.NotebookNode:
    source = name_or_path if isinstance(name_or_path, Path) else NOTEBOOKS / f"{name_or_path}.ipynb"
    output = tmp_path / f"{source.stem}.executed.ipynb"
    papermill.execute_notebook(
        str(source),
        str(output),
        parameters=parameters,
        cwd=str(tmp_path),
        kernel_name="python3",
        progress_bar=False,
        execution_timeout=300,  # a cell that hangs fails, rather than the suite
    )
    return nbformat.read(output, as_version=4)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return make_mnist_files(tmp_path_factory.mktemp("data"))


def test_every_notebook_has_tiny_settings_and_is_stored_clean():
    names = notebook_names()
    assert names == sorted(tiny_parameters(Path("d"), Path("o"))) == sorted(PICTURES_SHOWN)
    for name in names:
        notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        nbformat.validate(notebook)
        code = [cell for cell in notebook.cells if cell.cell_type == "code"]
        assert all(not cell.outputs and cell.execution_count is None for cell in code), f"{name} is stored with outputs"
        tagged = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
        assert len(tagged) == 1 and tagged[0] is code[0], (
            f"{name}: the first code cell must be the one tagged parameters"
        )
        assert notebook.cells[0].cell_type == "markdown" and notebook.cells[0].source.startswith("# ")
        # every tiny parameter replaces one the notebook declares (papermill would add unknown ones silently)
        declared = set(papermill.inspect_notebook(str(NOTEBOOKS / f"{name}.ipynb")))
        assert set(tiny_parameters(Path("d"), Path("o"))[name]) <= declared, name


@pytest.mark.slow
@pytest.mark.parametrize("name", notebook_names())
def test_notebook_runs_top_to_bottom(name, data_root, tmp_path):
    executed = execute(name, tmp_path, tiny_parameters(data_root, tmp_path / "runs")[name])
    code = [cell for cell in executed.cells if cell.cell_type == "code"]
    assert all(cell.execution_count is not None for cell in code)
    outputs = [output for cell in code for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    printed = "".join(output.get("text", "") for output in outputs)
    for noise in ("litlogger", "LeafSpec"):  # filtered as on the command line
        assert noise not in printed, noise
    pictures = [output for output in outputs if "image/png" in output.get("data", {})]
    assert len(pictures) >= PICTURES_SHOWN[name]
    # it trained through the real run folder: the metrics history and a checkpoint are there
    histories = list((tmp_path / "runs").rglob("csv/metrics.csv"))
    assert histories and all(list(path.parent.parent.glob("checkpoints/*.ckpt")) for path in histories)


def test_a_broken_notebook_fails(data_root, tmp_path):
    """A notebook whose code no longer fits vae_zoo (here: a renamed function) fails with the
    cell and the error, through papermill's command line as a person would run it."""
    notebook = nbformat.read(NOTEBOOKS / "01_quickstart.ipynb", as_version=4)
    cell = next(cell for cell in notebook.cells if "from vae_zoo.run.config import compose_config" in cell.source)
    cell.source = cell.source.replace(
        "from vae_zoo.run.config import compose_config", "from vae_zoo.run.config import compose_configuration"
    )
    broken = tmp_path / "broken.ipynb"
    nbformat.write(notebook, broken)
    parameters = tiny_parameters(data_root, tmp_path / "runs")["01_quickstart"]
    command = [
        sys.executable,
        "-m",
        "papermill",
        str(broken),
        str(tmp_path / "out.ipynb"),
        "--cwd",
        str(tmp_path),
        "--no-progress-bar",
        "-k",
        "python3",
    ]
    for key, value in parameters.items():  # as the README runs one: -p for a value, -y (YAML, here JSON) for a list
        command += ["-p", key, str(value)] if isinstance(value, (str, int)) else ["-y", json.dumps({key: value})]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode != 0
    assert "ImportError" in finished.stderr and "compose_configuration" in finished.stderr
    assert not (tmp_path / "runs").exists()  # it stopped at the broken cell

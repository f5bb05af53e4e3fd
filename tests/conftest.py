"""Shared fixtures: small data in the real file formats, tiny configs."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

# Tiny but real: every code path of a run, small enough for a 2-core CI machine.
TINY_DATA = [
    "data.num_train=256",
    "data.num_val=64",
    "data.num_test=64",
    "data.image_size=32",
    "data.batch_size=32",
    "data.eval_batch_size=64",
]
TINY_RUN = [
    "trainer.max_epochs=2",
    "trainer.accelerator=cpu",
    "callbacks.progress_bar=null",
    "callbacks.reconstructions.num_images=8",
    "callbacks.reconstructions.nrow=4",
    "callbacks.prior_samples.num_images=8",
    "callbacks.prior_samples.nrow=4",
    "callbacks.interpolations.num_pairs=2",
    "callbacks.class_conditional.samples_per_class=4",
]
TINY_NET = {  # per model: a small net of the kind that model takes
    "gaussian": ["model.latent_dim=4", "model.encoder.hidden_channels=[8,8,8]", "model.encoder.fc_features=32"],
    "vq_vae": [
        "model.quantizer.num_codes=16",
        "model.quantizer.code_dim=8",
        "model.encoder.hidden_channels=[8,16]",
        "model.encoder.num_residual_blocks=1",
    ],
}
TINY_SPRITES = [*TINY_DATA, *TINY_NET["gaussian"], *TINY_RUN]


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as a gzipped IDX file (the MNIST distribution format)."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(struct.pack(">I", n) for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def make_mnist_files(root: Path, folder: str = "MNIST", n_train: int = 300, n_test: int = 100, seed: int = 0) -> Path:
    """Create <root>/<folder>/raw/*-ubyte.gz with digit-like images: class k is a bright
    horizontal bar at row 2k+4 plus noise, so labels are learnable."""
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        images = rng.integers(0, 40, size=(n, 28, 28)).astype(np.uint8)
        for i, k in enumerate(labels):
            images[i, 2 * k + 4 : 2 * k + 7, 4:24] = 255
        write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


@pytest.fixture
def mnist_root(tmp_path: Path) -> Path:
    return make_mnist_files(tmp_path / "data")


def cli_command(args: list[str], cwd: Path, env: dict | None = None) -> tuple[list[str], dict]:
    """``python -m vae_zoo.train <args>`` and its environment: logs under ``cwd``; ``env`` replaces
    the environment (default: this process's)."""
    base = os.environ if env is None else env
    return [sys.executable, "-m", "vae_zoo.train", *args], {
        **base,
        "VAE_ZOO_LOG_DIR": str(cwd / "logs"),
        "PYTHONUNBUFFERED": "1",
    }


def run_cli(
    args: list[str], cwd: Path, env: dict | None = None, timeout: int = 300, process: bool = False
) -> subprocess.CompletedProcess:
    """Run ``python -m vae_zoo.train <args>`` as a user would (:func:`cli_command`), to the end.

    In this process (:func:`run_command`) unless ``process`` is true or ``env`` is given: then in
    a process of its own, for what only a process shows (DDP ranks started from ``sys.argv``,
    packages hidden from a fresh interpreter, imports at start-up, a different environment)."""
    if not process and env is None:
        return run_command("vae_zoo.train", args, cwd)
    command, full_env = cli_command(args, cwd, env)
    return subprocess.run(command, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def run_command(module: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``python -m <module> <args>`` (``vae_zoo.train``, ``vae_zoo.evaluate``, ...) run in this
    process: the command's own ``main()`` with ``sys.argv`` set, from ``cwd``, with the
    environment :func:`cli_command` gives, its stdout and stderr captured and its
    exit status taken from ``SystemExit`` (0 when it returns), as ``subprocess.run`` reports them.

    The same code runs as from a shell (argv parsing, Hydra's composition and output folder, the
    one-line errors and their exit status 2), without the 4-5 s a new Python process spends
    importing torch and Lightning. What the command leaves behind in this process is undone: the
    working directory, environment, ``sys.argv``, Hydra's global state, the logging handlers, warning filters and signal handlers, and the run config it registered in
    Hydra's config store."""
    import contextlib
    import copy
    import importlib
    import io
    import logging
    import signal
    import warnings

    from hydra.core.config_store import ConfigStore
    from hydra.core.global_hydra import GlobalHydra

    _, full_env = cli_command(args, cwd)
    full_env = {**full_env, "COLUMNS": "160"}
    saved_env, saved_cwd, saved_argv = os.environ.copy(), os.getcwd(), sys.argv[:]
    store = ConfigStore.instance()
    saved_runs = {group: copy.deepcopy(store.repo.get(group)) for group in ("continued_run", "trained_run")}
    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in list(logging.root.manager.loggerDict))]
    saved_logging = [(logger, logger.handlers[:], logger.level, logger.propagate) for logger in loggers]
    saved_signals = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)}
    out, err, status = io.StringIO(), io.StringIO(), 0
    try:
        os.environ.clear()
        os.environ.update(full_env)
        os.chdir(cwd)
        sys.argv = [f"{module.replace('.', '/')}.py", *args]
        with warnings.catch_warnings(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                importlib.import_module(module).main()
            except SystemExit as stop:
                status = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        os.chdir(saved_cwd)
        sys.argv = saved_argv
        for group, saved in saved_runs.items():  # the run config a command registered (Hydra's own stay)
            if saved is None:
                store.repo.pop(group, None)
            else:
                store.repo[group] = saved
        GlobalHydra.instance().clear()
        for logger, handlers, level, propagate in saved_logging:
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate = propagate
        for sig, handler in saved_signals.items():
            signal.signal(sig, handler)
    return subprocess.CompletedProcess([module, *args], status, out.getvalue(), err.getvalue())


def run_folders(log_dir: Path) -> list[Path]:
    return sorted(p for p in (log_dir / "train" / "runs").glob("*") if p.is_dir())


def make_vq_vae_run(folder: Path, overrides: list[str] = ()) -> Path:
    """A VQ-VAE run folder as training leaves it (config.yaml, checkpoints/last.ckpt), with
    untrained weights: the first stage a ``model=vq_prior`` config needs, without training one."""
    import torch
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from vae_zoo.run.config import compose_config

    cfg = compose_config(["model=vq_vae", *overrides], output_dir=folder)
    model = instantiate(cfg.model)
    (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.to_container(cfg, resolve=True)))
    torch.save({"state_dict": model.state_dict()}, folder / "checkpoints" / "last.ckpt")
    return folder


# ---------------------------------------------------------------- one trained run for the session
@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A finished tiny run on the sprites (in-process, one epoch), shared by every test that only
    reads it or tampers with a copy of it (:func:`copy_run`): one training for the session."""
    from vae_zoo.run.config import compose_config
    from vae_zoo.run.experiment import train

    run = tmp_path_factory.mktemp("trained") / "run"
    train(compose_config([*TINY_SPRITES, "trainer.max_epochs=1"], output_dir=run))
    return run


def copy_run(run: Path, to: Path) -> Path:
    """A copy of a run folder, as a user's ``cp -r`` makes it (the copy's config.yaml still names
    the original's absolute paths)."""
    shutil.copytree(run, to)
    return to


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under ``folder``."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


class Payload:
    """Unpickling this creates ``marker`` (through os.system, as an attacker's pickle would)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)

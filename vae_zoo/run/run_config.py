"""A trained run's own ``config.yaml``, composed first: one way to find a run and build its config.

Every command that works on an existing run starts from the config that run was trained with:

* ``evaluate`` and ``sample`` (``ckpt_path=<checkpoint or run folder>``): the run's
  ``config.yaml`` (plus ``run_dir``) becomes the config group option ``trained_run=config``,
  which ``conf/evaluate.yaml`` and ``conf/sample.yaml`` compose first
  (:func:`register_run_config_from_argv`, :func:`compose_run_config`);
* ``train`` continuing a run in its folder (``hydra.run.dir=<run> ckpt_path=last``): the run's
  ``config.yaml`` becomes ``continued_run=config``, which ``conf/train.yaml`` composes after every
  other group (:func:`register_continued_run_from_argv`).

The composed config is therefore *the trained config, then the command's own settings, then
the command line*: ``data.root=/elsewhere`` changes where the trained data is read from, a typo
(``data.rot=...``) is refused by Hydra as for training, and ``--cfg job`` prints what is used.
A run folder whose ``config.yaml`` is not the plain file training writes is refused
(:func:`vae_zoo.run.trust.plain_config_problems`). :func:`load_run` then builds a trained run's data
and model and loads its weights, for ``evaluate`` and ``sample``. Nothing here imports torch or
Lightning at import time, so a command's ``--help`` and ``--cfg job`` stay fast.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from vae_zoo.errors import CheckpointError, ConfigError, UntrustedFileError, VaeZooError, report_and_exit
from vae_zoo.run.config import compose_config
from vae_zoo.run.trust import check_trusted_targets, plain_config_problems, read_config_file

if TYPE_CHECKING:
    import torch

    from vae_zoo.data.base import InMemoryDataModule
    from vae_zoo.models.base import ELBOModule


# ------------------------------------------------------------- evaluate and sample: trained_run
#: Config group (a Hydra ConfigStore entry) under which a run's own config.yaml is composed.
TRAINED_RUN_GROUP = "trained_run"
#: Flags that make Hydra print something and exit without running the task: no checkpoint
#: is needed for them.
_HYDRA_INFO_FLAGS = ("-h", "--help", "--hydra-help", "-i", "--info", "-c", "--cfg", "-sc", "--shell-completion")


@dataclass(frozen=True)
class TrainedRun:
    """Where a checkpoint and the config it was trained with are.

    Attributes:
        checkpoint: the checkpoint file.
        run_dir: the run folder (``<run>/checkpoints/<file>.ckpt``), holding ``config.yaml``.
    """

    checkpoint: Path
    run_dir: Path

    @property
    def config_file(self) -> Path:
        return self.run_dir / "config.yaml"


def _best_checkpoint(folder: Path) -> Path | None:
    """The newest ``best-*.ckpt`` in ``folder``, else ``last.ckpt``, else None."""
    best = sorted((p for p in folder.glob("best-*.ckpt") if p.is_file()), key=lambda p: p.stat().st_mtime)
    if best:
        return best[-1]
    last = folder / "last.ckpt"
    return last if last.is_file() else None


def locate_run(ckpt_path: str | Path | None) -> TrainedRun:
    """Find the checkpoint and its run folder.

    Args:
        ckpt_path: a checkpoint file (normally ``<run>/checkpoints/<name>.ckpt``; a file
            directly in a run folder works too), or a run folder, which means its best
            checkpoint by ``val/elbo`` (``checkpoints/best-*.ckpt``), else ``checkpoints/last.ckpt``.

    Raises:
        ConfigError: no such checkpoint, or no ``config.yaml`` in the run folder.
    """
    if ckpt_path is None or str(ckpt_path) in ("", "???"):
        raise ConfigError(
            "Give the checkpoint to use: ckpt_path=<run folder>/checkpoints/<file>.ckpt (or a run folder)."
        )
    path = Path(ckpt_path).expanduser()
    if path.is_dir():
        checkpoint = _best_checkpoint(path / "checkpoints")
        if checkpoint is None:
            raise ConfigError(
                f"No checkpoint in {path / 'checkpoints'}: ckpt_path must be a checkpoint file or a run folder with checkpoints/."
            )
        run_dir = path
    elif path.is_file():
        checkpoint = path
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    else:
        raise ConfigError(f"No checkpoint at {path}: ckpt_path must be a checkpoint file or a run folder.")
    run = TrainedRun(checkpoint=checkpoint.resolve(), run_dir=run_dir.resolve())
    if not run.config_file.is_file():
        raise ConfigError(
            f"No config.yaml in {run.run_dir}: evaluating a checkpoint needs the resolved config its training "
            "run saved there (python -m vae_zoo.train writes <run folder>/config.yaml)."
        )
    return run


def register_run_config(run: TrainedRun) -> None:
    """Make the run's ``config.yaml`` (plus ``run_dir``) the config group option
    ``trained_run=config``, which the evaluate and sample configs compose first."""
    from hydra.core.config_store import ConfigStore

    node = read_config_file(run.config_file)
    check_run_folder_is_plain(run, node)
    node.run_dir = str(run.run_dir)
    ConfigStore.instance().store(group=TRAINED_RUN_GROUP, name="config", node=node, package="_global_")


def check_run_folder_is_plain(run: TrainedRun, node: DictConfig) -> None:
    """Refuse a run folder whose ``config.yaml`` is not the plain file training writes
    (:func:`vae_zoo.run.trust.plain_config_problems`), or with symbolic links where evaluate and
    sample write.

    Raises:
        UntrustedFileError: naming what was found.
    """
    found = plain_config_problems(node)
    for folder in (run.run_dir / "evaluation", run.run_dir / "samples"):
        links = (
            [path for path in (folder, *folder.rglob("*")) if path.is_symlink()]
            if folder.exists() or folder.is_symlink()
            else []
        )
        found += [f"the symbolic link {path}" for path in links[:3]]
    if found:
        raise UntrustedFileError(
            f"Not using {run.run_dir}: {'; '.join(found)}. vae_zoo's training never writes these (its config.yaml is "
            "fully resolved and holds no Hydra settings), and they could run code or write outside the run folder. "
            "Remove them if you made them, or re-create the run folder from its checkpoint."
        )


def register_run_config_from_argv(args: Sequence[str]) -> None:
    """For an entry point: find ``ckpt_path=...`` among the command-line overrides (before Hydra
    composes anything) and :func:`register_run_config` its run.

    Raises:
        ConfigError: no ``ckpt_path`` (unless Hydra is only asked for help or the config), a
            sweep over it, or a checkpoint or config that is not there.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    given = [arg for arg in args if arg.split("=", 1)[0].lstrip("+") == "ckpt_path"]
    if not given:
        if any(arg.split("=", 1)[0] in _HYDRA_INFO_FLAGS for arg in args):
            return
        raise ConfigError(
            "Give the checkpoint to use: ckpt_path=<run folder>/checkpoints/<file>.ckpt (or a run folder)."
        )
    override = OverridesParser.create().parse_override(given[-1])
    if override.is_sweep_override():
        raise ConfigError(
            "ckpt_path takes one checkpoint per call; compare several runs with python -m vae_zoo.compare."
        )
    register_run_config(locate_run(str(override.value())))


def compose_run_config(
    ckpt_path: str | Path,
    overrides: Sequence[str] = (),
    output_dir: str | Path | None = None,
    config_name: str = "evaluate",
) -> DictConfig:
    """Compose the evaluate (or sample) config for a checkpoint as the command line would:
    the run's config, then ``conf/<config_name>.yaml``, then ``overrides`` (for tests and
    notebooks). ``output_dir`` is where results go (default: Hydra's run folder, which only
    exists in a Hydra run)."""
    run = locate_run(ckpt_path)
    register_run_config(run)
    cfg = compose_config(overrides, output_dir, config_name)
    cfg.ckpt_path = str(run.checkpoint)
    return cfg


def main_with_run_config(hydra_main: Callable[[], None]) -> None:
    """Entry-point prologue of ``evaluate`` and ``sample``: register the run's config named by
    ``ckpt_path=...`` on the command line (Hydra composes it first), then run ``hydra_main``."""
    try:
        register_run_config_from_argv(sys.argv[1:])
    except VaeZooError as error:
        report_and_exit(error)
    hydra_main()


# ------------------------------------------------------------ loading a run: model and data
def resolve_device(name: str) -> torch.device:
    """``auto``: the first CUDA device if there is one, else the CPU; anything else as torch
    spells it (``cpu``, ``cuda:1``, ``mps``)."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def check_run_config(cfg: DictConfig) -> TrainedRun:
    """Locate the run and refuse its config if it names an untrusted ``_target_`` (before
    anything from it is built). ``cfg.trusted_targets`` comes from the command line and
    ``conf/evaluate.yaml`` / ``conf/sample.yaml``, which compose after the run's config."""
    run = locate_run(cfg.ckpt_path)
    check_trusted_targets(
        cfg,
        list(cfg.get("trusted_targets") or ()),
        source=f"the config of {run.run_dir} (config.yaml, with the command line)",
    )
    return run


@dataclass
class LoadedRun:
    """A trained model in eval mode on its device, with the data it was trained on."""

    model: ELBOModule
    datamodule: InMemoryDataModule
    run: TrainedRun
    device: torch.device


def load_run(cfg: DictConfig, device: torch.device) -> LoadedRun:
    """Build data and model from ``cfg`` exactly as training did, and load the checkpoint's
    weights (strictly: every tensor must fit).

    Nothing in the run's files can run code: the config's targets are checked against the
    trusted set first (:mod:`vae_zoo.run.trust`), and the checkpoint is read with
    ``weights_only=True`` (:func:`vae_zoo.support.checkpoint_files.load_checkpoint`).

    Raises:
        UntrustedFileError: the config names an untrusted target, or the checkpoint holds
            objects other than tensors and plain values.
        ConfigError: missing checkpoint/config, data files that are not there, a model that
            does not fit the data, or weights that do not fit the model (e.g. after an override
            of ``model.latent_dim``).
    """
    # torch and Lightning only now: this module serves --help too
    from vae_zoo.models.data_fit import check_compatible
    from vae_zoo.support.instantiation import config_origin, instantiate

    run = check_run_config(cfg)
    origin = config_origin(cfg)  # the run's config.yaml (cfg.run_dir), with the command line
    datamodule: InMemoryDataModule = instantiate(cfg.data, origin)
    datamodule.prepare_data()
    model: ELBOModule = instantiate(cfg.model, origin)
    check_compatible(datamodule, model)
    load_weights(model, run)
    if cfg.get("channels_last"):  # as the run was trained: oneDNN's conv kernels are faster in it
        from vae_zoo.nets.memory_format import use_channels_last

        use_channels_last(model)
    datamodule.setup("test")
    return LoadedRun(model=model.to(device).eval(), datamodule=datamodule, run=run, device=device)


def load_weights(model: ELBOModule, run: TrainedRun) -> None:
    """Load ``run.checkpoint`` into ``model`` strictly (read with ``weights_only=True``) and note
    where it came from in ``model.loaded_from``."""
    from vae_zoo.support.checkpoint_files import load_checkpoint, non_finite_weight

    checkpoint = load_checkpoint(run.checkpoint)
    bad = non_finite_weight(checkpoint)
    if bad is not None:
        raise CheckpointError(
            f"{run.checkpoint} holds the weight {bad} with NaN or infinite entries: the model's every output would be "
            "NaN. vae_zoo never writes such a checkpoint, so the file was edited or written elsewhere; use another "
            "checkpoint of the run (checkpoints/last.ckpt or best-*.ckpt)."
        )
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except (KeyError, RuntimeError) as error:
        raise ConfigError(
            f"The weights in {run.checkpoint} do not fit the model built from the run's config "
            f"({str(error).splitlines()[0]}). Leave the model settings as they were trained."
        ) from error
    model.on_load_checkpoint(checkpoint)
    model.loaded_from = run


#: The runs whose first stages are being loaded, outermost first: a run met again is a cycle.
_FIRST_STAGES_LOADING: list[Path] = []


def load_frozen_model(path: str | None, trusted_targets: Sequence[str] = ()) -> ELBOModule:
    """The trained model of a run (a run folder: its best checkpoint; or a checkpoint file), in
    eval mode, as its own ``config.yaml`` builds it: the first stage a second stage builds on
    (``conf/model/vq_prior.yaml`` names this function).

    The same checks as for ``evaluate`` apply to that run: its config must be the plain file
    training writes and name only trusted targets (plus ``trusted_targets``, a list of names), and
    its checkpoint is read weights-only. ``model.loaded_from`` is the :class:`TrainedRun`.

    Raises:
        ConfigError: no such run or checkpoint, weights that do not fit its config, or first
            stages that name each other (a run whose first stage is itself, A -> B -> A).
        UntrustedFileError: the run's config names an untrusted target, or ``trusted_targets``
            is not a list of target names.
    """
    from vae_zoo.support.instantiation import instantiate

    if path is None or str(path) in ("", "???"):
        raise ConfigError(
            "Name the trained run this model builds on: model.first_stage.path=<run folder or checkpoint> "
            "(for model=vq_prior, a VQ-VAE run: python -m vae_zoo.train model=vq_vae ...)."
        )
    if isinstance(trusted_targets, (str, Mapping)) or not all(isinstance(name, str) for name in trusted_targets):
        raise UntrustedFileError(
            f"model.first_stage.trusted_targets must be a list of target names, not {trusted_targets!r}."
        )
    run = locate_run(path)
    if run.run_dir in _FIRST_STAGES_LOADING:
        chain = [*_FIRST_STAGES_LOADING[_FIRST_STAGES_LOADING.index(run.run_dir) :], run.run_dir]
        raise ConfigError(
            f"The first stages form a cycle: {' -> '.join(str(folder) for folder in chain)} (each run's "
            "model.first_stage.path names the next). A first stage is a run trained before, without it: point "
            "model.first_stage.path at a VQ-VAE run."
        )
    node = read_config_file(run.config_file)
    if "model" not in node:
        raise ConfigError(f"{run.config_file} holds no model config: is {run.run_dir} a vae_zoo training run?")
    check_run_folder_is_plain(run, node)
    check_trusted_targets(node, list(trusted_targets), source=f"the config of {run.run_dir} (config.yaml)")
    _FIRST_STAGES_LOADING.append(run.run_dir)
    try:
        model: ELBOModule = instantiate(node.model, str(run.config_file))
    finally:
        _FIRST_STAGES_LOADING.pop()
    load_weights(model, run)
    return model.eval()

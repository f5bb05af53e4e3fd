"""The optional parts of vae_zoo, and the pip extra that brings each.

``pip install vae_zoo`` brings what training, evaluation and the file, CSV and W&B loggers need.
The rest is an extra (``pip install 'vae_zoo[fid,tensorboard]'``; ``.[dev]`` has them all). Using a
part whose extra is missing stops with :class:`MissingExtraError` naming the extra to install,
before that part does any work (a run: before its folder is written).
"""

from __future__ import annotations

import importlib

from vae_zoo.errors import VaeZooError

#: extra -> (the modules that provide it, any one will do; the package pip installs)
EXTRAS = {
    "tensorboard": (("tensorboard", "tensorboardX"), "tensorboard"),
    "fid": (("torch_fidelity",), "torch-fidelity"),
    "celeba": (("gdown",), "gdown"),
    "slurm": (("hydra_plugins.hydra_submitit_launcher",), "hydra-submitit-launcher"),
    "joblib": (("hydra_plugins.hydra_joblib_launcher",), "hydra-joblib-launcher"),
    "optuna": (("optuna",), "optuna"),
    "dashboard": (("wandb_workspaces",), "wandb-workspaces"),
    "notebooks": (("papermill",), "papermill"),
}

#: Hydra launchers (``hydra/launcher=<name>``) and the extra each needs.
LAUNCHER_EXTRAS = {"slurm": "slurm", "submitit_slurm": "slurm", "submitit_local": "slurm", "joblib": "joblib"}

#: ``_target_``s of the configs that need an extra (checked when the loggers are built; FID's
#: feature extractor names its extra itself, and evaluate skips FID without it by default).
TARGET_EXTRAS = {"lightning.pytorch.loggers.TensorBoardLogger": "tensorboard"}


class MissingExtraError(VaeZooError, ImportError):
    """An optional part of vae_zoo is used without the package it needs."""


def installed(extra: str) -> bool:
    """Whether one of the modules that provide ``extra`` imports."""
    modules, _ = EXTRAS[extra]
    for module in modules:
        try:
            importlib.import_module(module)
            return True
        except ImportError:
            continue
    return False


def require(extra: str, what: str, minimum: str | None = None) -> None:
    """Raise :class:`MissingExtraError` unless ``extra`` is installed (at major version ``minimum``
    or later, when given); ``what`` names its use."""
    package = EXTRAS[extra][1]
    fix = f"pip install 'vae_zoo[{extra}]' (in a source checkout: pip install -e '.[{extra}]')"
    if not installed(extra):
        raise MissingExtraError(f"{what} needs {package}, which is not installed: {fix}.")
    if minimum is not None:
        from importlib.metadata import version

        found = version(package)
        if int(found.split(".")[0]) < int(minimum):
            raise MissingExtraError(f"{what} needs {package} >= {minimum}, and {found} is installed: {fix}.")


def check_targets(node: object, where: str) -> None:
    """Require the extra of every ``_target_`` in ``node`` (a config or plain container) that needs one."""
    from vae_zoo.support.instantiation import iter_targets

    for _, target in iter_targets(node):
        if target in TARGET_EXTRAS:
            require(TARGET_EXTRAS[target], f"{where} ({target})")


def check_launcher(args: list[str]) -> None:
    """Require the extra of a Hydra launcher chosen on the command line (``hydra/launcher=slurm``):
    without it Hydra would stop with a missing config group option."""
    for arg in args:
        if arg.startswith("hydra/launcher="):
            launcher = arg.split("=", 1)[1]
            if launcher in LAUNCHER_EXTRAS:
                require(LAUNCHER_EXTRAS[launcher], arg)

"""``train`` continuing a run in its folder (``hydra.run.dir=<run> ckpt_path=last``): the run's own
``config.yaml`` becomes the config group option ``continued_run=config``, which ``conf/train.yaml``
composes last, so only what changes is given on the command line; a choice of another config group
is refused, and values the run's config does not have are dropped with a notice. Its paths are re-rooted
into the folder it is continued in (:func:`reroot`), and a W&B run continues under the id its
checkpoint holds (:func:`resume_wandb_run`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from vae_zoo.errors import ConfigError, UntrustedFileError
from vae_zoo.run.trust import plain_config_problems, read_config_file

#: Config group (a Hydra ConfigStore entry) under which a continued run's config.yaml is composed.
CONTINUED_RUN_GROUP = "continued_run"
#: Settings a continued run takes from the command line and conf/train.yaml, never from the run's file.
_NOT_FROM_THE_RUN = ("trusted_targets", "ckpt_path", "continued_run")


def continued_run_folder(args: list[str]) -> Path | None:
    """The run folder a ``train`` command line continues in place: ``hydra.run.dir=<folder>``
    with ``ckpt_path=last`` or ``ckpt_path=<folder>/checkpoints/<file>``, when the folder has
    a ``config.yaml``. None otherwise (a new run, or a resume into another folder)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser, given = OverridesParser.create(), {}
    for arg in args:
        if not arg.startswith("-") and "=" in arg:
            try:
                override = parser.parse_override(arg)
            except Exception:  # noqa: BLE001 - Hydra itself reports malformed overrides
                continue
            given[override.key_or_group] = override
    run_dir, ckpt = given.get("hydra.run.dir"), given.get("ckpt_path")
    if run_dir is None or ckpt is None or ckpt.is_sweep_override() or run_dir.is_sweep_override():
        return None
    folder = Path(str(run_dir.value())).expanduser().resolve()
    ckpt_value = str(ckpt.value())
    if ckpt_value != "last" and Path(ckpt_value).expanduser().resolve().parent != folder / "checkpoints":
        return None
    return folder if (folder / "config.yaml").is_file() else None


def register_continued_run_from_argv(args: list[str], groups: set[str]) -> Path | None:
    """Make the continued run's ``config.yaml`` the config group option ``continued_run=config``,
    which ``conf/train.yaml`` composes after every other group (the command line still comes
    last). Returns the run folder, or None when the command does not continue one.

    Raises:
        UntrustedFileError: the run's ``config.yaml`` is not the plain file training writes.
        ConfigError: the command line also picks a config group (``model=...``): the run's own
            model, data and trainer are what it continues with.
    """
    from hydra.core.config_store import ConfigStore

    folder = continued_run_folder(args)
    if folder is None:
        return None
    picked = {}
    for arg in args:
        if "=" in arg and arg.split("=", 1)[0].lstrip("+~") in groups:
            key, value = arg.split("=", 1)
            picked[key.lstrip("+~")] = value
    made_with = run_choices(folder)
    differing = sorted(group for group, option in picked.items() if made_with.get(group, "<unknown>") != option)
    if differing and "LOCAL_RANK" not in os.environ:  # a DDP rank Lightning starts repeats the argv: let it be
        was = ", ".join(f"{group}={made_with[group]}" for group in differing if group in made_with)
        raise ConfigError(
            f"Continuing {folder} uses its own config.yaml; the command line also picks "
            f"{', '.join(f'{group}={picked[group]}' for group in differing)}, which differs from the choice the run was "
            f"made with ({was or 'not recorded in its .hydra/hydra.yaml'}) and would be ignored. Repeat the run's own "
            "choices or leave them out; change single values instead (e.g. model.beta=8, trainer.max_epochs=20), or "
            "start a new run in a new folder to train another configuration."
        )
    node = read_config_file(folder / "config.yaml")
    problems = plain_config_problems(node)
    if problems:
        raise UntrustedFileError(
            f"Not continuing {folder}: its config.yaml holds {'; '.join(problems)}, which training never writes and "
            "which could run code. Remove them if you made them, or start a new run."
        )
    for key in _NOT_FROM_THE_RUN:
        node.pop(key, None)
    reroot(node, folder)
    node.continued_run = str(folder)
    ConfigStore.instance().store(group=CONTINUED_RUN_GROUP, name="config", node=node, package="_global_")
    return folder


def run_choices(folder: Path) -> dict[str, str]:
    """The config group options a run folder was made with (``model: beta_vae``, ``debug: null``), from the
    record of the Hydra job that made it (``.hydra/hydra.yaml``); empty when there is none (a run
    made from Python). A continued run keeps this record (:func:`vae_zoo.run.run_folder.write_run_record`)."""
    record = folder / ".hydra" / "hydra.yaml"
    if not record.is_file():
        return {}
    try:
        choices = read_config_file(record).get("hydra", {}).get("runtime", {}).get("choices", {})
    except UntrustedFileError:
        return {}
    return {
        str(group): "null" if option is None else str(option)
        for group, option in (choices or {}).items()
        if not str(group).startswith("hydra/")
    }


def reroot(node: DictConfig, folder: Path) -> None:
    """Point every path of ``node`` inside the folder the run was made in (``paths.output_dir``:
    checkpoints, pictures, the loggers' folders) at the same place in ``folder``, where it is
    continued, in place. A run folder copied or moved since is then continued in
    the copy: its config.yaml still names the original's absolute paths, and without this the
    continued run would resume and overwrite the original's checkpoints and history."""
    made_in = OmegaConf.select(node, "paths.output_dir")
    if not isinstance(made_in, str) or os.path.normpath(made_in) == str(folder):
        return
    made_in = os.path.normpath(made_in)

    def walk(mapping: DictConfig | ListConfig) -> None:
        for key in mapping.keys() if isinstance(mapping, DictConfig) else range(len(mapping)):
            value = mapping[key]
            if isinstance(value, (DictConfig, ListConfig)):
                walk(value)
            elif isinstance(value, str) and value.startswith("/"):
                normal = os.path.normpath(value)
                if normal == made_in or normal.startswith(made_in + os.sep):
                    mapping[key] = str(folder) + normal[len(made_in) :]

    walk(node)


def keep_only_what_the_run_had(cfg: DictConfig, folder: Path, overrides: Sequence[str]) -> list[str]:
    """Remove from a continued run's composed ``cfg`` every setting its ``config.yaml`` did not
    have and the command line did not give; returns their dotted keys.

    The composition puts the run's config over today's defaults, so a setting vae_zoo added
    since the run was made (say ``data.sprite_size: 2.0``) would otherwise come in with today's
    default, while the run was built without it, with its class's own default. Without the key
    the run is rebuilt as it was."""
    run_keys = set(_dotted_keys(read_config_file(folder / "config.yaml")))
    given = {arg.split("=", 1)[0].lstrip("+~") for arg in overrides if "=" in arg}
    keep_always = {*_NOT_FROM_THE_RUN, "paths", "hydra"}
    removed = []
    for key in sorted(_dotted_keys(cfg), key=lambda k: -k.count(".")):
        if key in run_keys or key.split(".")[0] in keep_always:
            continue
        if any(key == g or key.startswith(g + ".") or g.startswith(key + ".") for g in given):
            continue
        if any(other.startswith(key + ".") for other in run_keys):  # a parent of kept settings
            continue
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        with open_dict(node):
            node.pop(leaf, None)
        removed.append(key)
    return sorted(removed)


def _dotted_keys(node: DictConfig) -> list[str]:
    """Every key of a config mapping, nested ones as ``a.b.c``, interpolations unresolved."""
    keys: list[str] = []

    def walk(mapping: dict, prefix: str) -> None:
        for key, value in mapping.items():
            keys.append(f"{prefix}{key}")
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")

    walk(OmegaConf.to_container(node, resolve=False), "")
    return keys


def resume_wandb_run(cfg: DictConfig, saved: dict[str, Any] | None) -> None:
    """Continue the W&B run the checkpoint ``saved`` (as :func:`load_checkpoint` read it) was
    written by: the same run id, W&B ``resume``."""
    logger_cfg = cfg.get("logger") or {}
    if saved is None or "wandb" not in logger_cfg or logger_cfg.wandb is None:
        return
    run_id = saved.get("wandb_run_id")
    if run_id:
        with open_dict(cfg):
            cfg.logger.wandb.id = run_id
            cfg.logger.wandb.resume = "allow"

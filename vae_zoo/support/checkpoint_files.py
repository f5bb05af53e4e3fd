"""Reading a checkpoint file without running anything from it, and what it must be before it is used.

* :func:`load_checkpoint` is the one way vae_zoo reads a checkpoint: ``torch.load`` with
  ``weights_only=True``, which rebuilds tensors and plain Python values only and refuses any
  other object, so a ``.ckpt`` whose pickle would call ``os.system`` is refused, not run. Our
  own checkpoints hold nothing else (the random states are stored as tensors and numbers for
  this reason), so no extra safe globals are registered.
* :func:`malformed_fields`: the fields Lightning and vae_zoo write have their own forms (a
  mapping of tensors as ``state_dict``, a list of optimizer states, whole-number steps); a file
  edited by hand or written elsewhere is named field by field, not met as a traceback later.
* :func:`non_finite_tensor` / :func:`non_finite_weight`: NaN or infinite weights, which are
  never written (:class:`vae_zoo.run.checkpointing.AtomicCheckpointIO`) and never evaluated.
* :func:`check_checkpoint_fits` compares a checkpoint with the model a config builds before a
  resume writes anything, and names the tensors and settings that differ.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vae_zoo.errors import CheckpointError, UntrustedFileError


def load_checkpoint(path: str | Path, mmap: bool = False) -> dict[str, Any]:
    """Read a checkpoint without running code from it (``weights_only=True``), on the CPU.

    Args:
        path: the ``.ckpt`` file.
        mmap: map the tensors' storage instead of reading it (cheap when only a few small
            entries are needed, e.g. the W&B run id).

    Raises:
        UntrustedFileError: the file holds objects other than tensors and plain values (loading
            it the unsafe way would run code from it); the message names the object.
        CheckpointError: the file is empty, truncated or not a checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{path} is not a checkpoint file ({'a directory' if path.is_dir() else 'not a regular file'}). "
            "Use a checkpoint of the run (checkpoints/last.ckpt or best-*.ckpt)."
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        found = re.search(r"(?:unsupported )?GLOBAL ([\w.]+)", str(error))
        what = f"it asks for {found.group(1)}" if found else str(error).splitlines()[0]
        raise UntrustedFileError(
            f"{path} was not loaded: it holds objects other than tensors and plain values ({what}), and loading it "
            "would run code from the file. vae_zoo checkpoints never need that; use a checkpoint written by "
            "python -m vae_zoo.train, or one you have re-saved as a plain state_dict yourself."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as error:
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointError(
            f"{path} is not a readable checkpoint (empty, truncated or not written by torch.save: {detail}). "
            "Use another checkpoint of the run (checkpoints/last.ckpt or best-*.ckpt)."
        ) from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f"{path} holds a {type(checkpoint).__name__}, not a checkpoint (a dict with a state_dict)."
        )
    malformed = malformed_fields(checkpoint)
    if malformed:
        raise CheckpointError(
            f"{path} is not a checkpoint vae_zoo can use: {'; '.join(malformed)}. Training writes these fields "
            "itself, so the file was edited or comes from elsewhere; use another checkpoint of the run."
        )
    return checkpoint


def malformed_fields(checkpoint: dict[str, Any]) -> list[str]:
    """What in a loaded checkpoint is not of the form Lightning and vae_zoo write (empty: none)."""
    found = []
    state_dict = checkpoint.get("state_dict", {})
    if not isinstance(state_dict, Mapping):
        found.append(f"its state_dict is a {type(state_dict).__name__}, not a mapping of tensors")
    else:
        found += [
            f"state_dict[{name!r}] is not a tensor"
            for name, value in state_dict.items()
            if not isinstance(value, torch.Tensor)
        ][:3]
    optimizers = checkpoint.get("optimizer_states", [])
    if not isinstance(optimizers, list) or not all(isinstance(state, dict) for state in optimizers):
        found.append("its optimizer_states is not a list of optimizer states")
    for field in ("callbacks", "loops"):
        if not isinstance(checkpoint.get(field, {}), dict):
            found.append(f"its {field} is a {type(checkpoint[field]).__name__}, not a mapping")
    for field in ("global_step", "epoch"):
        if field in checkpoint and (not isinstance(checkpoint[field], int) or isinstance(checkpoint[field], bool)):
            found.append(f"its {field} is {checkpoint[field]!r}, not a whole number")
    return found


def non_finite_tensor(state_dict: Mapping[str, Any]) -> str | None:
    """The name of the first floating-point tensor with a NaN or infinite entry, else None."""
    for name, value in state_dict.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return name
    return None


def non_finite_weight(checkpoint: Mapping[str, Any]) -> str | None:
    """The name of the first floating-point weight in ``checkpoint["state_dict"]`` that holds a NaN
    or an infinity, else None: such a model's every output is NaN, so it is not evaluated."""
    return non_finite_tensor(checkpoint.get("state_dict", {}))


# -------------------------------------------------------------------------- resume check
def check_checkpoint_fits(
    checkpoint: Mapping[str, Any], model: nn.Module, source: Path, differing_settings: list[str]
) -> None:
    """Raise before anything is written if ``checkpoint`` cannot resume ``model``.

    Compares every tensor's name and shape, and the number of optimizers and of parameters in
    each of their groups (what Lightning would fail on after the run folder had been touched).

    Args:
        checkpoint: the loaded checkpoint.
        model: the model the current config builds.
        source: the checkpoint's path, for the message.
        differing_settings: ``key: old -> new`` lines of the config settings that differ from
            the run's own ``config.yaml`` (named in the message).

    Raises:
        CheckpointError: naming the differing tensors (and settings) and the fix.
    """
    saved = checkpoint.get("state_dict")
    if not isinstance(saved, Mapping):
        raise CheckpointError(f"{source} has no state_dict: it is not a training checkpoint of vae_zoo.")
    expected = model.state_dict()
    problems = [f"{name} is missing" for name in expected if name not in saved]
    problems += [f"{name} is not in the model" for name in saved if name not in expected]
    problems += [
        f"{name} is {tuple(saved[name].shape)} in the checkpoint, {tuple(value.shape)} here"
        for name, value in expected.items()
        if name in saved and tuple(saved[name].shape) != tuple(value.shape)
    ]
    problems += _optimizer_mismatches(checkpoint, model)
    bad = non_finite_weight(checkpoint)
    if bad is not None:
        raise CheckpointError(
            f"{source} holds the weight {bad} with NaN or infinite entries, which vae_zoo never saves: the file was "
            "edited or written elsewhere. Nothing in the run folder was changed; resume from another checkpoint."
        )
    if not problems:
        return
    shown = "; ".join(problems[:6]) + (f"; and {len(problems) - 6} more" if len(problems) > 6 else "")
    settings = (
        f" Settings that differ from the run's config.yaml: {', '.join(differing_settings)}."
        if differing_settings
        else ""
    )
    raise CheckpointError(
        f"{source} does not fit the model this config builds ({shown}).{settings} Nothing in the run folder was "
        "changed. Resume with the settings the run was trained with, or start a new run (a new hydra.run.dir) "
        "to train with the new ones."
    )


def _optimizer_mismatches(checkpoint: Mapping[str, Any], model: nn.Module) -> list[str]:
    saved = checkpoint.get("optimizer_states")
    configure = getattr(model, "configure_optimizers", None)
    if saved is None or configure is None:
        return []
    try:  # the variant's own configure_optimizers, on fresh parameters: cheap, and discarded
        configured = configure()
    except Exception:  # noqa: BLE001 - a model whose optimizers need the trainer: Lightning checks later
        return []
    if isinstance(configured, dict):
        configured = [configured]
    elif isinstance(configured, torch.optim.Optimizer):
        configured = [configured]
    optimizers = []
    for entry in configured if isinstance(configured, (list, tuple)) else []:
        entry = entry.get("optimizer") if isinstance(entry, dict) else entry
        if isinstance(entry, torch.optim.Optimizer):
            optimizers.append(entry)
    if not optimizers:
        return []
    if len(optimizers) != len(saved):
        return [f"{len(saved)} optimizer(s) in the checkpoint, {len(optimizers)} here"]
    problems = []
    for index, (optimizer, state) in enumerate(zip(optimizers, saved)):
        ours = [len(group["params"]) for group in optimizer.param_groups]
        theirs = [len(group["params"]) for group in state.get("param_groups", [])]
        if ours != theirs:
            problems.append(f"optimizer {index} has parameter groups of sizes {theirs} in the checkpoint, {ours} here")
    return problems

"""Configs read from a run folder are built only from targets the user trusts.

``evaluate`` and ``sample`` compose a run's own ``config.yaml`` and then instantiate what it
names. A ``_target_`` is a dotted path to any callable, so a crafted ``config.yaml`` could name
``torch.load`` with ``weights_only: false``, or ``subprocess.run``, and run code. Before
anything is instantiated, :func:`check_trusted_targets` walks the whole composed config (every
``_target_`` at any depth, also under ``_recursive_: false``) and admits a target only if

1. its top-level package is that of a trusted module (checked on the text, before anything is
   imported, so an untrusted package is never imported; submodules of torch, lightning,
   sklearn and vae_zoo may be imported to resolve the path), and no part of the path is
   private (``_name``);
2. it resolves to a class, or to a module-level function or classmethod of the modules listed
   for functions (not a module, not a method such as ``Trainer.save_checkpoint``);
3. the object is *defined* in a trusted module (``obj.__module__``), so a trusted module's
   re-export of something else (``vae_zoo.run.experiment.torch.load`` resolves to ``torch.load``,
   defined in ``torch.serialization``) is refused.

Trusted by default: the classes of vae_zoo and of the parts of the libraries its configs build
from (:data:`TRUSTED_MODULES`: ``torch.optim``, ``torch.nn.modules``, Lightning's trainer,
callbacks, loggers, plugins, strategies, accelerators and profilers, scikit-learn's
estimators); building one of them runs its constructor only. Functions are trusted only where
the configs use them as factories (:data:`TRUSTED_FUNCTION_MODULES`: vae_zoo's loggers, metrics,
nets, likelihoods and schedules), not vae_zoo's plumbing (``experiment``, ``evaluation``,
``config``, ``checkpointing``, ...), whose functions compose configs, build from them, or write
and delete files, and could chain a config into running one it was not checked for. Anything else stops with an error that names the target and says how to
trust it: ``trusted_targets=[my_pkg.models]`` on the command line (a module prefix or a full
target path). ``trusted_targets`` is taken from the command line and the project's own config
only: a run's ``config.yaml`` cannot widen it (``conf/evaluate.yaml`` composes after it), neither
at the top nor through the arguments of a trusted function that takes trust (the first-stage
loader's ``trusted_targets``, by keyword or position, as a list, a string or a mapping:
:func:`granted_trust`).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf

from vae_zoo.errors import UntrustedFileError
from vae_zoo.support.instantiation import iter_targets

#: Modules (and their submodules) whose classes and functions a run's config may name.
TRUSTED_MODULES: tuple[str, ...] = (
    # vae_zoo's building blocks; not its plumbing (experiment, evaluation, config, run_folder,
    # trust and the entry points), whose objects load, compose or write runs
    "vae_zoo.models",
    "vae_zoo.nets",
    "vae_zoo.blocks.likelihoods",
    "vae_zoo.blocks.schedules",
    "vae_zoo.blocks.quantizers",
    "vae_zoo.data",
    "vae_zoo.callbacks",
    "vae_zoo.metrics",
    "vae_zoo.run.loggers",
    "vae_zoo.run.checkpointing",
    "torch.optim",
    "torch.nn.modules",
    "lightning.pytorch.trainer",
    "lightning.pytorch.callbacks",
    "lightning.pytorch.loggers",
    "lightning.pytorch.plugins",
    "lightning.pytorch.strategies",
    "lightning.pytorch.accelerators",
    "lightning.pytorch.profilers",
    "sklearn.ensemble",
    "sklearn.linear_model",
    "sklearn.tree",
    "sklearn.neighbors",
    "sklearn.svm",
    "optuna.pruners",  # the study's pruner, rebuilt inside each trial of hparams_search=optuna
)
#: Modules whose module-level functions and classmethods a run's config may name.
TRUSTED_FUNCTION_MODULES: tuple[str, ...] = (
    "vae_zoo.run.loggers",
    "vae_zoo.metrics",
    "vae_zoo.nets",
    "vae_zoo.blocks.likelihoods",
    "vae_zoo.blocks.schedules",
)


#: Single functions outside those modules that a run's config may name, each with the argument
#: through which it grants trust: the run loader that builds a second stage's frozen first stage,
#: which applies these same checks to that run's config with the targets it is given.
TRUSTED_FUNCTIONS: dict[str, str] = {"vae_zoo.run.run_config.load_frozen_model": "trusted_targets"}


def _within(name: str, prefixes: Sequence[str]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def why_untrusted(target: str, trusted: Sequence[str]) -> str | None:
    """None if ``target`` may be built, else the reason it may not."""
    if target in trusted or target in TRUSTED_FUNCTIONS:  # named exactly: trusted as it is
        return None
    prefixes = (*TRUSTED_MODULES, *trusted)
    if any(part.startswith("_") for part in target.split(".")):
        return "it names a private object"
    if target.split(".")[0] not in {prefix.split(".")[0] for prefix in prefixes}:
        return "its package is not trusted"
    from hydra.utils import get_object

    try:
        obj = get_object(target)
    except Exception as error:  # noqa: BLE001 - an unresolvable path is simply not trusted
        return f"it does not resolve ({type(error).__name__})"
    if inspect.isclass(obj):
        allowed = prefixes
    elif inspect.ismethod(obj) and inspect.isclass(obj.__self__):  # a classmethod, e.g. from_checkpoint
        obj, allowed = obj.__self__, (*TRUSTED_FUNCTION_MODULES, *trusted)
    elif inspect.isfunction(obj) or inspect.isbuiltin(obj):
        if "." in obj.__qualname__:
            return "it is a method, not a class or a module-level function"
        allowed = (*TRUSTED_FUNCTION_MODULES, *trusted)
    else:
        return f"it is a {type(obj).__name__}, not a class or function"
    module = getattr(obj, "__module__", None) or ""
    if not _within(module, allowed):
        return f"it is defined in {module or 'an unknown module'}, which is not trusted for this"
    return None


def check_trusted_targets(cfg: DictConfig, trusted: Sequence[str] = (), source: str = "the run's config.yaml") -> None:
    """Refuse a config naming any ``_target_`` that is not trusted, before anything is built.

    Args:
        cfg: the composed config.
        trusted: extra module prefixes or full target paths the user trusts (``trusted_targets``).
        source: where the config came from, for the message.

    Raises:
        UntrustedFileError: naming each refused target, its config key, the reason and the fix.
    """
    refused, names = [], []
    for key, target in iter_targets(cfg):
        reason = why_untrusted(target, list(trusted))
        if reason is not None:
            refused.append(f"{key}._target_={target} ({reason})")
            names.append(target)
    for key, granted in granted_trust(cfg):  # e.g. model.first_stage: what a parent run is built with
        beyond = [name for name in granted if name not in trusted]
        if beyond:
            refused.append(f"{key} trusts {', '.join(beyond)} (a file cannot trust more than the command line does)")
            names += beyond
    if refused:
        raise UntrustedFileError(
            f"Not building {source}: it names targets outside the trusted set, which could run code: "
            f"{'; '.join(refused)}. Nothing was built or run. If you trust them, say so on the command line, e.g. "
            f"trusted_targets=[{names[0]}] (a module prefix or a full path)."
        )


def granted_trust(node: Any, path: str = "") -> Iterator[tuple[str, list[str]]]:
    """(config key, targets) for every call in ``node`` to a function of :data:`TRUSTED_FUNCTIONS`:
    the trust that call would grant, read from its arguments as Hydra would pass them (by keyword,
    positionally in ``_args_``, in any form), not from a key's name. A value that is not a list of
    target names (a mapping, a number) is returned as its text, so that it is refused."""
    if isinstance(node, (DictConfig, dict)):
        target = node.get("_target_") if "_target_" in node else None
        if target is not None and str(target) in TRUSTED_FUNCTIONS:
            yield (
                f"{path}.{TRUSTED_FUNCTIONS[str(target)]}" if path else TRUSTED_FUNCTIONS[str(target)],
                _trust_argument(node, str(target)),
            )
        items = node.items_ex(resolve=False) if isinstance(node, DictConfig) else node.items()
        for key, value in items:
            yield from granted_trust(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, (ListConfig, list, tuple)):
        for index, value in enumerate(node):
            yield from granted_trust(value, f"{path}[{index}]")


def _trust_argument(node: Any, target: str) -> list[str]:
    from hydra.utils import get_object

    parameter = TRUSTED_FUNCTIONS[target]
    container = OmegaConf.to_container(node, resolve=False) if isinstance(node, DictConfig) else dict(node)
    arguments = {key: value for key, value in container.items() if not str(key).startswith("_")}
    try:
        bound = inspect.signature(get_object(target)).bind_partial(*container.get("_args_", ()), **arguments)
    except TypeError:  # arguments it does not take: Hydra's call fails the same way, and grants nothing
        return []
    granted = bound.arguments.get(parameter, ())
    if isinstance(granted, str):
        return [granted]
    if isinstance(granted, (list, tuple)) and all(isinstance(name, str) for name in granted):
        return list(granted)
    return [f"<{type(granted).__name__} {granted!r}>"]


def plain_config_problems(node: DictConfig) -> list[str]:
    """What makes a run's ``config.yaml`` other than the plain file training writes (empty: none).

    Training saves it fully resolved and without Hydra's own settings. A ``hydra`` or
    ``defaults`` node would let Hydra act before any check (build ``hydra.callbacks``, write
    wherever ``hydra.output_subdir`` says), and an interpolation is not checkable as written
    (``${oc.create:...}`` builds a ``_target_`` the target check cannot see; ``${oc.env:...}``
    copies secrets into the results).
    """
    found = [f"a top-level '{key}' node" for key in ("hydra", "defaults") if key in node]
    found += [f"the interpolation {key}={value}" for key, value in _interpolations(node)][:3]
    return found


def _interpolations(node: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(node, DictConfig):
        for key in node.keys():
            yield from _interpolations(node._get_node(key), f"{prefix}{key}.")
    elif isinstance(node, ListConfig):
        for index in range(len(node)):
            yield from _interpolations(node._get_node(index), f"{prefix}{index}.")
    elif OmegaConf.is_interpolation(node) or (isinstance(node._value(), str) and "${" in node._value()):
        yield prefix[:-1], str(node._value())


#: Modules that moved when the package was laid out by layer (issue 26): a run folder made
#: before names its targets under the old paths, e.g. ``vae_zoo.likelihoods.Bernoulli``.
MOVED_MODULES: dict[str, str] = {
    **{f"vae_zoo.{name}": f"vae_zoo.blocks.{name}" for name in ("likelihoods", "quantizers", "schedules", "stats")},
    **{
        f"vae_zoo.{name}": f"vae_zoo.run.{name}"
        for name in (
            "config", "experiment", "run_config", "continued_run", "run_folder", "checkpointing",
            "trust", "loggers", "console", "cpu", "search",
        )
    },
    **{f"vae_zoo.{name}": f"vae_zoo.support.{name}" for name in ("extras", "lightning_internals", "instantiation")},
    "vae_zoo.evaluation": "vae_zoo.evaluation.runner",
}  # fmt: skip


def upgrade_moved_targets(node: Any) -> None:
    """Rewrite, in place, every ``_target_`` of ``node`` that names a module under its path before
    :data:`MOVED_MODULES`. Only the module part changes, so the trust check that follows judges
    the same object it always would."""
    if isinstance(node, DictConfig):
        for key in node.keys():
            value = node._get_node(key)
            if key == "_target_" and not OmegaConf.is_interpolation(node, key) and isinstance(value._value(), str):
                target = value._value()
                module = next((old for old in MOVED_MODULES if target.startswith(old + ".")), None)
                if module is not None and not target.startswith(MOVED_MODULES[module] + "."):
                    node[key] = MOVED_MODULES[module] + target[len(module) :]
            elif isinstance(value, (DictConfig, ListConfig)):
                upgrade_moved_targets(value)
    elif isinstance(node, ListConfig):
        for index in range(len(node)):
            upgrade_moved_targets(node._get_node(index))


def read_config_file(path: Path) -> DictConfig:
    """A run folder's ``config.yaml`` as a config mapping, read as plain YAML.

    OmegaConf reads YAML safely (a ``!!python/...`` tag builds nothing), but its refusal is a YAML
    traceback; here any YAML that is not a plain mapping is one line naming the file and line.

    Raises:
        UntrustedFileError: a YAML tag OmegaConf refuses (``!!python/object``, ...), YAML that does
            not parse, or a top level that is not a mapping.
    """
    try:
        node = OmegaConf.load(path)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "somewhere"
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise UntrustedFileError(
            f"Not using {path}: at {where}, {problem}. vae_zoo's training writes config.yaml as plain YAML with no "
            "tags (a !!python/... tag would build an object), so this file was edited or is not a vae_zoo run's; "
            "restore the file as training wrote it, or train the run again."
        ) from None
    if not isinstance(node, DictConfig):
        raise UntrustedFileError(f"Not using {path}: it is not a config mapping (a vae_zoo run's config.yaml is).")
    upgrade_moved_targets(node)  # a run made before the package was laid out by layer
    return node

"""The two facts vae_zoo needs from Lightning that it has no public API for, read in one place.

* whether this training step's logged values reach a logger (the trainer's logger connector
  decides, from ``log_every_n_steps`` and the count of batches that stepped: skipping ``self.log``
  on the other steps is what makes logging cost nothing, BENCHMARKS.md "Framework overhead");
* whether the trainer would replace the data's batch sampler by a ``DistributedSampler``
  (``Trainer(use_distributed_sampler=...)`` is stored on a private connector only).

Both are private attributes of Lightning's ``Trainer``, tested with the range ``pyproject.toml``
pins (:data:`TESTED_LIGHTNING`). If a Lightning release moves one, the read fails loudly, naming
the attribute and the tested range, instead of falling back without a word
(``tests/test_lightning_internals.py``).
"""

from __future__ import annotations

from typing import Any

import lightning

#: the Lightning releases these reads are tested with (pyproject.toml pins the same)
TESTED_LIGHTNING = ">=2.6,<2.7"


class LightningInternalsChanged(RuntimeError):
    """A private Lightning attribute vae_zoo reads is not where the tested releases keep it."""


def private(obj: Any, path: str) -> Any:
    """``obj.<path>`` for a dotted path of attributes, or :class:`LightningInternalsChanged`."""
    value = obj
    for name in path.split("."):
        try:
            value = getattr(value, name)
        except AttributeError as error:
            raise LightningInternalsChanged(
                f"Lightning {lightning.__version__} has no Trainer.{path} (missing: {name!r}), which vae_zoo reads "
                f"because no public API gives it (vae_zoo/support/lightning_internals.py). vae_zoo is tested with "
                f"lightning{TESTED_LIGHTNING}: install such a release (pip install 'lightning{TESTED_LIGHTNING}')."
            ) from error
    return value


def logs_reach_a_logger(trainer: Any) -> bool:
    """Whether values logged in this training step are written by the loggers this step
    (Lightning's own test: every ``log_every_n_steps``-th batch that stepped, or a stop)."""
    return bool(private(trainer, "_logger_connector.should_update_logs"))


def replaces_batch_sampler(trainer: Any) -> bool:
    """Whether the trainer would put a ``DistributedSampler`` in the data loaders (DDP with
    ``use_distributed_sampler=True``)."""
    return trainer.world_size > 1 and bool(private(trainer, "_accelerator_connector.use_distributed_sampler"))

"""The private Lightning attributes vae_zoo reads are where the pinned Lightning keeps them, and a
release that moves one is a loud error naming it, not a silent fallback (issue 28)."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import tomllib
from packaging.specifiers import SpecifierSet

from vae_zoo.support.lightning_internals import (
    TESTED_LIGHTNING,
    LightningInternalsChanged,
    logs_reach_a_logger,
    replaces_batch_sampler,
)

REPO = Path(__file__).resolve().parents[1]


def test_the_installed_lightning_is_the_tested_range_and_pyproject_pins_it():
    assert L.__version__ in SpecifierSet(TESTED_LIGHTNING)
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [d for d in dependencies if re.match(r"lightning\b", d)]
    assert SpecifierSet(pin.removeprefix("lightning")) == SpecifierSet(TESTED_LIGHTNING)


def test_the_privates_are_read_from_a_real_trainer():
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, log_every_n_steps=1, enable_progress_bar=False)
    assert isinstance(logs_reach_a_logger(trainer), bool)
    assert replaces_batch_sampler(trainer) is False  # one process: nothing to replace


@pytest.mark.parametrize("read", [logs_reach_a_logger, replaces_batch_sampler])
def test_a_lightning_that_moved_a_private_fails_loudly_naming_it(read):
    moved = SimpleNamespace(world_size=2)  # a trainer whose connectors are gone
    with pytest.raises(LightningInternalsChanged, match=r"Trainer\._[a-z_]+_connector.*lightning>=2\.6,<2\.7"):
        read(moved)

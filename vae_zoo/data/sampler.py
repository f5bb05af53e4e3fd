"""Batches served whole: a split is indexed once per batch, and sharded across DDP ranks here.

:class:`TensorBatches` is a dataset whose items are batches (one gather per batch, no per-item
``__getitem__`` or collate); :class:`IndexBatchSampler` yields the index tensors, shuffled per
epoch from ``(seed, epoch)``, each DDP rank a disjoint part (so the trainer must not wrap it:
``trainer.use_distributed_sampler=false``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import Dataset, Sampler, SequentialSampler

from vae_zoo.errors import ConfigError

Split = dict[str, Tensor]


class TensorBatches(Dataset):
    """A dataset whose items are whole batches: ``dataset[indices]`` indexes every tensor once.

    Args:
        tensors: tensors with a common first dimension (one split), all on the CPU or all on
            one accelerator (``data.on_device``: the batch is then gathered there).
    """

    def __init__(self, tensors: Split):
        sizes = {len(t) for t in tensors.values()}
        if len(sizes) != 1:
            raise ValueError(f"All tensors of a split need the same length, got {sizes}.")
        self.tensors = tensors
        # The gather runs in numpy: np.take copies the rows in one single-threaded pass, while
        # torch's CPU indexing has a larger fixed cost per call and runs on the intra-op thread
        # pool; for a batch of rows numpy is several times faster (over ten times when other
        # processes keep the CPUs busy). The arrays share memory with the tensors.
        self.device = next(iter(tensors.values())).device
        self.arrays = {key: t.numpy() for key, t in tensors.items()} if self.device.type == "cpu" else None

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def __getitem__(self, indices: Tensor) -> Split:
        """``indices``: (B,) int64. Returns each tensor's rows at ``indices``, as new tensors."""
        if self.arrays is None:  # held on an accelerator: one gather there, nothing crosses the bus
            rows = indices.to(self.device, non_blocking=True)
            return {key: t[rows] for key, t in self.tensors.items()}
        rows = indices.numpy()
        return {key: torch.from_numpy(np.take(array, rows, axis=0)) for key, array in self.arrays.items()}


def distributed_rank_and_size() -> tuple[int, int]:
    """``(rank, world_size)`` of this process: from ``torch.distributed`` when it is
    initialised (DDP), else ``(0, 1)``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class IndexBatchSampler(Sampler[Tensor]):
    """Yields index tensors of ``batch_size``: a shuffled permutation per epoch, or in order.

    Torch's ``BatchSampler(RandomSampler)`` builds each batch as a Python list one index at a
    time; this one slices a single ``randperm``.

    Shuffling: the permutation of epoch ``e`` is drawn from a ``torch.Generator`` seeded with
    ``(seed, e)``, so it is the same on every DDP rank and differs between epochs. ``seed``
    defaults to the run's seed (``PL_GLOBAL_SEED``, set by ``seed_everything``, which DDP
    processes inherit), else to ``torch.initial_seed()``. The epoch advances by one at every
    pass, so a plain loop gets a fresh order each time; Lightning calls :meth:`set_epoch` with
    its epoch count before each training epoch. The order is drawn lazily, at the first
    ``next()``: Lightning creates the iterator of a run's (or a resumed run's) first epoch
    *before* it calls ``set_epoch``, and an eager draw would use a stale epoch there.

    Sharding under DDP (``torch.distributed`` initialised, read at every ``iter()``), with
    ``N = num_items`` and ``W`` ranks:

    * ``shuffle=True`` (training): rank ``r`` takes items ``r*(N//W) ... (r+1)*(N//W) - 1`` of
      the epoch's permutation. The shards are disjoint and equal in size, so every rank runs
      the same number of steps (a DDP step waits for all ranks); the ``N % W`` items left over
      are a different few each epoch.
    * ``shuffle=False`` (validation, test): rank ``r`` takes the ``r``-th of ``W`` contiguous
      blocks of ``0 ... N-1`` (sizes differ by at most one). Every item is seen exactly once in
      total, with no padding and no duplicates, so sums over ranks are exact.

    Args:
        num_items: size of the split.
        batch_size: items per batch on this rank.
        shuffle: a new random order every epoch (training), or the fixed order (evaluation).
        drop_last: leave out a last batch smaller than ``batch_size``.
        seed: non-negative base seed of the shuffles; None: the run's seed (see above).
    """

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        shuffle: bool,
        drop_last: bool = False,
        seed: int | None = None,
    ):
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")
        if seed is not None and seed < 0:
            raise ConfigError(f"The shuffling seed must be >= 0, got {seed}.")
        self.num_items, self.batch_size = num_items, batch_size
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the permutation of ``epoch`` for the next pass (Lightning calls this)."""
        self.epoch = epoch

    def _num_rank_items(self, rank: int, world_size: int) -> int:
        if self.shuffle:
            return self.num_items // world_size
        return self.num_items // world_size + (rank < self.num_items % world_size)

    def __len__(self) -> int:
        num_items = self._num_rank_items(*distributed_rank_and_size())
        if self.drop_last:
            return num_items // self.batch_size
        return -(-num_items // self.batch_size)

    def _shuffle_seed(self) -> int:
        if self.seed is not None:
            return self.seed
        return int(os.environ.get("PL_GLOBAL_SEED", torch.initial_seed()))

    def __iter__(self) -> Iterator[Tensor]:
        return self._batches()  # a generator: nothing is drawn until the first next()

    def _batches(self) -> Iterator[Tensor]:
        rank, world_size = distributed_rank_and_size()
        if self.shuffle:
            # SeedSequence mixes (seed, epoch) into independent streams (seed + epoch would make
            # run 1's epoch 0 the same as run 0's epoch 1).
            epoch_seed = np.random.SeedSequence([self._shuffle_seed(), self.epoch]).generate_state(1, np.uint64)[0]
            order = torch.randperm(self.num_items, generator=torch.Generator().manual_seed(int(epoch_seed)))
            shard = self.num_items // world_size
            order = order[rank * shard : (rank + 1) * shard]
        else:
            order = torch.arange(self.num_items).tensor_split(world_size)[rank]
        self.epoch += 1
        batches = order.split(self.batch_size) if len(order) else ()  # split() of nothing gives one empty batch
        if self.drop_last and len(batches) and len(batches[-1]) < self.batch_size:
            batches = batches[:-1]
        yield from batches


class InOrderBatchSampler(IndexBatchSampler, SequentialSampler):
    """:class:`IndexBatchSampler` in the fixed order (``shuffle=False``), and a ``SequentialSampler``
    to Lightning: with ``trainer.overfit_batches`` (``debug=overfit``) Lightning replaces every
    sampler that is not one by a sampler of single items, which a dataset of whole batches
    cannot serve."""

    def __init__(self, num_items: int, batch_size: int, drop_last: bool = False):
        IndexBatchSampler.__init__(self, num_items, batch_size, shuffle=False, drop_last=drop_last)

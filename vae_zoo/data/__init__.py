"""LightningDataModules holding datasets in memory as uint8 and serving whole batches."""

from vae_zoo.data.base import InMemoryDataModule, IndexBatchSampler, TensorBatches
from vae_zoo.data.mnist import MNISTDataModule
from vae_zoo.errors import DataNotFoundError
from vae_zoo.data.sprites import SpritesDataModule

__all__ = [
    "InMemoryDataModule",
    "IndexBatchSampler",
    "TensorBatches",
    "MNISTDataModule",
    "DataNotFoundError",
    "SpritesDataModule",
]

"""LightningDataModules serving uint8 images a whole batch at a time (one index operation).

Small datasets are held in memory; large image sets (CelebA, folders) are decoded once into a
memory-mapped cache. See :mod:`vae_zoo.data.base` for the batch contract.
"""

from vae_zoo.data.base import InMemoryDataModule
from vae_zoo.data.celeba import CelebADataModule
from vae_zoo.data.cifar import CIFAR10DataModule
from vae_zoo.data.dsprites import DSpritesDataModule
from vae_zoo.data.folder import ImageFolderDataModule
from vae_zoo.data.mnist import FashionMNISTDataModule, MNISTDataModule
from vae_zoo.data.sampler import IndexBatchSampler, TensorBatches
from vae_zoo.data.sprites import SpritesDataModule
from vae_zoo.errors import DataNotFoundError

__all__ = [
    "InMemoryDataModule",
    "IndexBatchSampler",
    "TensorBatches",
    "CelebADataModule",
    "CIFAR10DataModule",
    "DSpritesDataModule",
    "FashionMNISTDataModule",
    "ImageFolderDataModule",
    "MNISTDataModule",
    "DataNotFoundError",
    "SpritesDataModule",
]

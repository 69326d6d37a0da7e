"""LightningDataModules: digits (embedded default), Fashion-MNIST, CIFAR-10/100."""

from lightning_kd.data.augment import random_crop_flip
from lightning_kd.data.base import InMemoryDataModule, TensorClassificationDataset
from lightning_kd.data.cifar import CIFAR10DataModule, CIFAR100DataModule
from lightning_kd.data.digits import DigitsDataModule
from lightning_kd.data.fashion_mnist import FashionMNISTDataModule
from lightning_kd.data.idx import read_idx

__all__ = [
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "InMemoryDataModule",
    "TensorClassificationDataset",
    "random_crop_flip",
    "read_idx",
]

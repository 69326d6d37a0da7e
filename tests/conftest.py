"""Shared fixtures: the digits data module, a quiet Trainer factory, the Fashion-MNIST folder (or a skip)."""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning as L
import pytest
import torch

from lightning_kd.data import DigitsDataModule
from tests.helpers import FMNIST_DIR

torch.set_num_threads(2)
warnings.filterwarnings("ignore", message=".*does not have many workers.*")


@pytest.fixture
def digits() -> DigitsDataModule:
    return DigitsDataModule(batch_size=64)


@pytest.fixture
def trainer_factory(tmp_path):
    def make(**kwargs) -> L.Trainer:
        defaults = dict(
            accelerator="cpu",
            max_epochs=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=tmp_path,
        )
        defaults.update(kwargs)
        return L.Trainer(**defaults)

    return make


@pytest.fixture
def fmnist_dir() -> str:
    if not Path(FMNIST_DIR, "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST files not found in {FMNIST_DIR} (set LIGHTNING_KD_FASHION_MNIST)")
    return FMNIST_DIR

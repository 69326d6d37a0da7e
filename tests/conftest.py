"""Shared fixtures: the digits data module, a quiet Trainer factory, the Fashion-MNIST folder (or a skip)."""

from __future__ import annotations

import signal
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch

from lightning_kd.data import DigitsDataModule
from tests.helpers import FMNIST_DIR

torch.set_num_threads(2)
warnings.filterwarnings("ignore", message=".*does not have many workers.*")


@pytest.fixture(autouse=True)
def _signal_handlers_restored():
    """Lightning sets SIGINT/SIGTERM to "ignore" after it handles a Ctrl-C in a fit run in this process; a child
    process started later inherits "ignore" and cannot be stopped by Ctrl-C (a Ctrl-C test then saw a study run to
    its end and exit 0). Every test gets the handlers it found back."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        if signal.getsignal(sig) is not handler and handler is not None:
            signal.signal(sig, handler)


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

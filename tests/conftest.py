"""Shared fixtures: tiny models on digits, a quiet Trainer factory."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch

from lightning_kd.data import DigitsDataModule
from lightning_kd.models import MLP, SmallCNN

REPO = Path(__file__).resolve().parents[1]
FMNIST_DIR = os.environ.get("LIGHTNING_KD_FASHION_MNIST") or str(REPO.parent / "shared" / "data" / "fashion-mnist")

torch.set_num_threads(2)
warnings.filterwarnings("ignore", message=".*does not have many workers.*")


def make_teacher() -> torch.nn.Module:
    return SmallCNN(1, 10, widths=(8, 16, 32))


def make_student() -> torch.nn.Module:
    return MLP(64, 10, hidden=(16,))


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


class MemoryLogger(L.pytorch.loggers.Logger):
    """Keeps every ``log_metrics`` row in memory: ``rows`` is a list of ``(step, metrics)``."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[int, dict]] = []

    @property
    def name(self) -> str:
        return "memory"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        self.rows.append((step, dict(metrics)))

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def keys(self) -> set[str]:
        return {k for _, row in self.rows for k in row}

    def last(self, key: str) -> float:
        return next(row[key] for _, row in reversed(self.rows) if key in row)

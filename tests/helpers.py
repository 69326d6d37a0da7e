"""What many tests share: the repository's paths, tiny teacher/student models, an in-memory logger."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import torch

from lightning_kd.models import MLP, SmallCNN

REPO = Path(__file__).resolve().parents[1]
FMNIST_DIR = os.environ.get("LIGHTNING_KD_FASHION_MNIST") or str(REPO.parent / "shared" / "data" / "fashion-mnist")


def make_teacher() -> torch.nn.Module:
    return SmallCNN(1, 10, widths=(8, 16, 32))


def make_student() -> torch.nn.Module:
    return MLP(64, 10, hidden=(16,))


class LeaveTogether(L.Callback):
    """Under ``ddp_spawn``, the ranks meet at a barrier at the end of the fit and close the gloo group together.

    Without it each rank closed its process group at interpreter exit (Lightning's ``atexit`` hook) whenever it
    got there, and now and then a rank aborted after training had finished ("terminate called without an active
    exception", SIGABRT; CI on ``test_rank_shards``). That tested gloo's teardown, not the fit under test.
    """

    def on_fit_end(self, trainer, pl_module) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()


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


def _digest(path: Path) -> str:
    """sha256 of a file, or of every file under a folder (names and bytes)."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


@contextmanager
def untouched(*paths: Path) -> Iterator[None]:
    """Assert that the block leaves ``paths`` byte-identical (whatever it raises)."""
    before = [_digest(p) for p in paths]
    try:
        yield
    finally:
        assert [_digest(p) for p in paths] == before, "a user's file was changed"

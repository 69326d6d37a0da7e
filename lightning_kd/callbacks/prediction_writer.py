"""PredictionWriter: ``predict`` writes what it predicted to a CSV file, one row per sample."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import Tensor
from typing_extensions import override


def fresh_path(folder: str | os.PathLike, stem: str, suffix: str) -> Path:
    """``folder/stem.suffix``, or ``stem-1``, ``stem-2``, … when taken: never a file that already exists."""
    folder = Path(folder)
    path, n = folder / f"{stem}{suffix}", 0
    while path.exists():
        n += 1
        path = folder / f"{stem}-{n}{suffix}"
    return path


class PredictionWriter(BasePredictionWriter):
    """Writes ``index, prediction, target, p_0 … p_{C-1}`` for every predicted sample to a new CSV file in
    ``output_dir`` (``predictions.csv``, or ``predictions-<n>.csv`` when taken: an earlier file is never
    overwritten) and prints where it went.

    ``index`` is the sample's position in the predict dataset (sequential sampler), ``target`` its label when the
    batches carry one (else empty). A module predicting ``(S, N, C)`` (several students) writes their mean.

    Args:
        output_dir: the folder (created when needed).

    Example::

        trainer = L.Trainer(callbacks=[PredictionWriter("runs/digits/kd/predict")])
        trainer.predict(module, datamodule=dm, return_predictions=False)
    """

    def __init__(self, output_dir: str) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = output_dir
        self.path: Path | None = None
        self.rows = 0
        self._file: Any = None
        self._writer: Any = None

    @override
    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            os.makedirs(self.output_dir, exist_ok=True)
            self.path = fresh_path(self.output_dir, "predictions", ".csv")
            self._file = open(self.path, "w", newline="")  # noqa: SIM115 - closed in on_predict_end
            self._writer = csv.writer(self._file)
        self.rows = 0

    @override
    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._writer is None or not isinstance(prediction, Tensor):
            return
        probs = prediction.float()
        if probs.dim() == 3:  # (S, N, C): several students
            probs = probs.mean(0)
        probs = probs.cpu()
        if self.rows == 0:
            self._writer.writerow(["index", "prediction", "target", *(f"p_{c}" for c in range(probs.shape[-1]))])
        unpack = getattr(pl_module, "unpack_batch", None)
        targets = unpack(batch).targets if unpack is not None else None
        targets = targets.cpu().tolist() if isinstance(targets, Tensor) else [""] * len(probs)
        indices = list(batch_indices) if batch_indices is not None else range(self.rows, self.rows + len(probs))
        for i, c, t, p in zip(indices, probs.argmax(-1).tolist(), targets, probs.tolist()):
            self._writer.writerow([int(i), c, t, *(f"{x:.6g}" for x in p)])
        self.rows += len(probs)

    @override
    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._file is not None:
            self._file.close()
            self._file = self._writer = None
            print(f"lightning-kd: wrote {self.rows} predictions to {self.path}")

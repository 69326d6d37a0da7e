"""KDProgressBar: a progress bar that costs a training step nothing, refreshed by time."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from torch import Tensor
from typing_extensions import override


def _batch_size(batch: Any) -> int:
    """Samples in a batch: the length of its first tensor (0 when there is none)."""
    items = batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, (tuple, list)) else [batch]
    return next((len(x) for x in items if isinstance(x, Tensor) and x.dim() > 0), 0)


class KDProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar, refreshed every ``refresh_seconds`` (and at the end of each epoch) rather than
    every batch, showing the training loss, the learning rate, samples per second and whatever is logged with
    ``prog_bar=True`` (``val/acc``).

    Lightning's own bar refreshes on every batch and shows ``prog_bar`` metrics, which Lightning converts to
    Python numbers after every batch — a host-device sync per step on a GPU. lightning-kd's modules keep their
    per-step values on the device (``BaseModule.log_step``); this bar reads them once per refresh. It is the
    default of ``lightning-kd`` recipes and CLI runs; from Python, add it to the Trainer's callbacks.

    Args:
        refresh_seconds: at most one refresh per this many seconds (one host sync per refresh).
        process_position: see ``TQDMProgressBar``.
        leave: keep each epoch's bar on screen.

    Example::

        trainer = L.Trainer(callbacks=[KDProgressBar(refresh_seconds=1.0)])
    """

    def __init__(self, refresh_seconds: float = 0.5, process_position: int = 0, leave: bool = False) -> None:
        if not refresh_seconds >= 0:
            raise ValueError(f"refresh_seconds must be >= 0, got {refresh_seconds}; e.g. 0.5.")
        super().__init__(refresh_rate=1, process_position=process_position, leave=leave)
        self.refresh_seconds = float(refresh_seconds)
        self._last_refresh = 0.0
        self._epoch_start = 0.0
        self._samples = 0

    @override
    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self._last_refresh = self._epoch_start = time.perf_counter()
        self._samples = 0

    @override
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._samples += _batch_size(batch)
        bar = self.train_progress_bar
        if bar is None or bar.disable:
            return
        now, n = time.perf_counter(), batch_idx + 1
        if now - self._last_refresh < self.refresh_seconds and n != bar.total:
            return
        self._last_refresh = now
        bar.n = n
        bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
        bar.refresh()

    @override
    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        items: dict[str, Any] = {}
        values = pl_module.step_values() if hasattr(pl_module, "step_values") else {}
        if "loss" in values:
            items["loss"] = f"{values['loss']:.4g}"
        if trainer.optimizers:
            items["lr"] = f"{trainer.optimizers[0].param_groups[0]['lr']:.3g}"
        elapsed = time.perf_counter() - self._epoch_start
        if self._samples and elapsed > 0:
            items["samples/s"] = f"{self._samples / elapsed:.4g}"
        return {**items, **super().get_metrics(trainer, pl_module)}

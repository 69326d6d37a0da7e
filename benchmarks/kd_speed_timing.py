"""Timing helpers for ``kd_speed.py``: device sync, a host-sync counter, Lightning callbacks that time epochs
and steps the same way the plain loops do (device synchronised at both ends of the timed span)."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import lightning as L
import torch

SYNC_MESSAGE = "synchronizing CUDA operation"  # what torch.cuda.set_sync_debug_mode("warn") emits


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing to wait for on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def start_timed_span(device: torch.device) -> float:
    """Wait for the device, restart its peak-memory count (so cuDNN autotuning in the warm-up does not count),
    return the time."""
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    return time.perf_counter()


def time_steps(device: torch.device, step: Callable[[], object], warmup: int, steps: int) -> float:
    """Milliseconds per call of ``step`` over ``steps`` calls after ``warmup`` untimed ones; the device's
    peak-memory count covers the timed calls only."""
    for _ in range(warmup):
        step()
    start = start_timed_span(device)
    for _ in range(steps):
        step()
    sync(device)
    return (time.perf_counter() - start) * 1000.0 / steps


class SyncCounter:
    """Counts host-device synchronisations (``.item()``, blocking copies, ...) between :meth:`start` and
    :meth:`stop`, through ``torch.cuda.set_sync_debug_mode("warn")``. CUDA only: elsewhere ``per_step`` is
    ``None``. Run the counted code inside :meth:`recording`."""

    def __init__(self, device: torch.device) -> None:
        self.enabled = device.type == "cuda"
        self.count = 0
        self.steps = 0

    @contextmanager
    def recording(self) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        with warnings.catch_warnings(record=True) as log:
            warnings.filterwarnings("always", message=f".*{SYNC_MESSAGE}")
            try:
                yield
            finally:
                torch.cuda.set_sync_debug_mode("default")
        for w in log:  # count ours, show the others as they would have been shown
            if SYNC_MESSAGE in str(w.message):
                self.count += 1
            else:
                warnings.showwarning(w.message, w.category, w.filename, w.lineno)

    def start(self) -> None:
        if self.enabled:
            torch.cuda.set_sync_debug_mode("warn")

    def stop(self, steps: int) -> None:
        if self.enabled:
            torch.cuda.set_sync_debug_mode("default")
            self.steps += steps

    @property
    def per_step(self) -> float | None:
        return self.count / self.steps if self.enabled and self.steps else None


class SyncWindow(L.Callback):
    """Counts host syncs over training steps ``[first, first + steps)`` of ``epoch``: from the start of step
    ``first`` to the start of step ``first + steps``, so every hook of each counted step is in."""

    def __init__(self, counter: SyncCounter, epoch: int, first: int, steps: int) -> None:
        self.counter, self.epoch, self.first, self.steps = counter, epoch, first, steps

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if trainer.current_epoch != self.epoch:
            return
        if batch_idx == self.first:
            self.counter.start()
        elif batch_idx == self.first + self.steps:
            self.counter.stop(self.steps)


class EpochTimer(L.Callback):
    """Seconds of every training epoch from ``warmup`` on: from its start to the end of its last batch, so the
    validation run at the end of the epoch is not counted (the hand loop has none)."""

    def __init__(self, device: torch.device, warmup: int) -> None:
        self.device, self.warmup = device, warmup
        self.seconds: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch >= self.warmup:
            sync(self.device)
            self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int):
        if trainer.current_epoch >= self.warmup and batch_idx == trainer.num_training_batches - 1:
            sync(self.device)
            self.seconds.append(time.perf_counter() - self._start)


class StepTimer(L.Callback):
    """Milliseconds per training step over steps ``[warmup, warmup + steps)``, as :func:`time_steps`."""

    def __init__(self, device: torch.device, warmup: int, steps: int) -> None:
        self.device, self.warmup, self.steps = device, warmup, steps
        self.ms: float | None = None
        self._start = 0.0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if batch_idx == self.warmup:
            self._start = start_timed_span(self.device)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int):
        if batch_idx == self.warmup + self.steps - 1:
            sync(self.device)
            self.ms = (time.perf_counter() - self._start) * 1000.0 / self.steps

"""What every lightning-kd LightningModule shares: batch unpacking, metrics, optimizer and scheduler."""

from __future__ import annotations

import inspect
from functools import partial
from typing import Any, Literal

import lightning as L
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

try:  # set while LightningCLI instantiates the module (Lightning >= 2.1, PR #18105)
    from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
except ImportError:  # pragma: no cover - older Lightning
    _given_hyperparameters = None


def built_by_cli() -> bool:
    """True while LightningCLI instantiates the module: hparams then hold ``class_path`` configs, not modules."""
    return _given_hyperparameters is not None and _given_hyperparameters.get() is not None


def infer_num_classes(model: nn.Module) -> int | None:
    """``model.num_classes`` if set, else the ``out_features`` of its last ``nn.Linear``, else ``None``."""
    n = getattr(model, "num_classes", None)
    if isinstance(n, int):
        return n
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else None


def _fills_total_steps(scheduler: Any) -> bool:
    """Whether ``scheduler`` takes a ``total_steps`` argument that was left unset (e.g. OneCycleLR)."""
    if isinstance(scheduler, partial):
        kw = scheduler.keywords
        if "total_steps" in kw:
            return kw["total_steps"] is None and kw.get("epochs") is None
        target = next((a for a in scheduler.args if isinstance(a, type)), scheduler.func)
    else:
        target = scheduler
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False
    return "total_steps" in params


def _takes_total_steps(scheduler: Any) -> bool:
    """Whether the scheduler is sized in optimizer steps (has a ``total_steps`` argument)."""
    if isinstance(scheduler, partial):
        if "total_steps" in scheduler.keywords:
            return True
        scheduler = next((a for a in scheduler.args if isinstance(a, type)), scheduler.func)
    try:
        return "total_steps" in inspect.signature(scheduler).parameters
    except (TypeError, ValueError):
        return False


class BaseModule(L.LightningModule):
    """Shared parts. Subclasses set ``self.val_acc``/``self.test_acc`` via :meth:`_build_metrics`.

    Args:
        optimizer: builds the optimizer from the trainable parameters (YAML: ``class_path`` + ``init_args``).
        lr_scheduler: builds a scheduler from the optimizer; an unset ``total_steps`` (OneCycleLR) is filled
            with ``trainer.estimated_stepping_batches``.
        scheduler_interval: ``step`` or ``epoch``; ``auto`` steps per batch when ``total_steps`` was filled.
    """

    def __init__(
        self,
        optimizer: OptimizerCallable,
        lr_scheduler: LRSchedulerCallable | None,
        scheduler_interval: Literal["auto", "step", "epoch"],
    ) -> None:
        super().__init__()
        if scheduler_interval not in ("auto", "step", "epoch"):
            raise ValueError(f"scheduler_interval must be 'auto', 'step' or 'epoch', got {scheduler_interval!r}.")
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.scheduler_interval = scheduler_interval

    def _build_metrics(self, num_classes: int) -> None:
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")

    def unpack_batch(self, batch: Any) -> tuple[Any, Tensor]:
        """Split a batch into ``(inputs, targets)``. Override for dict batches or extra fields."""
        if isinstance(batch, dict):
            return batch["input"], batch["target"]
        return batch[0], batch[1]

    def _eval_step(self, batch: Any, stage: Literal["val", "test"]) -> None:
        raise NotImplementedError

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        """Class probabilities of the (student) model; batches may be bare inputs or ``(inputs, targets)``."""
        inputs = self.unpack_batch(batch)[0] if isinstance(batch, (list, tuple, dict)) else batch
        return self(inputs).softmax(-1)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimizer gets: those with ``requires_grad``, never a frozen teacher's (even after
        ``unfreeze()``, which switches ``requires_grad`` on everywhere)."""
        frozen = {
            id(p) for name in ("teacher", "teachers") if hasattr(self, name) for p in getattr(self, name).parameters()
        }
        return [p for p in self.parameters() if p.requires_grad and id(p) not in frozen]

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer(self.trainable_parameters())
        if self.lr_scheduler is None:
            return optimizer
        interval = self.scheduler_interval
        if _fills_total_steps(self.lr_scheduler):
            scheduler = self.lr_scheduler(optimizer, total_steps=int(self.trainer.estimated_stepping_batches))
        else:
            scheduler = self.lr_scheduler(optimizer)
        if interval == "auto":  # a scheduler sized in steps (OneCycleLR) steps per batch, others per epoch
            interval = "step" if _takes_total_steps(self.lr_scheduler) else "epoch"
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}

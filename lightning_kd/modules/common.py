"""What every lightning-kd LightningModule shares: the batch protocol, metrics, optimizer and scheduler,
teacher-free checkpoints, and which constructor arguments become hyper-parameters."""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Callable
from functools import partial
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import move_data_to_device, rank_zero_info
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from lightning_kd.core.batch import Batch, unpack_batch
from lightning_kd.core.feature_terms import FeatureTerms
from lightning_kd.core.teacher import TeacherBase
from lightning_kd.modules.checkpoint_checks import (
    CHECKPOINT_CLASS_KEY,
    CHECKPOINT_VERSION_KEY,
    check_module_class,
    is_plain,
    peek_checkpoint,
    resumed_differences,
)
from lightning_kd.modules.host_copies import HostCopies
from lightning_kd.modules.step_log import DivergedLossError, NonFiniteLossError, StepLogging, new_step_state

__all__ = ["BaseModule", "DivergedLossError", "NonFiniteLossError", "check_module_class", "save_plain_hyperparameters"]


def save_plain_hyperparameters(module: L.LightningModule) -> None:
    """``module.save_hyperparameters()`` for the constructor arguments that are plain values.

    Models, losses, feature terms and optimizer factories are left out: pickled into the checkpoint they
    would make it unloadable with ``torch.load(weights_only=True)``. From Python, pass them again to
    ``load_from_checkpoint``; lightning-kd's CLI stores their ``class_path`` configs in the checkpoint after
    it built the module, so CLI checkpoints reload with no arguments (Lightning PR #18105). Settings objects that
    are dataclasses (``Divergence``, ``Generation``) are kept as plain dicts, which the modules accept back. Call
    it from ``__init__``; arguments of every ``__init__`` on the stack (a subclass's too) are considered.
    """
    frame = inspect.currentframe().f_back  # the caller's __init__
    values: dict[str, Any] = {}
    f = frame
    while f is not None and f.f_code.co_name == "__init__" and f.f_locals.get("self") is module:
        code = f.f_code
        names = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
        values.update({n: f.f_locals[n] for n in names if n != "self" and n in f.f_locals})
        has_varargs = bool(code.co_flags & inspect.CO_VARARGS)
        kwargs_at = code.co_argcount + code.co_kwonlyargcount + has_varargs
        kwargs_name = code.co_varnames[kwargs_at] if code.co_flags & inspect.CO_VARKEYWORDS else None
        if kwargs_name and isinstance(f.f_locals.get(kwargs_name), dict):
            values.update(f.f_locals[kwargs_name])
        f = f.f_back
    ignore = sorted(name for name, value in values.items() if not is_plain(value))
    module.save_hyperparameters(ignore=ignore, frame=frame)
    for name, value in values.items():
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            module.hparams[name] = dataclasses.asdict(value)


def to_channels_last(*models: nn.Module) -> None:
    """Put every model's weights in ``channels_last`` memory format, in place (idempotent)."""
    for model in models:
        model.to(memory_format=torch.channels_last)


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


class BaseModule(StepLogging, HostCopies, L.LightningModule):
    """Shared parts. Subclasses set ``self.val_acc``/``self.test_acc`` via :meth:`_build_metrics`.

    - A batch is unpacked once per step by :meth:`unpack_batch` into ``Batch(inputs, targets, index)``;
      override that one method for other layouts (dict batches, extra fields).
    - Teacher components (:class:`~lightning_kd.Teacher` and kin) are found by type: their parameters never
      reach the optimizer, their weights are left out of checkpoints and put back on load.
    - Feature-term components get their hooks from the :class:`~lightning_kd.callbacks.FeatureHooks`
      callback this module adds (``configure_callbacks``; an override must extend ``super()``'s list).

    Args:
        optimizer: builds the optimizer from the trainable parameters (YAML: ``class_path`` + ``init_args``).
        lr_scheduler: builds a scheduler from the optimizer; an unset ``total_steps`` (OneCycleLR) is filled
            with ``trainer.estimated_stepping_batches``.
        scheduler_interval: ``step`` or ``epoch``; ``auto`` steps per batch when ``total_steps`` was filled.

    The class attributes ``divergence_factor`` and ``divergence_floor`` (see
    :class:`~lightning_kd.modules.step_log.StepLogging`) say when a finite but soaring training loss stops the
    run (:class:`DivergedLossError`).
    """

    def __init__(
        self,
        optimizer: OptimizerCallable,
        lr_scheduler: LRSchedulerCallable | None,
        scheduler_interval: Literal["auto", "step", "epoch"],
    ) -> None:
        super().__init__()
        if scheduler_interval not in ("auto", "step", "epoch"):
            raise ValueError(
                f"scheduler_interval must be 'auto', 'step' or 'epoch', got {scheduler_interval!r}; use 'step' to step "
                "the scheduler after every batch, 'epoch' after every epoch, or 'auto'."
            )
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.scheduler_interval = scheduler_interval
        self._step = new_step_state()  # what log_step keeps between steps (StepLogging)

    def _build_metrics(self, num_classes: int) -> None:
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")

    # -- the batch protocol ---------------------------------------------------------------------------
    def unpack_batch(self, batch: Any) -> Batch:
        """Split a batch into ``Batch(inputs, targets, index)``. Override for other layouts."""
        return unpack_batch(batch)

    def _eval_step(self, batch: Batch, stage: Literal["val", "test"]) -> None:
        raise NotImplementedError

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(self.unpack_batch(batch), "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(self.unpack_batch(batch), "test")

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        """Class probabilities of the (student) model; batches may be bare inputs or ``(inputs, targets)``."""
        return self(self.unpack_batch(batch).inputs).softmax(-1)

    def example_batch(self, why: str = "a dry forward pass") -> Batch:
        """A batch for a dry forward pass before training (e.g. to size connectors): ``example_input_array`` when
        set, else the first training batch of the data module (two samples of it), on the module's device."""
        if self.example_input_array is not None:
            return Batch(move_data_to_device(self.example_input_array, self.device))
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        if datamodule is None:
            raise RuntimeError(
                f"{type(self).__name__} needs one example batch before the optimizer exists ({why}), and there is "
                "none: pass the data as a LightningDataModule (trainer.fit(module, datamodule=...)) or set "
                "module.example_input_array to a batch of inputs."
            )
        batch = self.unpack_batch(move_data_to_device(next(iter(datamodule.train_dataloader())), self.device))
        inputs, index = batch.inputs, batch.index
        if isinstance(inputs, Tensor) and len(inputs) > 2:  # shapes need two samples, not an ImageNet batch on CPU
            inputs = inputs[:2]
            index = index[:2] if isinstance(index, Tensor) else index
        return Batch(inputs, None, index)

    # -- components found by type ---------------------------------------------------------------------
    def teacher_components(self) -> list[tuple[str, TeacherBase]]:
        """``(name, component)`` of every teacher component in this module."""
        return [(name, m) for name, m in self.named_modules() if isinstance(m, TeacherBase)]

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimizer gets: those with ``requires_grad``, never a teacher's (even after
        ``unfreeze()``, which switches ``requires_grad`` on everywhere)."""
        frozen = {id(p) for _, t in self.teacher_components() for p in t.parameters()}
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

    def configure_callbacks(self) -> list[L.Callback]:
        from lightning_kd.callbacks.run_checks import RunChecks

        callbacks = [*(super().configure_callbacks() or []), RunChecks()]
        if any(isinstance(m, FeatureTerms) and len(m) for m in self.modules()):
            from lightning_kd.callbacks.feature_hooks import FeatureHooks

            callbacks.append(FeatureHooks())
        return callbacks

    # -- checkpoints without the teachers ------------------------------------------------------------
    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """Lightning's ``load_from_checkpoint``, after a look at the file's module class: a checkpoint of an
        unrelated class (a DistillationModule's into ClassificationModule) is refused naming the class to load it
        with, before Lightning's own class check gives a misleading 'import the module' advice."""
        peeked = peek_checkpoint(checkpoint_path)
        if peeked is not None:
            check_module_class(cls, peeked, source=f"checkpoint {os.fspath(checkpoint_path)!r}")
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    def on_fit_start(self) -> None:
        self.train_what_is_trained()

    def on_train_epoch_start(self) -> None:
        self.train_what_is_trained()

    def train_what_is_trained(self) -> None:
        """At the start of fit and of every epoch, put each trained part (student, connectors, discriminator…)
        that is wholly in eval mode back in train mode: a model loaded with ``from_pretrained`` comes in eval mode
        (dropout off for every step), and Lightning no longer switches modes itself. A part in train mode keeps
        the submodules its user froze in eval (BatchNorm statistics); teacher components stay in eval mode."""
        self.training = True
        for child in self.children():
            if not child.training and not isinstance(child, TeacherBase):
                child.train()

    def on_train_epoch_end(self) -> None:
        self.check_finite(f"at the end of epoch {self.current_epoch}")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        from lightning_kd import __version__

        if self._trainer is not None and self.trainer.training:
            self.check_finite("before writing a checkpoint")
        checkpoint[CHECKPOINT_VERSION_KEY] = __version__
        checkpoint[CHECKPOINT_CLASS_KEY] = f"{type(self).__module__}.{type(self).__qualname__}"
        state = checkpoint["state_dict"]
        for name, teacher in self.teacher_components():
            for key in teacher.checkpoint_keys(f"{name}."):
                state.pop(key, None)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_module_class(self, checkpoint)
        if self._trainer is not None and self.trainer.state.fn == "fit":
            for line in resumed_differences(self.hparams, checkpoint.get("hyper_parameters", {})):
                rank_zero_info(f"lightning-kd: {line}")
        for name, teacher in self.teacher_components():
            teacher.refill(checkpoint["state_dict"], f"{name}.")


def dry_run_feature_terms(
    module: nn.Module, terms: FeatureTerms, run_forward: Callable[[], Any], index: Tensor | None = None
) -> None:
    """Size ``terms``' connectors from one forward pass (``run_forward``) of ``module``'s models, in eval mode and
    without gradients, so that nothing is learned or recorded (student BN statistics, CRD memory banks); each
    submodule's own mode is put back after (a user's frozen BN stays frozen)."""
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        with torch.no_grad():
            terms.build(run_forward, index)
    finally:
        for sub, mode in modes.items():
            sub.training = mode

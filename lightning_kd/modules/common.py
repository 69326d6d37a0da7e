"""What every lightning-kd LightningModule shares: the batch protocol, metrics, optimizer and scheduler,
teacher-free checkpoints, and which constructor arguments become hyper-parameters."""

from __future__ import annotations

import importlib
import inspect
import json
import math
from functools import partial
from types import SimpleNamespace
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

CHECKPOINT_VERSION_KEY = "lightning_kd_version"
CHECKPOINT_CLASS_KEY = "lightning_kd_module"


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite: the run stops, and says which term and what to try."""


def _is_plain(value: Any) -> bool:
    """Numbers, strings, ``None`` and containers of them: what a hyper-parameter file and a ``weights_only``
    checkpoint load can hold."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def save_plain_hyperparameters(module: L.LightningModule) -> None:
    """``module.save_hyperparameters()`` for the constructor arguments that are plain values.

    Models, losses, feature terms and optimizer factories are left out: pickled into the checkpoint they
    would make it unloadable with ``torch.load(weights_only=True)``. From Python, pass them again to
    ``load_from_checkpoint``; lightning-kd's CLI stores their ``class_path`` configs in the checkpoint after
    it built the module, so CLI checkpoints reload with no arguments (LIGHTNING.md #9). Call it from
    ``__init__``; arguments of every ``__init__`` on the stack (a subclass's too) are considered.
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
    ignore = sorted(name for name, value in values.items() if not _is_plain(value))
    module.save_hyperparameters(ignore=ignore, frame=frame)


def to_channels_last(*models: nn.Module) -> None:
    """Put every model's weights in ``channels_last`` memory format, in place (idempotent)."""
    for model in models:
        model.to(memory_format=torch.channels_last)


def check_module_class(module: nn.Module, checkpoint: dict[str, Any]) -> None:
    """Refuse a checkpoint written by a module class unrelated to ``module``'s, naming both."""
    saved = checkpoint.get(CHECKPOINT_CLASS_KEY) or checkpoint.get("hyper_parameters", {}).get("_class_path")
    if not isinstance(saved, str):
        return
    module_path, _, name = saved.rpartition(".")
    try:
        saved_cls = getattr(importlib.import_module(module_path), name)
    except (ImportError, AttributeError):
        return
    mine = type(module)
    if isinstance(saved_cls, type) and not (issubclass(mine, saved_cls) or issubclass(saved_cls, mine)):
        raise ValueError(
            f"this checkpoint was written by {saved_cls.__name__} ({saved}) and cannot be loaded into "
            f"{mine.__name__}: load it with {saved_cls.__name__}, or start a new {mine.__name__} run from its "
            "weights (a teacher checkpoint: teacher_ckpt; a student's: lightning_kd.core.weights.load_weights)."
        )


def resumed_differences(current: Any, saved: dict[str, Any]) -> list[str]:
    """Lines saying which hyper-parameters a resumed run changes (plain values, and ``class_path`` configs such as
    the optimizer's): the run uses the new values, and says so."""
    lines = []
    for key, value in saved.items():
        if key.startswith("_") or key not in current:
            continue
        now, was = _canonical(current[key]), _canonical(value)
        if now == was or not (_is_plain(now) and _is_plain(was)):
            continue
        if key in _RESTORED_ON_RESUME:
            lines.append(
                f"resuming restores the checkpoint's {key} state ({_brief(was)}), so the config's {key}="
                f"{_brief(now)} is not used; to train with it, start a new run from the checkpoint's weights"
            )
        else:
            lines.append(f"resuming with {key}={_brief(now)}; the checkpoint was trained with {key}={_brief(was)}")
    return lines


# what Lightning restores from the checkpoint itself when resuming, whatever the module was built with
_RESTORED_ON_RESUME = {"optimizer", "lr_scheduler", "disc_optimizer"}


def _canonical(value: Any) -> Any:
    """Plain JSON data for comparing: tuples become lists (YAML and Python disagree on them)."""
    return json.loads(json.dumps(value, default=repr)) if _is_plain(value) else value


def _brief(value: Any) -> str:
    if isinstance(value, dict) and "class_path" in value:
        args = ", ".join(f"{k}={v!r}" for k, v in (value.get("init_args") or {}).items())
        return f"{value['class_path'].rsplit('.', 1)[-1]}({args})"
    return repr(value)


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
        # a plain object, not module attributes: nn.Module.__setattr__ costs microseconds on every step
        # on the device: the last loss, the running loss sum, the last step's values; the step numbers
        self._step = SimpleNamespace(loss=None, loss_sum=None, values={}, step=0, checked_step=None)

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

    # -- the per-step logging path --------------------------------------------------------------------
    def log_step(
        self,
        loss: Tensor,
        terms: dict[str, Tensor] | None = None,
        records: dict[str, Tensor] | None = None,
        step: int | None = None,
        batch_idx: int | None = None,
    ) -> None:
        """Record this training step's loss and log it, its named ``terms`` (as ``train/loss_<name>``), its
        ``records`` (as ``train/<name>``) and :meth:`step_extras` (e.g. temperature and α).

        Per step this costs no host sync and one device kernel: the values are kept (detached) and the loss is
        added to a running device sum, which turns NaN/inf for good once any step's loss does; it is read at
        logging steps, at each epoch's end and before a checkpoint is written (:meth:`check_finite`), and a
        non-finite sum stops the run with :class:`NonFiniteLossError` naming the terms. Only on the steps the
        logger records (every ``log_every_n_steps``, as Lightning decides;
        with gradient accumulation the last micro-batch's values) are the values read — all of them in one
        host sync — and sent to the loggers as one row at Lightning's step number, with ``epoch`` as Lightning
        adds it; ``train/loss`` also goes through ``self.log`` (``logger=False``) into ``callback_metrics``, so a
        checkpoint or early-stopping callback can monitor it. The other values stay out of Lightning's result
        collection on purpose: every key logged there is re-read after every batch of the epoch, a per-step
        cost. Nothing here is a ``prog_bar`` metric (Lightning converts those to Python numbers after every
        batch); :class:`~lightning_kd.callbacks.KDProgressBar` reads the loss at its own refresh rate.

        Args:
            loss: the step's total loss (0-d).
            terms: the step's named, unweighted loss terms.
            records: other per-step values (e.g. a discriminator's accuracy).
            step: the logging step when ``global_step`` has already moved (manual optimization stepping
                before logging); by default ``global_step``.
            batch_idx: the batch's index in the epoch; with gradient accumulation only the micro-batch that
                completes an optimizer step logs.
        """
        state = self._step
        state.loss = loss = loss.detach()
        if state.loss_sum is None or state.loss_sum.device != loss.device:
            state.loss_sum = loss.new_zeros((), dtype=torch.float32)
        state.loss_sum += loss
        # the last step's values, detached (no graph kept): what a divergence message names
        values = {"loss": loss}
        values.update({f"loss_{name}": value.detach() for name, value in (terms or {}).items()})
        values.update({name: value.detach() for name, value in (records or {}).items()})
        state.values = values
        step = self.global_step if step is None else step
        state.step = step
        trainer = self._trainer
        logs = self._logs_this_step(step, batch_idx)
        if trainer is not None and (logs or trainer.is_last_batch):
            # callback_metrics for checkpoint/early-stopping monitors, fresh at least at each epoch's end
            self.log("train/loss", loss, logger=False)
        if not logs:
            return
        values = {**values, **self.step_extras()}
        if trainer is None:  # training_step called by hand: plain self.log
            for name, value in values.items():
                self.log(f"train/{name}", value)
            return
        # one host sync per logging step: the values and the running loss sum (the divergence check)
        scalars = torch.stack([state.loss_sum, *(v.reshape(()).float() for v in values.values())]).tolist()
        if not math.isfinite(scalars[0]):
            raise NonFiniteLossError(self._divergence_message(f"at step {step}"))
        state.checked_step = step
        if trainer.loggers:
            row = {f"train/{name}": x for name, x in zip(values, scalars[1:])}
            row["epoch"] = trainer.current_epoch
            for logger in trainer.loggers:
                logger.log_metrics(row, step=step)

    def check_finite(self, where: str) -> None:
        """Raise :class:`NonFiniteLossError` if any training loss since the last check was NaN or infinite
        (one host sync). Called at logging steps, at each epoch's end and before a checkpoint is written."""
        state = self._step
        if state.loss_sum is None:
            return
        if not bool(torch.isfinite(state.loss_sum)):
            raise NonFiniteLossError(self._divergence_message(where))
        state.checked_step = state.step

    def _divergence_message(self, where: str) -> str:
        state = self._step
        bad_names = [name for name, value in state.values.items() if not bool(torch.isfinite(value).all())]
        bad = [f"{name} = {state.values[name].item()}" for name in bad_names]
        first = 0 if state.checked_step is None else state.checked_step + 1
        span = f"step {state.step}" if first >= state.step else f"step {first} and step {state.step}"
        hints = []
        if any(name.startswith("loss_kd") for name in bad_names) and "loss_ce" not in bad_names:
            hints.append(
                "the KD term went non-finite first: check the teacher's outputs (a teacher checkpoint with NaN "
                "weights, fp16 overflow of its logits, a corrupted teacher cache) and the temperature"
            )
        lr = None
        if self._trainer is not None and self.trainer.optimizers:
            lr = self.trainer.optimizers[0].param_groups[0].get("lr")
        hints.append(f"lower the learning rate{'' if lr is None else f' (now {lr:g})'}")
        hints.append("clip gradients (trainer.gradient_clip_val: 1.0)")
        hints.append("train in 32-true or bf16-mixed precision instead of 16-mixed")
        values = ", ".join(bad) if bad else "the last step's values are finite again, so it happened in between"
        return (
            f"training diverged: the loss became NaN or infinite {'at' if first >= state.step else 'between'} "
            f"{span} ({where}); non-finite at the last "
            f"step: {values}. Try: {'; '.join(hints)}. No checkpoint with non-finite weights is written: resume "
            "from the last good one (checkpoints/last.ckpt of this run) or start again."
        )

    def _logs_this_step(self, step: int, batch_idx: int | None) -> bool:
        trainer = self._trainer
        if trainer is None:
            return True
        accumulate = trainer.accumulate_grad_batches
        if accumulate > 1 and batch_idx is not None and (batch_idx + 1) % accumulate and not trainer.is_last_batch:
            return False  # a micro-batch that does not complete the optimizer step: the last one logs
        n = trainer.log_every_n_steps
        return bool(trainer.fast_dev_run) or (n > 0 and ((step + 1) % n == 0 or trainer.should_stop))

    def step_extras(self) -> dict[str, Tensor]:
        """Values logged with the step's terms at logging steps only (a subclass's knobs, e.g. temperature)."""
        return {}

    def step_values(self) -> dict[str, float]:
        """The last training step's loss and :meth:`step_extras`, as Python floats (one host sync: call it
        rarely)."""
        if self._step.loss is None:
            return {}
        values = {"loss": self._step.loss, **self.step_extras()}
        return dict(zip(values, torch.stack(list(values.values())).float().tolist()))

    def nonfinite_values(self, reset: bool = True) -> list[str]:
        """If a training loss was NaN or infinite at any step since the last call (one host sync), the names of
        the non-finite values of the last step (``loss`` at least); else ``[]``."""
        step = self._step
        if step.loss_sum is None or bool(torch.isfinite(step.loss_sum)):
            return []
        bad = [name for name, value in step.values.items() if not bool(torch.isfinite(value).all())] or ["loss"]
        if reset:
            step.loss_sum.zero_()
        return bad

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
        from lightning_kd.modules.migrate import migrate_checkpoint

        check_module_class(self, checkpoint)
        migrate_checkpoint(self, checkpoint)
        if self._trainer is not None and self.trainer.state.fn == "fit":
            for line in resumed_differences(self.hparams, checkpoint.get("hyper_parameters", {})):
                rank_zero_info(f"lightning-kd: {line}")
        for name, teacher in self.teacher_components():
            teacher.refill(checkpoint["state_dict"], f"{name}.")

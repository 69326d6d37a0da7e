"""The per-step logging path every lightning-kd module shares, and the two checks it carries at no per-step cost:
a loss that became NaN or infinite (:class:`NonFiniteLossError`), and a loss that stayed finite but rose by orders
of magnitude (:class:`DivergedLossError`)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch
from torch import Tensor

from lightning_kd.core.errors import DivergedLossError, NonFiniteLossError


def new_step_state() -> SimpleNamespace:
    """What :class:`StepLogging` keeps between steps (a plain object: ``nn.Module.__setattr__`` costs microseconds
    on every step): on the device the last loss, the running loss sum and the first step's loss; the last step's
    values; on the host the step numbers and, as of the last check, the sum and how many steps it held."""
    return SimpleNamespace(
        loss=None,
        loss_sum=None,
        first=None,
        first_step=0,
        values={},
        step=0,
        checked_step=None,
        calls=0,
        checked=(0.0, 0),
    )


class StepLogging:
    """Mixin of :class:`~lightning_kd.modules.common.BaseModule`: :meth:`log_step` and the checks it feeds.

    Attributes:
        divergence_factor: the run stops with :class:`DivergedLossError` when the mean training loss since the
            last check exceeds this many times the loss of the first training step (and ``divergence_floor``).
            A loss that falls, as a healthy run's does, never comes near it. ``math.inf`` switches the check off
            (e.g. for a schedule that raises a loss weight from 0 by orders of magnitude on purpose).
        divergence_floor: ... and exceeds this absolute value too, so a loss that starts near 0 (a fine-tuned
            model) may grow a little without an alarm.
    """

    divergence_factor: float = 100.0
    divergence_floor: float = 10.0

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
        non-finite sum stops the run with :class:`NonFiniteLossError` naming the terms; a mean since the last
        read far above the first step's loss (``divergence_factor``) with :class:`DivergedLossError`. Only on the
        steps the logger records (every ``log_every_n_steps``, as Lightning decides; with gradient accumulation
        the last micro-batch's values) are the values read — all of them in one host sync — and sent to the
        loggers as one row at Lightning's step number, with ``epoch`` as Lightning adds it; ``train/loss`` also
        goes through ``self.log`` (``logger=False``) into ``callback_metrics``, so a checkpoint or
        early-stopping callback can monitor it. The other values stay out of Lightning's result collection on
        purpose: every key logged there is re-read after every batch of the epoch, a per-step cost. Nothing here
        is a ``prog_bar`` metric (Lightning converts those to Python numbers after every batch);
        :class:`~lightning_kd.callbacks.KDProgressBar` reads the loss at its own refresh rate.

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
            state.first, state.calls, state.checked = None, 0, (0.0, 0)
        step = self.global_step if step is None else step
        if state.first is None:  # the yardstick of the divergence check, read with the others
            state.first, state.first_step = loss.float().clone(), step
        state.loss_sum += loss
        state.calls += 1
        # the last step's values, detached (no graph kept): what a divergence message names
        values = {"loss": loss}
        values.update({f"loss_{name}": value.detach() for name, value in (terms or {}).items()})
        values.update({name: value.detach() for name, value in (records or {}).items()})
        state.values = values
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
        # one host sync per logging step: the values, the running loss sum and the first loss (the checks)
        scalars = torch.stack([state.loss_sum, state.first, *(v.reshape(()).float() for v in values.values())])
        scalars = scalars.tolist()
        self._check_loss(scalars[0], scalars[1], None)
        if trainer.loggers:
            row = {f"train/{name}": x for name, x in zip(values, scalars[2:])}
            row["epoch"] = trainer.current_epoch
            for logger in trainer.loggers:
                logger.log_metrics(row, step=step)

    def check_finite(self, where: str) -> None:
        """Raise :class:`NonFiniteLossError` if any training loss since the last check was NaN or infinite, or
        :class:`DivergedLossError` if their mean rose ``divergence_factor`` times above the first step's loss (one
        host sync). Called at logging steps, at each epoch's end and before a checkpoint is written."""
        state = self._step
        if state.loss_sum is None:
            return
        total, first = torch.stack([state.loss_sum, state.first]).tolist()
        self._check_loss(total, first, where)

    def _check_loss(self, total: float, first: float, where: str | None) -> None:
        state = self._step
        done_sum, done_calls = state.checked
        n = state.calls - done_calls
        mean = (total - done_sum) / n if n > 0 else 0.0
        nonfinite = not math.isfinite(total)
        diverged = not nonfinite and first > 0 and mean > max(self.divergence_floor, self.divergence_factor * first)
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:  # every process stops together, none waits for the rest
            if not trainer.strategy.reduce_boolean_decision(nonfinite or diverged, all=False):
                state.checked_step, state.checked = state.step, (total, state.calls)
                return
            if not (nonfinite or diverged):
                raise NonFiniteLossError(
                    "training diverged on another process of this run (its message says how); this one stops with it."
                )
        if nonfinite:
            raise NonFiniteLossError(self._divergence_message(where))
        if diverged:
            raise DivergedLossError(self._diverged_message(first, mean, where))
        state.checked_step, state.checked = state.step, (total, state.calls)

    def _span(self) -> str:
        state = self._step
        first = 0 if state.checked_step is None else state.checked_step + 1
        return f"at step {state.step}" if first >= state.step else f"between step {first} and step {state.step}"

    def _hints(self) -> list[str]:
        lr = None
        if self._trainer is not None and self.trainer.optimizers:
            lr = self.trainer.optimizers[0].param_groups[0].get("lr")
        return [
            f"lower the learning rate{'' if lr is None else f' (now {lr:g})'}",
            "clip gradients (trainer.gradient_clip_val: 1.0)",
        ]

    def _divergence_message(self, where: str | None) -> str:
        state = self._step
        bad_names = [name for name, value in state.values.items() if not bool(torch.isfinite(value).all())]
        bad = [f"{name} = {state.values[name].item()}" for name in bad_names]
        hints = []
        if any(name.startswith("loss_kd") for name in bad_names) and "loss_ce" not in bad_names:
            hints.append(
                "the KD term went non-finite first: check the teacher's outputs (a teacher checkpoint with NaN "
                "weights, fp16 overflow of its logits, a corrupted teacher cache) and the temperature"
            )
        hints += self._hints()
        hints.append("train in 32-true or bf16-mixed precision instead of 16-mixed")
        hints.append("check the data for NaN or inf values (only the first batch is checked for you)")
        values = ", ".join(bad) if bad else "the last step's values are finite again, so it happened in between"
        return (
            f"training diverged: the loss became NaN or infinite {self._span()}{f' ({where})' if where else ''}; "
            f"non-finite at the last step: {values}. Try: {'; '.join(hints)}. No checkpoint with non-finite "
            "weights is written: resume from the last good one (checkpoints/last.ckpt of this run) or start again."
        )

    def _diverged_message(self, first: float, mean: float, where: str | None) -> str:
        name = type(self).__name__
        return (
            f"training diverged: the loss rose from {first:.4g} (step {self._step.first_step}) to a mean of {mean:.4g} "
            f"{self._span()}{f' ({where})' if where else ''}, over {self.divergence_factor:g}x where it started; it "
            f"is still finite, but the run is lost. Try: {'; '.join(self._hints())}. If the rise is meant (a loss "
            f"weight scheduled up from 0), raise {name}.divergence_factor (now {self.divergence_factor:g}). No model "
            "is published: resume from an earlier checkpoint (checkpoints/last.ckpt of this run) or start again."
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

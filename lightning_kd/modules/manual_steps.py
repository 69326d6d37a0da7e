"""Stepping helpers for modules with two players under manual optimization (adversarial KD, data-free KD)."""

from __future__ import annotations

from lightning.pytorch.core.optimizer import LightningOptimizer


class ManualSteps:
    """``global_step`` counts one step per batch, as in automatic optimization.

    Under manual optimization Lightning counts every ``LightningOptimizer.step()`` call
    (``_ManualOptimization._on_after_step`` increments ``optim_step_progress``, which ``trainer.global_step``
    reads; Lightning issue #17958), so a second player's updates would move ``max_steps``, OneCycleLR's
    ``total_steps`` and the schedule callbacks too fast. The other player's updates (and any extra student
    updates of one batch) go through :meth:`step_uncounted`: ``trainer.strategy.optimizer_step``, the same
    update with the precision plugin and ``on_before_optimizer_step`` hooks, minus the counter.
    """

    def step_uncounted(self, optimizer: LightningOptimizer) -> None:
        # LightningOptimizer.step() = strategy.optimizer_step() + one more global_step
        self.trainer.strategy.optimizer_step(optimizer.optimizer, closure=lambda: None)

    def step_lr_scheduler(self, batch_idx: int) -> None:
        """Step the (student's) LR scheduler where Lightning's automatic loop would: after each batch, or after
        the epoch's last batch (before validation, so an end-of-epoch checkpoint holds the stepped scheduler)."""
        if not self.trainer.lr_scheduler_configs:
            return
        config = self.trainer.lr_scheduler_configs[0]
        last = self.trainer.is_last_batch or batch_idx + 1 == self.trainer.num_training_batches
        if config.interval == "step" or last:
            config.scheduler.step()

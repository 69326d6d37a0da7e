"""CachedTeacherDistillation: Hinton KD whose training-time teacher logits come from an offline cache.

The cache (:mod:`lightning_kd.cache`, built by ``python -m lightning_kd.cache_build``) holds the teacher's
logits of the exact view each sample has in each epoch, so a step costs a student step plus a gather. The
key is ``(epoch, sample index)``: resuming from a checkpoint looks up the same rows as an uninterrupted run.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from lightning_kd.cache import TeacherCache, teacher_fingerprint
from lightning_kd.cache_build import check_replayable, datamodule_key
from lightning_kd.module import DistillationModule


class CachedTeacherDistillation(DistillationModule):
    """:class:`~lightning_kd.DistillationModule` reading training-time teacher logits from ``teacher_cache``.

    The teacher is still built (and ``teacher_ckpt`` loaded): validation and test report its accuracy, and
    its weights' fingerprint must match the cache's. At fit start the run is refused, with the reason, when
    the data module augments without ``augment_seed`` (non-replayable views: the cache would be wrong), has
    no ``with_indices``, differs from the cache's key (``augment_seed``, padding, flip, training samples),
    when the teacher's weights differ, or when ``max_epochs`` exceeds the cached epochs (augmenting data
    only: without augmentation one cached epoch serves all).

    There are no feature terms (they need the teacher's intermediate features, which a logit cache does
    not hold) and the teacher stays in eval mode, as when the cache was built.

    Args:
        teacher: the network the cache was built from (YAML: ``class_path``/``init_args``).
        student: the network to train.
        teacher_cache: folder of the cache (see :func:`lightning_kd.cache_build.build_teacher_cache`).
        teacher_ckpt: weights for the teacher; ``None`` keeps it as built.
        temperature: softening temperature ``T > 0``.
        alpha: weight of the KD term in ``[0, 1]``; CE gets ``1 − α``.
        num_classes: classes; inferred from the student when ``None``.
        optimizer: optimizer over the student's parameters.
        lr_scheduler: optional LR scheduler (an unset ``total_steps`` is filled in).
        scheduler_interval: ``auto``, ``step`` or ``epoch``.
        distill_loss: the logit term ``kd`` (default ``KDLoss(temperature)``).
        save_teacher: also store the teacher's weights in checkpoints.
        preload_cache: copy the whole cache onto the training device at fit start (one gather per step, no
            host round trip; Fashion-MNIST, 15 epochs, fp16: 18 MB). ``False`` reads rows from the
            memory-mapped files each step, for caches larger than device memory.

    Example::

        python -m lightning_kd.cache_build --config configs/fashion_mnist/kd_cached.yaml
        lightning-kd fit --config configs/fashion_mnist/kd_cached.yaml
    """

    def __init__(
        self,
        teacher: nn.Module,
        student: nn.Module,
        teacher_cache: str,
        teacher_ckpt: str | None = None,
        temperature: float | None = None,
        alpha: float = 0.9,
        num_classes: int | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: Literal["auto", "step", "epoch"] = "auto",
        distill_loss: nn.Module | None = None,
        save_teacher: bool = False,
        preload_cache: bool = True,
    ) -> None:
        super().__init__(
            teacher,
            student,
            teacher_ckpt=teacher_ckpt,
            temperature=temperature,
            alpha=alpha,
            num_classes=num_classes,
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
            scheduler_interval=scheduler_interval,
            distill_loss=distill_loss,
            save_teacher=save_teacher,
        )
        self.teacher_cache = teacher_cache
        self.preload_cache = preload_cache
        self.cache: TeacherCache | None = None  # opened and checked in setup("fit")

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit":
            self.cache = self.open_cache()

    def open_cache(self) -> TeacherCache:
        """Open ``teacher_cache`` and check it against the data module, the teacher and ``max_epochs``.

        Raises:
            FileNotFoundError: no (finished) cache at ``teacher_cache``.
            ValueError: the data module is not replayable or the cache was built for something else.
        """
        trainer = self.trainer
        datamodule = check_replayable(trainer.datamodule)
        cache = TeacherCache.open(self.teacher_cache)
        cache.check(datamodule_key(datamodule), against=f"data module {type(datamodule).__name__}")
        cache.check({"num_classes": self.num_classes}, against="the student")
        cache.check({"teacher": teacher_fingerprint(self.teacher)}, against="this run's teacher")
        max_epochs = trainer.max_epochs
        if cache.per_epoch and max_epochs is not None and max_epochs > cache.epochs:
            raise ValueError(
                f"max_epochs={max_epochs} but teacher cache {self.teacher_cache!r} holds {cache.epochs} epochs of "
                f"augmented views; rebuild it with --epochs {max_epochs} or lower max_epochs."
            )
        return cache

    def on_fit_start(self) -> None:
        if self.preload_cache and self.cache is not None:
            self.cache.to(self.device)

    def teacher_logits(self, batch: Any, inputs: Any) -> Tensor:
        """The cached teacher logits of this batch's samples in this epoch (fp32)."""
        if self.cache is None:
            raise RuntimeError("the teacher cache is opened when fit starts; training_step ran outside Trainer.fit.")
        indices = self.batch_indices(batch)
        if indices is None:
            raise ValueError("a cached teacher needs sample indices in the batch: set with_indices: true.")
        return self.cache.lookup(self.current_epoch, indices)

    def teardown(self, stage: str) -> None:
        super().teardown(stage)
        if stage == "fit":
            self.cache = None  # release the memory map and the device copy

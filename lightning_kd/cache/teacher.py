"""CachedTeacher: a teacher component whose training-time logits come from an offline cache.

The cache (:mod:`lightning_kd.cache.store`, built by ``lightning-kd cache``) holds the teacher's logits of
the exact view each sample has in each epoch, so a KD step costs a student step plus a gather. The key is
``(epoch, sample index)``: resuming from a checkpoint looks up the same rows as an uninterrupted run.

It answers the same call as a live :class:`~lightning_kd.Teacher`, so any distillation module takes it::

    model:
      class_path: lightning_kd.DistillationModule
      init_args:
        teacher:
          class_path: lightning_kd.CachedTeacher
          init_args:
            path: runs/fashion_mnist/teacher_cache
            model: {class_path: lightning_kd.models.ResNet, init_args: {...}}
            ckpt: runs/fashion_mnist/teacher/model.ckpt
"""

from __future__ import annotations

import os
from typing import Any

from torch import Tensor, nn

from lightning_kd.cache.keys import check_replayable, datamodule_key
from lightning_kd.cache.store import TeacherCache
from lightning_kd.core.batch import inputs_device
from lightning_kd.core.digest import weights_fingerprint
from lightning_kd.core.teacher import Teacher, TeacherBase, TeacherOutput


class CachedTeacher(TeacherBase):
    """Teacher logits from an offline cache in training; from the live ``model`` (when given) elsewhere.

    At fit start (:meth:`prepare_fit`) the cache is opened and the run is refused, with the reason, when the
    data module augments without ``augment_seed`` (non-replayable views: the cache would be wrong), has no
    ``with_indices``, differs from the cache's key (``augment_seed``, padding, flip, training samples),
    when the model's weights differ from those the cache was built from, or when ``max_epochs`` exceeds
    the cached epochs (augmenting data only: without augmentation one cached epoch serves all).

    A cache holds logits, not intermediate features: feature terms are refused with this teacher.

    Args:
        path: folder of the cache (see :func:`lightning_kd.cache.build_teacher_cache`).
        model: the network the cache was built from (optional): its weights' fingerprint is checked against
            the cache's, and validation/test report its accuracy. Without it, no teacher accuracy is logged.
        ckpt: weights for ``model`` (as :class:`~lightning_kd.Teacher`'s ``ckpt``).
        preload: copy the whole cache onto the training device at the first lookup (one gather per step, no
            host round trip; Fashion-MNIST, 15 epochs, fp16: 18 MB). ``False`` reads rows from the
            memory-mapped files each step, for caches larger than device memory.

    Example::

        lightning-kd cache --config configs/fashion_mnist/base.yaml --config configs/fashion_mnist/kd_cached.yaml
        lightning-kd fit   --config configs/fashion_mnist/base.yaml --config configs/fashion_mnist/kd_cached.yaml
    """

    def __init__(
        self,
        path: str,
        model: nn.Module | None = None,
        ckpt: str | None = None,
        preload: bool = True,
    ) -> None:
        super().__init__()
        if ckpt is not None and model is None:
            raise ValueError(f"CachedTeacher got ckpt={str(ckpt)!r} but no model to load it into; give `model` too.")
        self.path = os.fspath(path)
        self.live = Teacher(model, ckpt=ckpt) if model is not None else None
        self.preload = preload
        self.cache: TeacherCache | None = None  # opened and checked in prepare_fit
        self._num_classes: int | None = None

    @property
    def num_classes(self) -> int | None:
        if self.live is not None:
            return self.live.num_classes
        return self.cache.meta["num_classes"] if self.cache is not None else None

    def prepare_fit(self, datamodule: Any = None, max_epochs: int | None = None) -> None:
        """Open the cache and check it against the data module, the model and ``max_epochs``.

        Raises:
            FileNotFoundError: no (finished) cache at ``path``.
            ValueError: the data module is not replayable or the cache was built for something else.
        """
        datamodule = check_replayable(datamodule)
        cache = TeacherCache.open(self.path)
        cache.check(datamodule_key(datamodule), against=f"data module {type(datamodule).__name__}")
        if self.live is not None:
            cache.check({"teacher": weights_fingerprint(self.live.model)}, against="this run's teacher")
        if cache.per_epoch and max_epochs is not None and max_epochs > cache.epochs:
            raise ValueError(
                f"max_epochs={max_epochs} but teacher cache {self.path!r} holds {cache.epochs} epochs of augmented "
                f"views; rebuild it with --epochs {max_epochs} or lower max_epochs."
            )
        self.cache = cache

    def inputs(self) -> list[tuple[str, str]]:
        return [("the teacher cache", self.path), *(self.live.inputs() if self.live is not None else [])]

    def release(self) -> None:
        self.cache = None  # the memory map and any device copy go with it

    def forward(self, inputs: Any, index: Tensor | None = None, epoch: int | None = None) -> TeacherOutput:
        if index is not None and epoch is not None:
            if self.cache is None:
                raise RuntimeError(
                    "the teacher cache is opened when fit starts (prepare_fit); a training step ran outside "
                    "Trainer.fit."
                )
            device = inputs_device(inputs) or index.device
            if self.preload and not self.cache.preloaded:
                self.cache.to(device)
            return TeacherOutput(logits=self.cache.lookup(epoch, index, device))
        if self.live is not None:
            return self.live(inputs)
        return TeacherOutput()

    def checkpoint_keys(self, prefix: str) -> list[str]:
        return []  # the live model is a Teacher component and answers for its own keys

    def refill(self, state: dict[str, Any], prefix: str) -> None:
        return None

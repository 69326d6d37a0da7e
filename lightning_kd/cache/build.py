"""Build an offline teacher cache (:mod:`lightning_kd.cache`) for a data module: run the teacher once over every
training view it will be asked about. From a recipe: ``lightning-kd cache`` (:mod:`lightning_kd.apps.cache`)."""

from __future__ import annotations

import contextlib
import os

import torch
from torch import nn

from lightning_kd.cache.keys import check_replayable, datamodule_key
from lightning_kd.cache.store import Storage, TeacherCache
from lightning_kd.core.digest import weights_fingerprint
from lightning_kd.data.base import InMemoryDataModule

_AUTOCAST = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
_NO_AUTOCAST = ("32-true", "32", "64-true", "64")


def _autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    precision = str(precision)
    if precision in _AUTOCAST:
        return torch.autocast(device.type, dtype=_AUTOCAST[precision])
    if precision in _NO_AUTOCAST:
        return contextlib.nullcontext()
    raise ValueError(f"precision must be one of {[*_AUTOCAST, *_NO_AUTOCAST]}, got {precision!r}.")


def build_teacher_cache(
    teacher: nn.Module,
    datamodule: InMemoryDataModule,
    path: str | os.PathLike,
    epochs: int,
    storage: Storage = "fp16",
    k: int | None = None,
    temperature: float = 4.0,
    batch_size: int = 1024,
    device: torch.device | str | None = None,
    precision: str = "32-true",
    overwrite: bool = False,
) -> TeacherCache:
    """Run ``teacher`` (eval mode, no grad) on the training view of every sample ``i`` in every epoch
    ``e < epochs`` — exactly the view ``datamodule`` gives the student — and store its logits in ``path``.

    Without augmentation one epoch is stored and serves every epoch.

    A finished cache already in ``path`` is never silently replaced: a rebuild of the same key (same teacher
    weights, data and augmentation; e.g. more epochs or another storage) replaces it, as does any build
    into an unfinished one (no ``meta.json``); a cache built for anything else needs ``overwrite=True``.

    Args:
        teacher: the trained teacher (moved to ``device`` for the build, then back).
        datamodule: an :class:`InMemoryDataModule` with ``with_indices`` and, if it augments, ``augment_seed``.
        path: folder of the cache.
        epochs: training epochs to cover.
        storage: ``fp16``, ``fp32`` or ``topk`` (see :class:`TeacherCache`).
        k: classes kept with ``storage="topk"``.
        temperature: with ``topk``, the temperature whose remaining probability mass is kept exactly (the KD
            temperature).
        batch_size: samples per teacher forward.
        device: where the teacher runs (default: CUDA if available).
        precision: the trainer's precision: ``bf16-mixed``/``16-mixed`` run the teacher under the same
            autocast as in an online KD step, ``32-true`` in fp32.
        overwrite: replace a finished cache in ``path`` that was built for another teacher, data set or
            augmentation.

    Returns:
        The finished cache, opened for reading.

    Raises:
        FileExistsError: ``path`` holds a finished cache built for something else and ``overwrite`` is off
            (checked before the teacher runs over the data).
        ValueError: the data module is not replayable, or the teacher's logits are NaN/inf.
    """
    check_replayable(datamodule)
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}.")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    amp = _autocast(precision, device)  # re-entered for every batch
    key = datamodule_key(datamodule)
    key["teacher"] = weights_fingerprint(teacher)
    key["precision"] = str(precision)  # informative only: never checked
    train = datamodule.splits["train"]
    n = len(train)
    stored = epochs if key["augment"] else 1
    first = next(iter(teacher.parameters()), None)
    home, was_training = (first.device if first is not None else device), teacher.training
    teacher.eval().to(device)
    try:
        with torch.no_grad():
            num_classes = teacher(train.images[:1].to(device)).shape[-1]
            cache = TeacherCache.create(path, n, num_classes, stored, key, storage, k, temperature, overwrite)
            for epoch in range(stored):
                for start in range(0, n, batch_size):
                    idx = torch.arange(start, min(start + batch_size, n))
                    images = train.images[idx].to(device, non_blocking=True)
                    images = datamodule.train_view(images, idx.to(device), epoch)
                    with amp:  # the teacher only, as in an online KD step
                        logits = teacher(images)
                    cache.write(epoch, idx, logits)
    finally:
        teacher.to(home).train(was_training)
    cache.finish()
    return TeacherCache.open(path)

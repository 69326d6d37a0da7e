"""Build an offline teacher cache (:mod:`lightning_kd.cache`) for a data module, from Python or a recipe.

Command line, from the recipe that will use the cache (its teacher, checkpoint, data module and
precision; ``--epochs`` defaults to the recipe's ``max_epochs``, ``--out`` to its CachedTeacher's ``path``)::

    lightning-kd cache --config configs/fashion_mnist/base.yaml --config configs/fashion_mnist/kd_cached.yaml
    lightning-kd cache --config … --epochs 15 --out runs/fashion_mnist/teacher_cache --storage topk --k 4
    lightning-kd cache --config … --overwrite   # replace a finished cache built for another teacher or data

(``python -m lightning_kd.cache`` and the 0.1.0 ``python -m lightning_kd.cache_build`` are the same.)

Arguments it does not know (``--data.init_args.data_dir=…``) go to the recipe, as in ``lightning-kd fit``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightning_kd.cache.store import Storage, TeacherCache, dataset_fingerprint
from lightning_kd.core.teacher import Teacher, weights_fingerprint
from lightning_kd.data.base import InMemoryDataModule

_AUTOCAST = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
_NO_AUTOCAST = ("32-true", "32", "64-true", "64")


def check_replayable(datamodule: Any) -> InMemoryDataModule:
    """Raise ``ValueError`` unless ``datamodule`` gives every training sample a view a cache can replay."""
    if not isinstance(datamodule, InMemoryDataModule):
        raise ValueError(
            f"a teacher cache needs an InMemoryDataModule (replayable augmentation, sample indices), got "
            f"{type(datamodule).__name__}; pass it as trainer.fit(model, datamodule=...)."
        )
    if datamodule.augment and datamodule.augment_seed is None:
        raise ValueError(
            f"{type(datamodule).__name__} has augment=True but no augment_seed: the cache would be wrong under "
            "random augmentation: set augment_seed, or augment: false."
        )
    if not datamodule.with_indices:
        raise ValueError(
            f"{type(datamodule).__name__} has with_indices=False: cache lookups need each sample's index; "
            "set with_indices: true."
        )
    return datamodule


def datamodule_key(datamodule: InMemoryDataModule) -> dict[str, Any]:
    """What a cache must match in the data module: the augmentation (``None`` fields when it is off) and the
    training split (size and a fingerprint). Sets the data module up if needed."""
    if "train" not in datamodule.splits:
        datamodule.setup("fit")
    train = datamodule.splits["train"]
    augment = bool(datamodule.augment)
    return {
        "augment": augment,
        "augment_seed": datamodule.augment_seed if augment else None,
        "padding": datamodule.crop_padding if augment else None,
        "flip": datamodule.flip if augment else None,
        "num_samples": len(train),
        "dataset": dataset_fingerprint(train.images, train.labels),
    }


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


def build_from_recipe(
    config: str | os.PathLike | Sequence[str | os.PathLike],
    out: str | os.PathLike | None = None,
    epochs: int | None = None,
    overrides: Sequence[str] = (),
    storage: Storage = "fp16",
    k: int | None = None,
    batch_size: int = 1024,
    device: str | None = None,
    overwrite: bool = False,
) -> TeacherCache:
    """Build the cache a recipe needs: its teacher (with ``teacher_ckpt``, seeded as ``fit`` seeds it), its
    data module and precision. ``out`` defaults to the CachedTeacher's ``path``, ``epochs`` to the
    trainer's ``max_epochs``, the top-k temperature to the model's ``temperature``. ``overrides`` are extra
    command-line arguments for the recipe (``--data.init_args.data_dir=…``). ``overwrite`` replaces a finished
    cache in ``out`` built for something else (see :func:`build_teacher_cache`)."""
    from lightning_kd.apps.cli import build_cli

    configs = [config] if isinstance(config, str | os.PathLike) else list(config)
    args = [a for c in configs for a in ("--config", str(c))] + list(overrides)
    cli = build_cli(args, run=False)
    model, trainer = cli.model, cli.trainer
    out = out if out is not None else getattr(model.teacher, "path", None)
    if out is None:
        raise ValueError("the recipe's teacher is not a CachedTeacher with a `path`: pass --out.")
    epochs = epochs if epochs is not None else trainer.max_epochs
    if epochs is None or epochs < 1:
        raise ValueError(f"the recipe sets no max_epochs ({epochs}): pass --epochs.")
    from lightning_kd.cache.teacher import CachedTeacher

    component = model.teacher
    if isinstance(component, CachedTeacher):
        if component.live is None:
            raise ValueError("the recipe's CachedTeacher has no `model` to run: give it the teacher network.")
        teacher = component.live.model
    elif isinstance(component, Teacher):
        teacher = component.model
    else:
        raise ValueError(f"cannot build a cache for a {type(component).__name__} teacher; use one Teacher.")
    return build_teacher_cache(
        teacher,
        cli.datamodule,
        out,
        epochs,
        storage=storage,
        k=k,
        temperature=getattr(model, "temperature", 4.0),
        batch_size=batch_size,
        device=device,
        precision=str(trainer.precision),
        overwrite=overwrite,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """``lightning-kd cache --config recipe.yaml [--config fragment.yaml] [--epochs E] [--out DIR] [--overwrite]
    [...]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action="append", help="recipe YAML (repeatable; required)")
    parser.add_argument("--out", help="cache folder (default: the recipe's CachedTeacher path)")
    parser.add_argument("--epochs", type=int, help="epochs to cover (default: the recipe's max_epochs)")
    parser.add_argument("--storage", choices=["fp16", "fp32", "topk"], default="fp16")
    parser.add_argument("--k", type=int, help="classes kept per sample with --storage topk")
    parser.add_argument("--batch_size", type=int, default=1024)
    parser.add_argument("--device", help="default: cuda if available, else cpu")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a finished cache in --out built for another teacher, data set or augmentation",
    )
    opts, overrides = parser.parse_known_args(argv)
    if not opts.config:
        parser.error(
            "the following arguments are required: --config (the recipe whose teacher is cached); give it as for "
            "`lightning-kd fit`, e.g. lightning-kd cache --config configs/fashion_mnist/base.yaml --config "
            "configs/fashion_mnist/kd_cached.yaml"
        )
    start = time.perf_counter()
    cache = build_from_recipe(
        opts.config,
        opts.out,
        opts.epochs,
        overrides,
        opts.storage,
        opts.k,
        opts.batch_size,
        opts.device,
        overwrite=opts.overwrite,
    )
    shapes = {name: tuple(a.shape) for name, a in cache.arrays.items()}
    print(
        f"teacher cache {Path(cache.path)}: {shapes}, {cache.nbytes / 2**20:.1f} MiB, "
        f"{time.perf_counter() - start:.1f} s"
    )


if __name__ == "__main__":  # pragma: no cover
    main()

"""``lightning-kd cache``: build the offline teacher cache a recipe's :class:`~lightning_kd.CachedTeacher` reads.

From the recipe that will use the cache (its teacher, checkpoint, data module and precision; ``--epochs``
defaults to the recipe's ``max_epochs``, ``--out`` to its CachedTeacher's ``path``)::

    lightning-kd cache --config configs/fashion_mnist/base.yaml --config configs/fashion_mnist/kd_cached.yaml
    lightning-kd cache --config … --epochs 15 --out runs/fashion_mnist/teacher_cache --storage topk --k 4
    lightning-kd cache --config … --overwrite   # replace a finished cache built for another teacher or data

Arguments it does not know (``--data.init_args.data_dir=…``) go to the recipe, as in ``lightning-kd fit``.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from pathlib import Path

from lightning_kd.apps.cli import build_cli
from lightning_kd.cache.build import build_teacher_cache
from lightning_kd.cache.store import Storage, TeacherCache
from lightning_kd.cache.teacher import CachedTeacher
from lightning_kd.core.teacher import Teacher


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

"""``lightning-kd cache-lm``: build the LM teacher store a recipe's :class:`~lightning_kd.CachedLMTeacher` reads
(of the kind it names: top-k or sampled), and print its fidelity report (:mod:`lightning_kd.cache.lm_fidelity`).

lightning-kd cache-lm --config configs/lm/base.yaml --config configs/lm/kd_offline_topk.yaml --k 32
lightning-kd cache-lm --config configs/lm/base.yaml --config configs/lm/kd_offline_sampled.yaml --k 32 --seed 0
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from lightning_kd.apps.cli import build_cli
from lightning_kd.cache.lm_build import build_lm_store
from lightning_kd.cache.lm_fidelity import describe
from lightning_kd.cache.lm_store import LMTeacherStore, StoreDtype
from lightning_kd.cache.lm_teacher import CachedLMTeacher
from lightning_kd.core.lm import CausalLMTeacher


def build_from_recipe(
    configs: Sequence[str],
    overrides: Sequence[str] = (),
    out: str | None = None,
    k: int = 32,
    dtype: StoreDtype = "fp16",
    batch_size: int = 16,
    device: str | None = None,
    overwrite: bool = False,
    seed: int = 0,
) -> LMTeacherStore:
    """Build the store a recipe's :class:`CachedLMTeacher` reads: its teacher model and checkpoint, its data
    module, its module's ``temperature``, its ``kind``; ``out`` defaults to the teacher's ``path``; ``seed`` seeds
    a sampled store's draws."""
    cli = build_cli([a for c in configs for a in ("--config", str(c))] + list(overrides), run=False)
    component = cli.model.teacher
    kind = getattr(component, "kind", "topk")
    if isinstance(component, CachedLMTeacher):
        if component.live is None:
            raise ValueError("the recipe's CachedLMTeacher has no `model` to run: give it the teacher network.")
        teacher, out = component.live.model, out or component.path
    elif isinstance(component, CausalLMTeacher):
        teacher = component.model
    else:
        raise ValueError(f"cannot build an LM store for a {type(component).__name__} teacher.")
    if out is None:
        raise ValueError("the recipe's teacher is not a CachedLMTeacher with a `path`: pass --out.")
    temperature = float(getattr(cli.model, "temperature", 1.0))
    return build_lm_store(
        teacher, cli.datamodule, out, k, temperature, dtype, batch_size, device, overwrite, kind=kind, seed=seed
    )


def main(argv: Sequence[str] | None = None) -> None:
    """``lightning-kd cache-lm --config recipe.yaml [--config fragment.yaml] [--k 32] [--out DIR] [...]``."""
    parser = argparse.ArgumentParser(
        description="Store a causal-LM teacher's top-k log-probabilities (or k draws from it) per token."
    )
    parser.add_argument("--config", action="append", required=True, help="recipe YAML (repeatable)")
    parser.add_argument("--out", help="store folder (default: the recipe's CachedLMTeacher path)")
    parser.add_argument("--k", type=int, default=32, help="tokens kept (top-k) or drawn (sampled) per position")
    parser.add_argument("--seed", type=int, default=0, help="seed of a sampled store's draws (default 0)")
    parser.add_argument("--dtype", choices=["fp16", "fp32"], default="fp16", help="log-probability storage")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--device", help="default: cuda if available, else cpu")
    parser.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    opts, overrides = parser.parse_known_args(argv)
    start = time.perf_counter()
    store = build_from_recipe(
        opts.config, overrides, opts.out, opts.k, opts.dtype, opts.batch_size, opts.device, opts.overwrite, opts.seed
    )
    n, seq_len, k = store.arrays["logprobs"].shape
    print(
        f"LM teacher store {store.path} ({store.meta['kind']}): {n} sequences x {seq_len} tokens, k={k}, "
        f"T={store.meta['temperature']}, {store.nbytes / 2**20:.1f} MiB, {time.perf_counter() - start:.1f} s\n"
        f"  fidelity: {describe(store.meta['fidelity'])}"
    )

"""``lightning-kd cache-lm``: build the LM teacher store a recipe's :class:`~lightning_kd.CachedLMTeacher` reads
(of the kind it names: top-k or sampled), and print its fidelity report (:mod:`lightning_kd.cache.lm_fidelity`).

lightning-kd cache-lm --config configs/lm/base.yaml --config configs/lm/kd_offline_topk.yaml --k 32
lightning-kd cache-lm --config configs/lm/base.yaml --config configs/lm/kd_offline_sampled.yaml --k 32 --seed 0
lightning-kd cache-lm --config configs/lm/base.yaml --config configs/lm/kd_offline_topk.yaml --k 20 \
    --server http://gpu-box:8000      # the teacher behind an OpenAI-compatible server (lightning_kd.cache.lm_server)
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from lightning_kd.apps.cli import build_cli
from lightning_kd.cache.lm_build import build_lm_store
from lightning_kd.cache.lm_fidelity import describe
from lightning_kd.cache.lm_server import CompletionsServer, build_lm_store_from_server
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
    server: CompletionsServer | None = None,
) -> LMTeacherStore:
    """Build the store a recipe's :class:`CachedLMTeacher` reads: its teacher model and checkpoint, its data
    module, its module's ``temperature``, its ``kind``; ``out`` defaults to the teacher's ``path``; ``seed`` seeds
    a sampled store's draws. With ``server`` the teacher's answers come from it (a top-k store; the recipe's teacher
    model, if any, is not run)."""
    cli = build_cli([a for c in configs for a in ("--config", str(c))] + list(overrides), run=False)
    component = cli.model.teacher
    kind = getattr(component, "kind", "topk")
    temperature = float(getattr(cli.model, "temperature", 1.0))
    if server is not None:
        if kind != "topk":
            raise ValueError(
                "a server returns its top-N log-probabilities only, so tokens cannot be drawn from its whole "
                "distribution: give the recipe's CachedLMTeacher kind: topk to fill a store from --server."
            )
        out = out or getattr(component, "path", None)
        if out is None:
            raise ValueError("the recipe's teacher is not a CachedLMTeacher with a `path`: pass --out.")
        return build_lm_store_from_server(server, cli.datamodule, out, k, temperature, dtype, batch_size, overwrite)
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
    parser.add_argument("--server", help="fill from this OpenAI-compatible completions server (e.g. vLLM's) instead")
    parser.add_argument("--server_model", help="the served model's name (default: the first /v1/models lists)")
    parser.add_argument("--retries", type=int, default=5, help="retries per request to --server (default 5)")
    opts, overrides = parser.parse_known_args(argv)
    start = time.perf_counter()
    server = CompletionsServer(opts.server, opts.server_model, retries=opts.retries) if opts.server else None
    store = build_from_recipe(
        opts.config,
        overrides,
        opts.out,
        opts.k,
        opts.dtype,
        opts.batch_size,
        opts.device,
        opts.overwrite,
        opts.seed,
        server,
    )
    n, seq_len, k = store.arrays["logprobs"].shape
    source = f" from {store.meta['server_model']} at {store.meta['server_url']}" if opts.server else ""
    print(
        f"LM teacher store {store.path} ({store.meta['kind']}{source}): {n} sequences x {seq_len} tokens, k={k}, "
        f"T={store.meta['temperature']}, {store.nbytes / 2**20:.1f} MiB, {time.perf_counter() - start:.1f} s\n"
        f"  fidelity: {describe(store.meta['fidelity'])}"
    )

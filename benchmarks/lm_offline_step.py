"""Time per training step of causal-LM KD from the live teacher vs from an offline top-k store, side by side.

    python benchmarks/lm_offline_step.py                      # the configs/lm sizes: teacher 2.2 M, student 0.6 M
    python benchmarks/lm_offline_step.py --k 32 --steps 20 --repeats 5 --json lm_offline.json

Every case runs a real ``CausalLMDistillation`` training step (forward KL, AdamW) on the same batches of 32 x 128
tokens (vocabulary 4096), in one process, repeats interleaved, medians reported: ``live`` runs the teacher model
on every step (full logits; ``live_chunked``: the recipes' default, heads and loss 256 tokens at a time);
``offline`` reads the teacher's top-k log-probabilities from a store built once beforehand (the build time is
reported too) and compares over k + 1 buckets (``offline_uniform``: rebuilds a full distribution, tail uniform);
``offline_sampled`` reads k tokens drawn from the teacher (a sampled store of the same size) and takes the
unbiased estimate; the ``*_chunked`` variants apply the student's head 256 tokens at a time.
Random token ids stand in for text: the cost does not depend on what the tokens say.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import lightning as L
import numpy as np
import torch

from lightning_kd.cache.lm_build import build_lm_store
from lightning_kd.cache.lm_teacher import CachedLMTeacher
from lightning_kd.models.language import llama_lm
from lightning_kd.modules.causal_lm import CausalLMDistillation

TEACHER = dict(hidden_size=176, num_layers=4, num_heads=4, intermediate_size=480, max_position=512)
STUDENT = dict(hidden_size=96, num_layers=2, num_heads=4, intermediate_size=256, max_position=512)


class _Sequences:
    """Just what the store builder and the teacher's checks read from a packed-text data module."""

    def __init__(self, ids: np.ndarray, vocab_size: int) -> None:
        self.splits = {"train": type("Split", (), {"ids": ids})()}
        self.vocab_size, self.vocab_fingerprint, self.with_indices = vocab_size, "bench", True

    def setup(self, stage: str | None = None) -> None:
        return None


def _module(teacher, vocab: int, chunk_size: int | None = None) -> CausalLMDistillation:
    student = llama_lm(vocab, seed=1, **STUDENT)
    module = CausalLMDistillation(teacher=teacher, student=student, chunk_size=chunk_size, alpha=0.9)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    module.trainer = trainer  # the step's token normalisation reads the strategy
    return module


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--sequences", type=int, default=256, help="sequences in the store")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    ids = np.random.default_rng(0).integers(0, args.vocab, (args.sequences, args.seq_len)).astype(np.int64)
    data = _Sequences(ids, args.vocab)
    teacher = llama_lm(args.vocab, seed=0, **TEACHER)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        store = build_lm_store(teacher, data, folder, k=args.k, temperature=1.0, batch_size=args.batch)
        build_s = time.perf_counter() - start
        sampled_folder = f"{folder}/sampled"
        start = time.perf_counter()
        build_lm_store(teacher, data, sampled_folder, k=args.k, batch_size=args.batch, kind="sampled")
        sampled_build_s = time.perf_counter() - start
        teachers = {
            "offline": (CachedLMTeacher(folder), None),
            "offline_uniform": (CachedLMTeacher(folder, tail="uniform"), None),
            "offline_sampled": (CachedLMTeacher(sampled_folder, kind="sampled"), None),
            "offline_chunked": (CachedLMTeacher(folder), 256),
            "offline_sampled_chunked": (CachedLMTeacher(sampled_folder, kind="sampled"), 256),
        }
        modules = {
            "live": _module(teacher, args.vocab),
            "live_chunked": _module(teacher, args.vocab, chunk_size=256),
        }
        for name, (component, chunk) in teachers.items():
            component.prepare_fit(data)
            modules[name] = _module(component, args.vocab, chunk_size=chunk)
        optimizers = {name: torch.optim.AdamW(m.student.parameters(), lr=1e-3) for name, m in modules.items()}
        times: dict[str, list[float]] = {name: [] for name in modules}

        def batch(i: int) -> dict[str, torch.Tensor]:
            rows = torch.arange(i * args.batch, (i + 1) * args.batch) % args.sequences
            x = torch.as_tensor(ids[rows.numpy()])
            return {"input_ids": x, "attention_mask": torch.ones_like(x), "labels": x.clone(), "index": rows}

        def run(name: str, n: int) -> float:
            module, opt = modules[name], optimizers[name]
            start = time.perf_counter()
            for i in range(n):
                opt.zero_grad(set_to_none=True)
                module.training_step(batch(i), i).backward()
                opt.step()
            return (time.perf_counter() - start) / n

        for name in modules:
            run(name, 2)  # warm-up
        for _ in range(args.repeats):
            for name in modules:
                times[name].append(run(name, args.steps))
    result = {
        "k": args.k,
        "tokens_per_step": args.batch * args.seq_len,
        "bytes_per_token": store.bytes_per_token,
        "store_build_s": build_s,
        "sampled_store_build_s": sampled_build_s,
        "store_build_tokens": args.sequences * args.seq_len,
        "ms_per_step": {name: 1e3 * statistics.median(t) for name, t in times.items()},
        "samples_ms": {name: [round(1e3 * x, 1) for x in t] for name, t in times.items()},
    }
    ms = result["ms_per_step"]
    result["offline_vs_live"] = ms["offline"] / ms["live"]
    result["offline_vs_live_chunked"] = ms["offline"] / ms["live_chunked"]
    result["sampled_vs_topk"] = ms["offline_sampled"] / ms["offline"]
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()

"""Time per training step of cross-tokenizer KD (span-aligned KL, ULD) beside same-tokenizer KD, on real text.

    python benchmarks/lm_cross_tokenizer_step.py              # configs/lm sizes: teacher 2.2 M, student 0.6 M
    python benchmarks/lm_cross_tokenizer_step.py --steps 10 --repeats 5 --json lm_cross.json

Every case runs a real training step (AdamW) on batches of 32 x 128 student tokens of the stdlib corpus, the heads
chunked (256), in one process, repeats interleaved, medians reported:

- ``alone_b``: the student on tokenizer B (BPE 2048) alone (``CausalLMModule``);
- ``same_tokenizer``: the student on the teacher's tokenizer A (BPE 4096), forward-KL KD (``CausalLMDistillation``);
- ``span_kl`` (teacher_map first_piece, the default) / ``span_kl_shared`` / ``uld``: the student on B, the teacher
  on A (``CrossTokenizerDistillation``).

Also the data side, which runs once per split in ``setup`` and per batch in the loader's workers: the alignment of
the training split and the assembly of one batch (``__getitems__``). Models are freshly initialised: the cost
does not depend on what they learned.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import lightning as L
import torch

from lightning_kd.data.alignment import align_rows
from lightning_kd.data.cross_text import spans_of
from lightning_kd.data.text import PackedTextDataModule
from lightning_kd.losses.token.cross import shared_ids
from lightning_kd.models.language import llama_lm
from lightning_kd.modules.causal_lm import CausalLMDistillation, CausalLMModule
from lightning_kd.modules.cross_tokenizer import CrossTokenizerDistillation

TEACHER = dict(hidden_size=176, num_layers=4, num_heads=4, intermediate_size=480, max_position=512)
STUDENT = dict(hidden_size=96, num_layers=2, num_heads=4, intermediate_size=256, max_position=512)


def _attach(module: L.LightningModule) -> L.LightningModule:
    module.trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    return module


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cache-dir", default="runs/lm/data")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    common = dict(cache_dir=args.cache_dir, max_train_tokens=614400, seq_len=128, batch_size=32)
    cross = PackedTextDataModule(vocab_size=2048, teacher_bpe_vocab_size=4096, **common)
    same = PackedTextDataModule(vocab_size=4096, teacher_bpe_vocab_size=4096, **common)
    cross.setup(), same.setup()
    start = time.perf_counter()
    s_spans, t_spans = (
        spans_of(cross.tokenizer, cross.train_corpus, cross.cache_dir),
        spans_of(cross.teacher_tokenizer, cross.train_corpus, cross.cache_dir),
    )
    spans_s = time.perf_counter() - start
    start = time.perf_counter()
    align_rows(s_spans, t_spans, 128, len(s_spans.ids) // 128)
    align_s = time.perf_counter() - start
    split = cross.splits["train"]
    start = time.perf_counter()
    for i in range(20):
        split.__getitems__(list(range(i * 32, (i + 1) * 32)))
    batch_ms = (time.perf_counter() - start) / 20 * 1e3

    teacher = llama_lm(4096, seed=0, **TEACHER)
    maps = {k: shared_ids(torch.as_tensor(cross.vocab_map(k))) for k in ("first_piece", "shared")}
    modules, data = {}, {}
    modules["alone_b"] = _attach(CausalLMModule(llama_lm(2048, seed=1, **STUDENT), chunk_size=256))
    modules["same_tokenizer"] = _attach(
        CausalLMDistillation(teacher, llama_lm(4096, seed=1, **STUDENT), alpha=0.9, chunk_size=256)
    )
    for name, loss, kind in (("span_kl", "span_kl", "first_piece"), ("span_kl_shared", "span_kl", "shared"),
                             ("uld", "uld", "first_piece")):  # fmt: skip
        m = CrossTokenizerDistillation(teacher, llama_lm(2048, seed=1, **STUDENT), loss=loss, alpha=0.9, chunk_size=256)
        m._shared = maps[kind]  # what setup reads from the data module
        modules[name] = _attach(m)
    for name in modules:
        data[name] = same.splits["train"] if name == "same_tokenizer" else split
    optimizers = {
        name: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-3) for name, m in modules.items()
    }
    times: dict[str, list[float]] = {name: [] for name in modules}

    def run(name: str, n: int) -> float:
        module, opt, rows = modules[name], optimizers[name], data[name]
        batches = [rows.__getitems__(list(range(i * 32, (i + 1) * 32))) for i in range(n)]
        start = time.perf_counter()
        for i, b in enumerate(batches):
            opt.zero_grad(set_to_none=True)
            module.training_step(b, i).backward()
            opt.step()
        return (time.perf_counter() - start) / n

    for name in modules:
        run(name, 2)  # warm-up
    for _ in range(args.repeats):
        for name in modules:
            times[name].append(run(name, args.steps))
    ms = {name: 1e3 * statistics.median(t) for name, t in times.items()}
    result = {
        "threads": torch.get_num_threads(),
        "student_tokens_per_step": 32 * 128,
        "teacher_tokens_per_student_token": cross.stats["train_teacher_per_student"],
        "aligned_share": cross.stats["train_aligned"],
        "ms_per_step": ms,
        "vs_same_tokenizer": {name: ms[name] / ms["same_tokenizer"] for name in ms},
        "samples_ms": {name: [round(1e3 * x, 1) for x in t] for name, t in times.items()},
        "data_side": {
            "spans_of_train_split_s (cached)": spans_s,
            "align_train_split_s": align_s,
            "assemble_batch_ms": batch_ms,
        },  # fmt: skip
    }
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()

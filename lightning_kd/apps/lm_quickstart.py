"""Causal-LM distillation on CPython's standard library, in one command: ``lightning-kd quickstart-lm``.

It trains (or reuses) a Llama teacher (2.2 M parameters) on the standard library's sources (byte-level BPE of
4096 tokens trained locally; no download), then, for each seed, the same Llama student (0.6 M) twice with the same
initialisation and batch order — alone, and distilled from the teacher with a token-level divergence — and prints
held-out loss (nats per token), perplexity and bits per byte on the whole held-out split side by side with the
paired gain. The distilled student of the first seed is saved as a ``transformers`` folder with its tokenizer and
greedy samples. The recipes in ``configs/lm/`` run the same trainings through the CLI.

As in ``lightning-kd quickstart``, the figures reproduce: the CPU thread count is pinned (``--threads``, default 2)
and printed with the versions and the commit, and a teacher checkpoint is reused only when it was trained with
this recipe (model, steps, learning rate, vocabulary, training text, threads: its file name carries a key of them).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn

from lightning_kd.apps.quickstart import DEFAULT_THREADS, provenance, teacher_path
from lightning_kd.apps.quiet import expect_frozen_teachers
from lightning_kd.callbacks.lm_export import SaveLanguageModel
from lightning_kd.data.text import PackedTextDataModule
from lightning_kd.losses.token import TOKEN_DIVERGENCES
from lightning_kd.models.language import llama_lm
from lightning_kd.modules.causal_lm import CausalLMDistillation, CausalLMModule

TEACHER = dict(hidden_size=176, num_layers=4, num_heads=4, intermediate_size=480, max_position=512)
STUDENT = dict(hidden_size=96, num_layers=2, num_heads=4, intermediate_size=256, max_position=512)


def make_teacher(vocab_size: int, seed: int = 0) -> nn.Module:
    return llama_lm(vocab_size, seed=seed, **TEACHER)


def make_student(vocab_size: int, seed: int) -> nn.Module:
    return llama_lm(vocab_size, seed=seed, **STUDENT)


def _trainer(steps: int, out: Path, name: str, val_batches: int | None, callbacks: list | None = None) -> L.Trainer:
    return L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=CSVLogger(out, name=name),
        callbacks=callbacks or [],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=10,
        val_check_interval=steps,  # validate once, at the end
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        limit_val_batches=val_batches if val_batches is not None else 1.0,
        gradient_clip_val=1.0,
    )


def teacher_recipe(dm: PackedTextDataModule, steps: int, lr: float, threads: int) -> dict:
    """What produces the teacher: a reused checkpoint must come from exactly this."""
    return {
        "model": {"llama_lm": TEACHER, "vocab_size": dm.vocab_size, "seed": 0}, "steps": steps,
        "optimizer": f"AdamW(lr={lr}, weight_decay=0.01) + OneCycleLR(pct_start=0.1)", "vocab": dm.vocab_fingerprint,
        "data": {"text": dm.train_corpus.sha256, "max_train_tokens": dm.max_train_tokens, "seq_len": dm.seq_len,
                 "batch_size": dm.batch_size, "seed": 0},
        "threads": threads, "torch": torch.__version__,
    }  # fmt: skip


def _optimizer(lr: float) -> tuple[partial, partial]:
    return (
        partial(torch.optim.AdamW, lr=lr, weight_decay=0.01),
        partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=lr, pct_start=0.1),
    )


def run(
    out_dir: str | os.PathLike = "runs/lm_quickstart",
    seeds: Sequence[int] = (0,),
    teacher_steps: int = 300,
    student_steps: int = 150,
    divergence: str = "forward_kl",
    alpha: float = 0.9,
    lr: float = 3e-3,
    val_batches: int | None = None,
    max_train_tokens: int | None = None,
    cache_dir: str | os.PathLike = "runs/lm/data",
    text_dir: str | None = None,
    vocab_size: int = 4096,
    retrain_teacher: bool = False,
    save: bool = True,
    tokenizer: str | None = None,
    threads: int = DEFAULT_THREADS,
) -> dict:
    """Train the teacher (unless a checkpoint of this recipe exists), then per seed the student alone and with KD,
    on ``threads`` CPU threads.

    Returns ``{"teacher": {...}, "seeds": {seed: {"alone": {...}, "kd": {...}, "gain": nats}}, ...}`` with the
    validation metrics of each run (``loss`` in nats per token, ``ppl``, ``bpb``, ``acc``; KD also
    ``agreement``). ``tokenizer`` (a model folder or a ``tokenizer.json``) encodes the text instead of the
    library's BPE; the models are then built for its vocabulary (and the teacher's recipe names it).
    """
    if divergence not in TOKEN_DIVERGENCES:
        raise ValueError(f"divergence={divergence!r}; choose one of {', '.join(TOKEN_DIVERGENCES)}.")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}; the documented figures are for {DEFAULT_THREADS}.")
    torch.set_num_threads(threads)
    out = Path(out_dir)
    data_args = dict(seq_len=128, batch_size=32, vocab_size=vocab_size, cache_dir=str(cache_dir))
    data_args.update(max_train_tokens=max_train_tokens, text_dir=text_dir, pattern="**/*.py", tokenizer=tokenizer)
    results: dict = {"seeds": {}, "divergence": divergence, "alpha": alpha, "threads": threads}
    results["provenance"] = provenance()
    start = time.perf_counter()
    dm = PackedTextDataModule(**data_args, seed=0)
    dm.setup()
    recipe = teacher_recipe(dm, teacher_steps, lr, threads)
    teacher_ckpt = teacher_path(out, recipe)
    results["teacher_ckpt"] = str(teacher_ckpt)
    results["data"] = dict(dm.stats, vocab_size=dm.vocab_size)
    vocab = dm.vocab_size

    if retrain_teacher or not teacher_ckpt.is_file():
        print(f"[teacher] training for {teacher_steps} steps of 4096 tokens -> {teacher_ckpt}", flush=True)
        optimizer, scheduler = _optimizer(lr)
        module = CausalLMModule(make_teacher(vocab), optimizer=optimizer, lr_scheduler=scheduler)
        trainer = _trainer(teacher_steps, out, "teacher", val_batches)
        trainer.fit(module, dm)
        teacher_ckpt.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(teacher_ckpt, weights_only=True)  # records the data's vocabulary fingerprint
        teacher_ckpt.with_suffix(".json").write_text(json.dumps(recipe, indent=2))
    else:
        print(f"[teacher] reusing {teacher_ckpt} (its recipe is this run's: {teacher_ckpt.stem}.json)", flush=True)

    for i, seed in enumerate(seeds):
        row: dict = {}
        dm = PackedTextDataModule(**data_args, seed=seed)  # the batch order of this seed, the same for both runs
        print(f"[seed {seed}] student alone, {student_steps} steps", flush=True)
        optimizer, scheduler = _optimizer(lr)
        alone = CausalLMModule(make_student(vocab, seed), optimizer=optimizer, lr_scheduler=scheduler)
        trainer = _trainer(student_steps, out, f"alone_seed{seed}", val_batches)
        trainer.fit(alone, dm)
        row["alone"] = {
            k.split("/", 1)[1]: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")
        }

        print(f"[seed {seed}] student with KD ({divergence}, alpha={alpha}), {student_steps} steps", flush=True)
        kd = CausalLMDistillation(
            make_teacher(vocab),
            make_student(vocab, seed),  # the same initial weights as the student alone
            teacher_ckpt=str(teacher_ckpt),
            divergence=divergence,
            alpha=alpha,
            optimizer=optimizer,
            lr_scheduler=scheduler,
        )
        expect_frozen_teachers(kd)
        saver = SaveLanguageModel() if save and i == 0 else None
        trainer = _trainer(student_steps, out, f"kd_seed{seed}", val_batches, [saver] if saver else [])
        trainer.fit(kd, dm)
        row["kd"] = {k.split("/", 1)[1]: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        row["gain"] = row["alone"]["loss"] - row["kd"]["loss"]
        results["seeds"][seed] = row
        if "teacher" not in results:  # scored in every KD run; read from the first seed's (the same figures)
            results["teacher"] = {k: row["kd"][f"teacher_{k}"] for k in ("loss", "ppl", "acc")}
            if "bpb" in row["kd"]:  # the same held-out bytes: the teacher's bits per byte from its nats per token
                results["teacher"]["bpb"] = row["kd"]["bpb"] * row["kd"]["teacher_loss"] / row["kd"]["loss"]
        if saver is not None and saver.saved is not None:
            results["student_folder"] = str(saver.saved)
    results["teacher_params"] = sum(p.numel() for p in make_teacher(vocab).parameters())
    results["student_params"] = sum(p.numel() for p in make_student(vocab, 0).parameters())
    results["seconds"] = time.perf_counter() - start
    return results


def format_table(r: dict) -> str:
    """Markdown table of a :func:`run` result."""
    t, p = r["teacher"], r["provenance"]
    bpb = lambda m: f"{m['bpb']:.4f}" if "bpb" in m else "–"  # noqa: E731
    lines = [
        f"teacher: {r['teacher_params']:,} parameters, val loss {t['loss']:.3f} nats/token, ppl {t['ppl']:.1f}, "
        f"{bpb(t)} bits/byte",
        f"student: {r['student_params']:,} parameters ({r['teacher_params'] / r['student_params']:.1f}x smaller); "
        f"KD = {r['divergence']}, alpha {r['alpha']}",
        f"{r['threads']} CPU thread(s); torch {p['torch']}, lightning {p['lightning']}, lightning-kd "
        f"{p['lightning_kd']} (commit {p['commit']})",
        "",
        "| seed | alone: val loss | alone: ppl | alone: bits/byte | KD: val loss | KD: ppl | KD: bits/byte "
        "| KD: top-1 agreement | gain (nats) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for seed, row in r["seeds"].items():
        a, k = row["alone"], row["kd"]
        lines.append(
            f"| {seed} | {a['loss']:.4f} | {a['ppl']:.2f} | {bpb(a)} | {k['loss']:.4f} | {k['ppl']:.2f} | {bpb(k)} | "
            f"{k['agreement']:.4f} | {row['gain']:+.4f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", default="runs/lm_quickstart", help="checkpoints, logs and the saved student")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--teacher-steps", type=int, default=300)
    parser.add_argument("--student-steps", type=int, default=150)
    parser.add_argument("--divergence", default="forward_kl", choices=TOKEN_DIVERGENCES)
    parser.add_argument("--alpha", type=float, default=0.9, help="weight of the divergence (CE gets 1 - alpha)")
    parser.add_argument("--val-batches", type=int, default=None, help="validation batches (default: all)")
    parser.add_argument("--max-train-tokens", type=int, default=None, help="use only this many training tokens")
    parser.add_argument("--cache-dir", default="runs/lm/data", help="tokenizer and token streams are cached here")
    parser.add_argument(
        "--tokenizer", default=None, help="a model folder (or tokenizer.json) whose tokenizer encodes the text"
    )
    parser.add_argument(
        "--retrain-teacher", action="store_true", help="train the teacher even if its checkpoint exists"
    )
    parser.add_argument(
        "--threads", type=int, default=DEFAULT_THREADS,
        help=f"CPU threads (default {DEFAULT_THREADS}: docs/results.md's figures are for it; others give others)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    r = run(
        args.out_dir,
        args.seeds,
        args.teacher_steps,
        args.student_steps,
        args.divergence,
        args.alpha,
        val_batches=args.val_batches,
        max_train_tokens=args.max_train_tokens,
        cache_dir=args.cache_dir,
        retrain_teacher=args.retrain_teacher,
        tokenizer=args.tokenizer,
        threads=args.threads,
    )
    d = r["data"]
    print(
        f"\nCPython standard library: {d['train_files']} training files ({d['train_tokens']:,} tokens), "
        f"{d['val_files']} held-out files ({d['val_tokens']:,} tokens); "
        f"{'BPE' if args.tokenizer is None else args.tokenizer} vocabulary {d['vocab_size']}"
    )
    print(format_table(r))
    if "student_folder" in r:
        print(f"\ndistilled student (transformers folder + tokenizer): {r['student_folder']}")
        print(f"greedy samples: {Path(r['student_folder']) / 'samples.md'}")
    print(f"({r['seconds']:.0f} s)")


if __name__ == "__main__":  # pragma: no cover
    main()

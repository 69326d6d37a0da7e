"""Causal-LM distillation on CPython's standard library, in one command: ``lightning-kd quickstart-lm``.

It trains (or reuses) a Llama teacher (2.2 M parameters) on the standard library's sources (byte-level BPE of
4096 tokens trained locally; no download), then, for each seed, the same Llama student (0.6 M) twice with the same
initialisation and batch order — alone, and distilled from the teacher with a token-level divergence — and prints
held-out loss (nats per token) and perplexity side by side with the paired gain. The distilled student of the first
seed is saved as a ``transformers`` folder with its tokenizer and greedy samples. The recipes in ``configs/lm/``
run the same trainings through the CLI.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn

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
) -> dict:
    """Train the teacher (unless its checkpoint exists), then per seed the student alone and with KD.

    Returns ``{"teacher": {...}, "seeds": {seed: {"alone": {...}, "kd": {...}, "gain": nats}}, ...}`` with the
    validation metrics of each run (``loss`` in nats per token, ``ppl``, ``acc``; KD also ``agreement``).
    ``tokenizer`` (a model folder or a ``tokenizer.json``) encodes the text instead of the library's BPE; the
    models are then built for its vocabulary, and the teacher is kept per tokenizer.
    """
    if divergence not in TOKEN_DIVERGENCES:
        raise ValueError(f"divergence={divergence!r}; choose one of {', '.join(TOKEN_DIVERGENCES)}.")
    out = Path(out_dir)
    data_args = dict(seq_len=128, batch_size=32, vocab_size=vocab_size, cache_dir=str(cache_dir))
    data_args.update(max_train_tokens=max_train_tokens, text_dir=text_dir, pattern="**/*.py", tokenizer=tokenizer)
    results: dict = {"seeds": {}, "divergence": divergence, "alpha": alpha}
    start = time.perf_counter()
    dm = PackedTextDataModule(**data_args, seed=0)
    dm.setup()
    teacher_dir = "teacher" if tokenizer is None else f"teacher-{dm.vocab_fingerprint[:12]}"  # one per vocabulary
    teacher_ckpt = out / teacher_dir / "teacher.ckpt"
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
    else:
        print(f"[teacher] reusing {teacher_ckpt}", flush=True)

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
        results["teacher"] = {k: row["kd"][f"teacher_{k}"] for k in ("loss", "ppl", "acc")}
        if saver is not None and saver.saved is not None:
            results["student_folder"] = str(saver.saved)
    results["teacher_params"] = sum(p.numel() for p in make_teacher(vocab).parameters())
    results["student_params"] = sum(p.numel() for p in make_student(vocab, 0).parameters())
    results["seconds"] = time.perf_counter() - start
    return results


def format_table(r: dict) -> str:
    """Markdown table of a :func:`run` result."""
    t = r["teacher"]
    lines = [
        f"teacher: {r['teacher_params']:,} parameters, val loss {t['loss']:.3f} nats/token, ppl {t['ppl']:.1f}",
        f"student: {r['student_params']:,} parameters ({r['teacher_params'] / r['student_params']:.1f}x smaller); "
        f"KD = {r['divergence']}, alpha {r['alpha']}",
        "",
        "| seed | alone: val loss | alone: ppl | KD: val loss | KD: ppl | KD: top-1 agreement | gain (nats) |",
        "|---|---|---|---|---|---|---|",
    ]
    for seed, row in r["seeds"].items():
        a, k = row["alone"], row["kd"]
        lines.append(
            f"| {seed} | {a['loss']:.4f} | {a['ppl']:.2f} | {k['loss']:.4f} | {k['ppl']:.2f} | "
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
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
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

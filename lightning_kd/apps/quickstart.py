"""The main job on the embedded default data, in one command: ``lightning-kd-quickstart``.

On scikit-learn's 8×8 digits it trains (or reuses) a CNN teacher, then the same small MLP student twice —
alone and distilled from the teacher — and prints a table: accuracies, parameter counts, compression. Then it
writes the teacher-vs-distilled-student report (accuracy, parameters, FLOPs, CPU latency, agreement, …) and the
student's ONNX/``.pt2`` exports into ``<out_dir>/report/`` and prints its main table. The recipes in
``configs/digits/`` run the same three trainings through the CLI; ``lightning-kd report`` writes the same report
for any checkpoint.

The figures reproduce: the runs are seeded and deterministic, the CPU thread count is pinned (``--threads``,
default 2: the float sums, hence the figures, depend on it) and printed with the torch and Lightning versions and
the commit; a teacher checkpoint is reused only when it was trained with this recipe (seed, epochs, widths,
optimizer, data, threads: its file name carries a key of them), so a stale one never stands in for it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from lightning_kd.apps.interrupts import short_interrupts
from lightning_kd.apps.quiet import expect_frozen_teachers
from lightning_kd.data.digits import DigitsDataModule
from lightning_kd.models import MLP, SmallCNN
from lightning_kd.modules.classification import ClassificationModule
from lightning_kd.modules.distillation import DistillationModule
from lightning_kd.report.class_names import class_names_for
from lightning_kd.report.run import describe_files, main_table, run_report


def make_teacher() -> nn.Module:
    return SmallCNN(in_channels=1, num_classes=10, widths=(32, 64, 128))


def make_student() -> nn.Module:
    return MLP(in_features=64, num_classes=10, hidden=(32,))


#: the CPU threads the quickstart trains with unless told otherwise: its figures (README) are for this count
DEFAULT_THREADS = 2


def teacher_recipe(epochs: int, seed: int, threads: int) -> dict:
    """What produces the quickstart's teacher: a reused checkpoint must come from exactly this."""
    return {
        "model": "SmallCNN(in_channels=1, num_classes=10, widths=(32, 64, 128))", "epochs": epochs, "seed": seed,
        "optimizer": "Adam(lr=3e-3)", "data": "DigitsDataModule(batch_size=64, seed=0)", "threads": threads,
        "torch": torch.__version__,
    }  # fmt: skip


def teacher_path(out: Path, recipe: dict) -> Path:
    """``<out>/teacher/teacher-<key>.ckpt``: the key is a digest of ``recipe``, so another recipe has another file
    (and none replaces another's)."""
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    return out / "teacher" / f"teacher-{key}.ckpt"


def provenance() -> dict:
    """The versions and the commit a run's figures come from."""
    import lightning_kd

    try:
        here = Path(__file__).resolve().parent
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "torch": torch.__version__, "lightning": L.__version__, "lightning_kd": lightning_kd.__version__,
        "commit": commit or "not a git checkout",
    }  # fmt: skip


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _trainer(epochs: int, out: Path, name: str, ckpt_dir: Path | None = None, filename: str | None = None) -> L.Trainer:
    callbacks = []
    if ckpt_dir is not None:
        callbacks.append(ModelCheckpoint(dirpath=ckpt_dir, filename=filename or name, enable_version_counter=False))
    return L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=L.pytorch.loggers.CSVLogger(out / "logs", name=name),
        callbacks=callbacks,
        enable_checkpointing=ckpt_dir is not None,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=5,
        deterministic=True,
    )


def run(
    out_dir: str | os.PathLike = "runs/quickstart",
    epochs: int = 40,
    seed: int = 0,
    retrain_teacher: bool = False,
    report: bool = True,
    threads: int = DEFAULT_THREADS,
) -> dict:
    """Train teacher (unless a checkpoint of this recipe exists), student alone and student with KD on ``threads``
    CPU threads; return results.

    With ``report``, the teacher-vs-student report of the distilled student goes to ``<out_dir>/report/``
    (``results["report"]``, see :func:`~lightning_kd.report.run.run_report`). It describes this run's
    checkpoints, which a new run replaces, so a new run replaces the report as well.
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}; the README's figures are for {DEFAULT_THREADS}.")
    torch.set_num_threads(threads)
    out = Path(out_dir)
    recipe = teacher_recipe(epochs, seed, threads)
    teacher_ckpt = teacher_path(out, recipe)
    optimizer = partial(torch.optim.Adam, lr=3e-3)
    data = DigitsDataModule(batch_size=64, seed=0)
    results: dict = {"threads": threads, "provenance": provenance(), "teacher_ckpt": str(teacher_ckpt)}
    start = time.perf_counter()

    if retrain_teacher or not teacher_ckpt.is_file():
        print(
            f"[1/3] training the teacher ({epochs} epochs, seed {seed}, {threads} threads) -> {teacher_ckpt}",
            flush=True,
        )
        L.seed_everything(seed, verbose=False)
        trainer = _trainer(epochs, out, "teacher", ckpt_dir=out / "teacher", filename=teacher_ckpt.stem)
        trainer.fit(ClassificationModule(make_teacher(), optimizer=optimizer), data)
        teacher_ckpt.with_suffix(".json").write_text(json.dumps(recipe, indent=2))
    else:
        print(
            f"[1/3] reusing the teacher in {teacher_ckpt} (its recipe is this run's: {teacher_ckpt.stem}.json)",
            flush=True,
        )

    print(f"[2/3] training the student alone ({epochs} epochs)", flush=True)
    L.seed_everything(seed, verbose=False)
    alone = ClassificationModule(make_student(), optimizer=optimizer)
    trainer = _trainer(epochs, out, "student_alone")
    trainer.fit(alone, data)
    results["student_alone"] = trainer.test(alone, data, verbose=False)[0]["test/acc"]

    print(f"[3/3] distilling the teacher into the student ({epochs} epochs, T=4, alpha=0.9)", flush=True)
    L.seed_everything(seed, verbose=False)
    kd = DistillationModule(
        make_teacher(),
        make_student(),
        teacher_ckpt=str(teacher_ckpt),
        temperature=4.0,
        alpha=0.9,
        optimizer=optimizer,
    )
    expect_frozen_teachers(kd)
    trainer = _trainer(epochs, out, "student_kd", ckpt_dir=out / "student_kd")
    trainer.fit(kd, data)
    test = trainer.test(kd, data, verbose=False)[0]
    results["teacher"] = test["test/teacher_acc"]
    results["student_kd"] = test["test/acc"]
    results["teacher_params"] = count_params(kd.teacher)
    results["student_params"] = count_params(kd.student)
    results["student_ckpt"] = str(out / "student_kd" / "student_kd.ckpt")
    if report:
        print("writing the teacher-vs-student report and the student's exports", flush=True)
        results["report"] = write_kd_report(kd, data, out / "report", teacher_ckpt, results["student_ckpt"])
    results["seconds"] = time.perf_counter() - start
    return results


def write_kd_report(
    kd: DistillationModule,
    data: DigitsDataModule,
    out_dir: Path,
    teacher_ckpt: str | os.PathLike,
    student_ckpt: str | os.PathLike,
) -> dict:
    """The report of ``kd``'s teacher and student on the test split, with short latency measurements (the
    quickstart stays quick; ``lightning-kd report`` measures longer). Without onnx/onnxruntime the report is
    written without exports and its notes name the extra to install."""
    return run_report(
        kd.teacher.model,
        kd.student,
        data.test_dataloader(),
        out_dir,
        mean=data.mean,
        std=data.std,
        class_names=class_names_for(data),
        threads=torch.get_num_threads(),
        teacher_file=teacher_ckpt,
        student_file=student_ckpt,
        overwrite=True,
        min_run_time=0.01,
        max_run_time=0.1,
    )


def format_table(r: dict) -> str:
    """Markdown table of a :func:`run` result."""
    ratio = r["teacher_params"] / r["student_params"]
    rows = [
        ("teacher (SmallCNN 32/64/128)", f"{r['teacher']:.4f}", f"{r['teacher_params']:,}"),
        ("student alone (MLP 64-32-10)", f"{r['student_alone']:.4f}", f"{r['student_params']:,}"),
        ("student with KD (same MLP)", f"{r['student_kd']:.4f}", f"{r['student_params']:,}"),
    ]
    lines = ["| model | test accuracy | parameters |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    lines.append(f"\ncompression ratio (teacher/student parameters): {ratio:.1f}x")
    lines.append(f"KD gain over the student alone: {100 * (r['student_kd'] - r['student_alone']):+.2f} points")
    if "provenance" in r:
        p = r["provenance"]
        lines.append(
            f"{r['threads']} CPU thread(s); torch {p['torch']}, lightning {p['lightning']}, lightning-kd "
            f"{p['lightning_kd']} (commit {p['commit']})"
        )
    return "\n".join(lines)


@short_interrupts
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", default="runs/quickstart", help="checkpoints and CSV logs go here")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--retrain-teacher", action="store_true", help="train the teacher even if its checkpoint exists"
    )
    parser.add_argument("--no-report", action="store_true", help="skip the teacher-vs-student report and exports")
    parser.add_argument(
        "--threads", type=int, default=DEFAULT_THREADS,
        help=f"CPU threads (default {DEFAULT_THREADS}: the README's figures are for it; others give other figures)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    r = run(args.out_dir, args.epochs, args.seed, args.retrain_teacher, report=not args.no_report, threads=args.threads)
    print("\nDigits (scikit-learn 8x8, 359 test images), seed", args.seed)
    print(format_table(r))
    if "report" in r:
        report = r["report"]
        threads = report["result"]["settings"]["threads"]
        print(f"\nTeacher vs distilled student (latency on the CPU, {threads} thread(s)):\n")
        print(main_table(report["result"]))
        print()
        print(describe_files(report))
    print(f"\ndistilled student checkpoint: {r['student_ckpt']}  ({r['seconds']:.0f} s)")


if __name__ == "__main__":  # pragma: no cover
    main()

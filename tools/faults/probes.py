"""Probes of correct behaviour: what a healthy run must do."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from tools.faults.harness import Case, captured, digest, fault
from tools.faults.setups import (
    Trigger,
    digits,
    healthy,
    recipe,
    student_net,
    teacher_net,
    trainer,
)


# -- correct behaviour ------------------------------------------------------------------------------------------
@fault(
    "run isolation",
    r"published runs/kd/model\.ckpt; kept version_0 and version_1",
    kind="probe",
    may_change=("runs/kd/model.ckpt*",),
)
def healthy_runs_publish_and_keep_their_own_checkpoints(c: Case) -> Trigger:
    """two healthy runs in one folder: each publishes model.ckpt, each keeps its own checkpoints"""
    from lightning_kd import DistillationModule

    published = healthy(c)

    def trigger() -> str:
        c.cli("fit", *recipe(c))
        for v in ("version_0", "version_1"):
            for name in ("best.ckpt", "last.ckpt"):
                c.check(Path(f"runs/kd/{v}/checkpoints/{name}").is_file(), f"{v}/checkpoints/{name} is missing")
        module = DistillationModule.load_from_checkpoint(published)
        c.check(module.temperature == 4.0, "model.ckpt does not reload with its config")
        return "published runs/kd/model.ckpt; kept version_0 and version_1 checkpoints; model.ckpt reloads"

    return trigger


@fault("checkpoint/resume", r"resumed to epoch 2 and said nothing", kind="probe", may_change=("runs/kd/model.ckpt*",))
def resume_with_the_same_config_is_quiet(c: Case) -> Trigger:
    """resuming with the config it was trained with says nothing about differences"""
    healthy(c)

    def trigger() -> str:
        out = c.cli("fit", *recipe(c), "--ckpt_path=runs/kd/version_0/checkpoints/last.ckpt", "--trainer.max_epochs=2")
        c.check("lightning-kd: resuming" not in out, f"it said: {c.said(out, 'lightning-kd: resuming')}")
        steps = torch.load("runs/kd/model.ckpt", map_location="cpu", weights_only=True)["global_step"]
        c.check(steps == 4, f"the resumed model has {steps} steps, not 4")
        return "resumed to epoch 2 and said nothing"

    return trigger


@fault("cache", r"cached-teacher student equals the live-teacher student \(max difference 0", kind="probe")
def cached_teacher_equals_live(c: Case) -> Trigger:
    """a student taught from a (fp32) teacher cache equals one taught by the live teacher"""
    from lightning_kd import CachedTeacher, DistillationModule
    from lightning_kd.cache.build import build_teacher_cache

    build_teacher_cache(teacher_net(), digits(with_indices=True), "cache", epochs=1, device="cpu", storage="fp32")

    def trigger() -> str:
        students = []
        for teacher in (teacher_net(), CachedTeacher("cache", model=teacher_net())):
            L.seed_everything(0, verbose=False)
            module = DistillationModule(teacher, student_net())
            with captured():
                trainer(limit_train_batches=5).fit(module, digits(with_indices=True))
            students.append(module.student.state_dict())
        diff = max((a - b).abs().max().item() for a, b in zip(students[0].values(), students[1].values()))
        c.check(diff < 1e-6, f"the students differ by {diff}")
        return f"cached-teacher student equals the live-teacher student (max difference {diff:g})"

    return trigger


@fault("checkpoint/resume", r"runs/kd/predict/predictions\.csv \(\d+ rows\), then predictions-1\.csv", kind="probe")
def predict_writes_beside_the_checkpoint(c: Case) -> Trigger:
    """`predict --ckpt_path` writes its predictions beside the checkpoint, never over an earlier file"""
    published = healthy(c)

    def trigger() -> str:
        c.cli("predict", *recipe(c), f"--ckpt_path={published}")
        first = Path("runs/kd/predict/predictions.csv")
        c.check(first.is_file(), "no predictions.csv")
        before = digest(first)
        c.cli("predict", *recipe(c), f"--ckpt_path={published}")
        c.check(Path("runs/kd/predict/predictions-1.csv").is_file(), "the second predict wrote no predictions-1.csv")
        c.check(digest(first) == before, "the second predict changed predictions.csv")
        rows = len(first.read_text().splitlines()) - 1
        return f"runs/kd/predict/predictions.csv ({rows} rows), then predictions-1.csv; the first left as it was"

    return trigger


@fault("CLI", r"a clean run printed no warning", kind="probe")
def clean_run_prints_no_noise(c: Case) -> Trigger:
    """a clean KD run prints no warnings, tips or tracebacks"""
    args = recipe(c)

    def trigger() -> str:
        out = c.cli("fit", *args)
        noise = [
            ln for ln in out.splitlines() if any(w in ln.lower() for w in ("warn", "deprecat", "tip", "traceback"))
        ]
        c.check(not noise, "it printed: " + " / ".join(noise[:3]))
        return f"a clean run printed no warning ({len(out.splitlines())} lines of Lightning's info)"

    return trigger

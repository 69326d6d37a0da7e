"""Faults of runs: divergence, interruption, the offline teacher cache, runs beside other runs."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from tools.faults.harness import Case, CLIExit, digest, fault
from tools.faults.setups import (
    DIGITS,
    KILL_AFTER_EPOCH,
    KILL_EPOCHS,
    STUDENT_STAGE,
    TINY,
    Trigger,
    checkpoint_epoch,
    digits,
    healthy,
    pipeline_file,
    recipe,
    student_net,
    teacher_net,
    trainer,
)


# -- training divergence ----------------------------------------------------------------------------------------
@fault(
    "training divergence",
    r"training diverged: the loss became NaN or infinite.*lower the learning rate \(now 1e\+30\)",
    bad=("learning rate", "1e+30"),
)
def learning_rate_1e30(c: Case) -> Trigger:
    """SGD lr 1e30 (a run beside an earlier healthy one: its model.ckpt must survive)"""
    healthy(c)
    args = recipe(c)
    return lambda: c.cli(
        "fit",
        *args,
        "--model.init_args.optimizer.class_path=torch.optim.SGD",
        "--model.init_args.optimizer.init_args.lr=1e30",
    )


@fault(
    "training divergence",
    r"training diverged: the loss rose from [\d.]+ \(step 0\) to a mean of .*over 100x where it started.*lower the "
    r"learning rate \(now 1e\+06\)",
    bad=("learning rate", "1e+06", "1e6"),
)
def adam_learning_rate_1e6(c: Case) -> Trigger:
    """Adam lr 1e6 (the loss soars to ~1e7 but never becomes NaN)"""
    args = recipe(c)

    def trigger() -> Any:
        try:
            c.cli("fit", *args, "--model.init_args.optimizer.init_args.lr=1e6", "--trainer.limit_train_batches=10")
        except CLIExit:
            c.check(not Path("runs/kd/model.ckpt").exists(), "the diverged run published runs/kd/model.ckpt")
            raise

    return trigger


@fault(
    "training divergence",
    r"interrupted \(Ctrl-C\) at step 3 \(epoch 1\); the run's state is saved in "
    r"runs/kd/version_1/checkpoints/last\.ckpt\.\nResume with the same command and --ckpt_path "
    r"runs/kd/version_1/checkpoints/last\.ckpt",
    bad=("KeyboardInterrupt", "interrupt"),
)
def interrupted_run(c: Case) -> Trigger:
    """Ctrl-C (KeyboardInterrupt) in a second run beside a published model"""
    healthy(c)
    args = recipe(c)
    callback = "--trainer.callbacks=[{class_path: tools.faults.setups.InterruptAt, init_args: {step: 3}}]"

    def trigger() -> Any:
        try:
            c.cli("fit", *args, "--trainer.max_epochs=3", callback)
        except CLIExit:
            c.check(Path("runs/kd/version_1/checkpoints/last.ckpt").is_file(), "Ctrl-C left no last.ckpt")
            raise

    return trigger


# -- offline teacher cache --------------------------------------------------------------------------------------
def cache(c: Case, path: str = "cache", seed: int = 0, **data: Any) -> str:
    from lightning_kd.cache.build import build_teacher_cache

    build_teacher_cache(teacher_net(seed), digits(with_indices=True, **data), path, epochs=1, device="cpu")
    return path


def fit_cached(path: str, seed: int = 0, max_epochs: int = 1, **data: Any) -> Trigger:
    from lightning_kd import CachedTeacher, DistillationModule

    def trigger() -> Any:
        module = DistillationModule(CachedTeacher(path, model=teacher_net(seed)), student_net())
        trainer(max_epochs=max_epochs).fit(module, digits(**data))

    return trigger


@fault("cache", r"logits\.npy' holds 1 NaN or inf logit.*rebuild it", bad=("logits.npy",))
def cache_holds_nan(c: Case) -> Trigger:
    """a NaN in a teacher cache"""
    path = cache(c)
    stored = np.load(f"{path}/logits.npy", mmap_mode="r+")
    stored[0, 5, 2] = np.nan
    stored.flush()
    del stored
    return fit_cached(path, with_indices=True)


@fault("cache", r"logits\.npy' is truncated or corrupted.*rebuild it", bad=("logits.npy",))
def cache_truncated(c: Case) -> Trigger:
    """a teacher cache's logits.npy cut in half"""
    path = Path(cache(c)) / "logits.npy"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return fit_cached("cache", with_indices=True)


@fault("cache", r"built for something else: teacher weights", bad=("teacher weights",))
def cache_of_another_teacher(c: Case) -> Trigger:
    """a teacher cache built from other teacher weights"""
    return fit_cached(cache(c, seed=0), seed=1, with_indices=True)


@fault(
    "cache", r"max_epochs=3 but teacher cache 'cache' holds 1 epochs.*rebuild it with --epochs 3", bad=("max_epochs",)
)
def cache_has_fewer_epochs(c: Case) -> Trigger:
    """an augmented teacher cache of 1 epoch for a 3-epoch run"""
    path = cache(c, augment=True, augment_seed=3)
    return fit_cached(path, max_epochs=3, with_indices=True, augment=True, augment_seed=3)


@fault("cache", r"augment=True but no augment_seed.*set augment_seed", bad=("augment_seed",))
def cache_with_random_augmentation(c: Case) -> Trigger:
    """a cached teacher with random (not replayable) augmentation"""
    return fit_cached(cache(c), with_indices=True, augment=True)


@fault("cache", r"teacher cache 'cache' is an unfinished build \(no meta\.json\); build it", bad=("meta.json",))
def cache_unfinished(c: Case) -> Trigger:
    """a teacher cache whose build was interrupted (no meta.json)"""
    Path(cache(c), "meta.json").unlink()
    return fit_cached("cache", with_indices=True)


@fault("cache", r"feature terms \['hint'\] need the teacher's intermediate features.*use a live teacher", bad=("hint",))
def cache_with_feature_terms(c: Case) -> Trigger:
    """a cached teacher with a feature term"""
    from lightning_kd import CachedTeacher, DistillationModule, FeatureTerm
    from lightning_kd.losses import FitNetLoss
    from lightning_kd.models import SmallCNN

    term = FeatureTerm("hint", FitNetLoss(), ["block2"], ["block2"])
    cached = CachedTeacher("cache", model=teacher_net())
    return lambda: DistillationModule(cached, SmallCNN(1, 10, widths=(4, 8, 8)), feature_terms=[term])


@fault(
    "cache",
    r"already holds a finished cache built for something else.*--overwrite",
    bad=("cache",),
)
def cache_rebuild_over_another(c: Case) -> Trigger:
    """`lightning-kd cache` into a folder holding another teacher's cache"""
    torch.save(teacher_net(0).state_dict(), "teacher0.pt")
    torch.save(teacher_net(1).state_dict(), "teacher1.pt")
    Path("cached.yaml").write_text(
        yaml.safe_dump(
            {
                "trainer": {"default_root_dir": "runs/kd_cached"},
                "model": {
                    "init_args": {
                        "teacher": {
                            "class_path": "lightning_kd.CachedTeacher",
                            "init_args": {
                                "path": "cache",
                                "model": {
                                    "class_path": "lightning_kd.models.SmallCNN",
                                    "init_args": {"in_channels": 1, "num_classes": 10, "widths": [4, 8, 8]},
                                },
                                "ckpt": "teacher0.pt",
                            },
                        },
                        "teacher_ckpt": None,
                    }
                },
                "data": {"init_args": {"with_indices": True}},
            }
        )
    )
    args = ["--config", str(DIGITS / "base.yaml"), "--config", "cached.yaml", "--epochs", "1", "--device", "cpu"]
    c.cli("cache", *args)
    return lambda: c.cli("cache", *args, "--model.init_args.teacher.init_args.ckpt=teacher1.pt")


# -- run isolation ----------------------------------------------------------------------------------------------
@fault(
    "run isolation",
    r"runs/digits/student and runs/digits/born_again untouched; the pipeline wrote runs/pipeline/gen/model\.ckpt, "
    r"runs/pipeline/gen0/model\.ckpt",
    kind="guard",
)
def pipeline_beside_other_runs(c: Case) -> Trigger:
    """a born-again pipeline whose recipes name the folders of the user's own runs"""
    c.cli("fit", *recipe(c, "student", "digits/student"))
    c.cli("fit", *recipe(c, "student", "digits/born_again"))  # stands for the user's own born-again run
    born = {
        "name": "gen",
        "config": [str(DIGITS / "base.yaml"), str(DIGITS / "born_again.yaml")],
        "args": [
            *TINY,
            "--model.init_args.teacher.init_args.hidden=[16]",
            "--model.init_args.student.init_args.hidden=[16]",
        ],
    }
    spec = pipeline_file([STUDENT_STAGE, {**born, "repeat": 1}])

    def trigger() -> str:
        c.cli("pipeline", spec)
        made = sorted(str(p) for p in Path("runs/pipeline").glob("*/model.ckpt"))
        c.check(made == ["runs/pipeline/gen/model.ckpt", "runs/pipeline/gen0/model.ckpt"], f"it published {made}")
        return f"runs/digits/student and runs/digits/born_again untouched; the pipeline wrote {', '.join(made)}"

    return trigger


@fault(
    "run isolation",
    r"model\.ckpt unchanged after SIGKILL at epoch \d+; last\.ckpt whole, the latest epoch \(\d+\); the resumed run "
    r"went on from epoch \d+ to epoch 60",
    kind="guard",
    slow=True,
    may_change=("runs/kd/model.ckpt*",),
)
def killed_run_resumes(c: Case) -> Trigger:
    """a run killed (SIGKILL) a few epochs in, beside a published model, then resumed from last.ckpt"""
    published = healthy(c)
    args = [a for a in recipe(c) if not a.startswith("--trainer.max_epochs")] + [f"--trainer.max_epochs={KILL_EPOCHS}"]

    def epoch_of(path: Path) -> int:
        try:
            return checkpoint_epoch(path)
        except Exception:  # noqa: BLE001 - not there yet (every write is an atomic rename: never half a file)
            return -1

    def trigger() -> str:
        before = digest(published)
        last = Path("runs/kd/version_1/checkpoints/last.ckpt")
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "lightning_kd", "fit", *args]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 180
        seen = -1
        try:
            while seen < KILL_AFTER_EPOCH:  # last.ckpt must follow the epochs, not only val/acc's improvements
                c.check(proc.poll() is None, f"the run ended (exit {proc.returncode}) before it could be killed")
                c.check(time.monotonic() < deadline, f"last.ckpt did not reach epoch {KILL_AFTER_EPOCH} in 180 s")
                seen = epoch_of(last)
                time.sleep(0.005)
            proc.send_signal(signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        c.check(proc.returncode == -signal.SIGKILL, f"the run ended by itself (exit {proc.returncode})")
        c.check(digest(published) == before, "the killed run changed the published model.ckpt")
        epoch = checkpoint_epoch(last)
        best = checkpoint_epoch(last.with_name("best.ckpt"))
        c.check(seen <= epoch < KILL_EPOCHS - 1, f"last.ckpt holds epoch {epoch} (seen {seen} before the kill)")
        c.check(epoch >= best, f"last.ckpt holds epoch {epoch}, older than best.ckpt's {best}")
        c.cli("fit", *args, f"--ckpt_path={last}")
        c.check(digest(published) != before, "the resumed run did not publish its model")
        steps = torch.load(published, map_location="cpu", weights_only=True)["global_step"]
        c.check(steps == 2 * KILL_EPOCHS, f"the resumed run's model has {steps} steps, not {2 * KILL_EPOCHS}")
        rows = list(csv.DictReader(Path("runs/kd/version_2/metrics.csv").open()))
        epochs = sorted({int(float(r["epoch"])) for r in rows if r.get("train/loss")})
        c.check(epochs and epochs[0] == epoch + 1, f"the resumed run trained epochs {epochs[:3]}…, not {epoch + 1}…")
        return (
            f"model.ckpt unchanged after SIGKILL at epoch {epoch}; last.ckpt whole, the latest epoch ({epoch}); the "
            f"resumed run went on from epoch {epochs[0]} to epoch {KILL_EPOCHS} ({steps} steps) and published"
        )

    return trigger


@fault(
    "preemption",
    r"SIGTERM a few epochs in: exit 143; lightning-kd: stopped by SIGTERM at step \d+ \(epoch \d+\); the run's state "
    r"is saved in runs/kd/version_1/checkpoints/last\.ckpt: resume .*; the resumed run went on to epoch 60",
    kind="guard",
    slow=True,
    may_change=("runs/kd/model.ckpt*",),
)
def sigterm_saves_and_resumes(c: Case) -> Trigger:
    """a run stopped by SIGTERM (what SLURM and cloud schedulers send), beside a published model, then resumed"""
    published = healthy(c)
    args = [a for a in recipe(c) if not a.startswith("--trainer.max_epochs")] + [f"--trainer.max_epochs={KILL_EPOCHS}"]
    last = Path("runs/kd/version_1/checkpoints/last.ckpt")

    def trigger() -> str:
        before = digest(published)
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "lightning_kd", "fit", *args]
        proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL),  # not an "ignore" inherited from here
        )  # fmt: skip
        deadline = time.monotonic() + 180
        try:
            while not last.is_file():  # in its first epochs: time to stop it
                c.check(proc.poll() is None, f"the run ended (exit {proc.returncode}) before it could be stopped")
                c.check(time.monotonic() < deadline, "last.ckpt was not written in 180 s")
                time.sleep(0.005)
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        c.check(proc.returncode == 143, f"the stopped run exited {proc.returncode}, not 143: it looks finished")
        c.check(digest(published) == before, "the stopped run changed the published model.ckpt")
        said = [ln for ln in out.splitlines() if "stopped by SIGTERM" in ln]
        c.check(bool(said), f"the stopped run said nothing about it: {out[-300:]!r}")
        c.cli("fit", *args, f"--ckpt_path={last}")
        steps = torch.load(published, map_location="cpu", weights_only=True)["global_step"]
        c.check(steps == 2 * KILL_EPOCHS, f"the resumed run's model has {steps} steps, not {2 * KILL_EPOCHS}")
        return f"SIGTERM a few epochs in: exit 143; {said[0].strip()}; the resumed run went on to epoch {KILL_EPOCHS}"

    return trigger


@fault(
    "checkpoint/resume",
    r"last\.ckpt holds epoch 2 of 3",
    kind="guard",
)
def last_checkpoint_holds_the_latest_state(c: Case) -> Trigger:
    """last.ckpt after 3 epochs in which val/acc stops improving (lr 0)"""
    args = recipe(c)

    def trigger() -> str:
        c.cli("fit", *args, "--trainer.max_epochs=3", "--model.init_args.optimizer.init_args.lr=0")
        epoch = checkpoint_epoch("runs/kd/version_0/checkpoints/last.ckpt")
        c.check(epoch == 2, f"after 3 epochs last.ckpt holds epoch {epoch}")
        return "last.ckpt holds epoch 2 of 3"

    return trigger

"""Per-step overhead of a KD step run by Lightning and by lightning-kd, against a hand-written PyTorch loop.

Tiny models on purpose (student MLP 64-32-10, teacher MLP 64-128-10, batch 64, 1 torch thread): the maths
takes about a millisecond, so what a framework adds per step — hooks, logging, the progress bar, host
syncs — is what the figures show. Every case runs in this one process; repeats are interleaved (the case
order rotates), and each case is timed from the end of its warm-up steps to its last step.

    python benchmarks/step_overhead.py                 # 200 steps, 5 repeats: about 1-2 minutes on 2 cores
    python benchmarks/step_overhead.py --steps 60 --repeats 2 --json out.json   # the tests' size

Cases (the same DataLoader of resident batches feeds all of them):

- ``hand_loop``: the loop written out, the reference;
- ``minimal_bare``: a LightningModule with the same maths, no ``self.log``; no bar, no logger;
- ``minimal_logged``: the same module logging its loss once per step (``prog_bar=True``), with Lightning's
  progress bar and a CSV logger — the "plain LightningModule with the progress bar and logging" reference;
- ``kd_bare``: lightning-kd's ``DistillationModule``, no bar, no logger;
- ``kd_logged``: ``DistillationModule`` under the ``minimal_logged`` Trainer settings;
- ``kd_recipe``: ``DistillationModule`` with what recipes and the CLI use: ``KDProgressBar`` (refreshed by time)
  and a CSV logger;
- ``kd_compiled`` (``--compile``): ``kd_recipe`` with ``compile=True`` (inductor on CPU).

Targets (issue "Speed: logging that costs nothing per step"): overhead over the hand loop of ``kd_bare`` ≤ 1.2 ×
that of ``minimal_bare``; of ``kd_logged`` ≤ 1.1 × that of ``minimal_logged``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from lightning_kd import DistillationModule
from lightning_kd.callbacks import KDProgressBar
from lightning_kd.losses import kd_loss

T, ALPHA = 4.0, 0.9


def mlp(hidden: int) -> nn.Module:
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def batches(steps: int, batch: int = 64) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(batch, 64, generator=g), torch.randint(0, 10, (batch,), generator=g)) for _ in range(steps)]


def loss_fn(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (1 - ALPHA) * F.cross_entropy(s, y) + ALPHA * kd_loss(s, t, T)


class StepClock(L.Callback):
    """Wall time from the end of the warm-up steps to the end of the last step."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end, self.steps = warmup, 0.0, 0.0, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx + 1 == self.warmup:
            self.start = time.perf_counter()
        elif batch_idx + 1 > self.warmup:
            self.end, self.steps = time.perf_counter(), batch_idx + 1 - self.warmup


class Minimal(L.LightningModule):
    def __init__(self, log: bool) -> None:
        super().__init__()
        self.student, self.teacher, self.do_log = mlp(32), mlp(128).requires_grad_(False).eval(), log

    def training_step(self, batch, batch_idx):
        x, y = batch
        s = self.student(x)
        with torch.no_grad():
            t = self.teacher(x)
        loss = loss_fn(s, t, y)
        if self.do_log:
            self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.student.parameters(), lr=0.01, momentum=0.9)


def distillation(compile: bool = False) -> DistillationModule:
    opt = lambda params: torch.optim.SGD(params, lr=0.01, momentum=0.9)  # noqa: E731
    return DistillationModule(mlp(128), mlp(32), temperature=T, alpha=ALPHA, optimizer=opt, compile=compile)


def hand_loop(loader: DataLoader, warmup: int) -> float:
    student, teacher = mlp(32), mlp(128).requires_grad_(False).eval()
    opt = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9)
    start, n = 0.0, 0
    for i, (x, y) in enumerate(loader):
        s = student(x)
        with torch.no_grad():
            t = teacher(x)
        loss = loss_fn(s, t, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i + 1 == warmup:
            start = time.perf_counter()
        n = i + 1 - warmup
    return (time.perf_counter() - start) / n


def lightning_run(module: L.LightningModule, loader: DataLoader, warmup: int, bar: str, logger: bool) -> float:
    clock = StepClock(warmup)
    callbacks: list[L.Callback] = [clock]
    if bar == "kd":
        callbacks.append(KDProgressBar())
    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(
            accelerator="cpu",
            max_epochs=1,
            limit_val_batches=0,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=bar != "none",
            logger=L.pytorch.loggers.CSVLogger(tmp) if logger else False,
            callbacks=callbacks,
            num_sanity_val_steps=0,
        )
        trainer.fit(module, train_dataloaders=loader)
    return (clock.end - clock.start) / clock.steps


CASES: dict[str, Callable[[DataLoader, int], float]] = {
    "hand_loop": hand_loop,
    "minimal_bare": lambda dl, w: lightning_run(Minimal(log=False), dl, w, "none", False),
    "minimal_logged": lambda dl, w: lightning_run(Minimal(log=True), dl, w, "tqdm", True),
    "kd_bare": lambda dl, w: lightning_run(distillation(), dl, w, "none", False),
    "kd_logged": lambda dl, w: lightning_run(distillation(), dl, w, "tqdm", True),
    "kd_recipe": lambda dl, w: lightning_run(distillation(), dl, w, "kd", True),
    "kd_compiled": lambda dl, w: lightning_run(distillation(compile=True), dl, w, "kd", True),
}


def run(steps: int, repeats: int, compile: bool, warmup: int = 20) -> dict:
    torch.set_num_threads(1)
    loader = DataLoader(batches(steps), batch_size=None)  # items are whole batches already
    names = [c for c in CASES if compile or c != "kd_compiled"]
    samples: dict[str, list[float]] = {c: [] for c in names}
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for case in order:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Lightning's tips about workers and eval-mode modules
                samples[case].append(CASES[case](loader, warmup) * 1e3)
    ms = {c: statistics.median(v) for c, v in samples.items()}
    over = {c: ms[c] - ms["hand_loop"] for c in names if c != "hand_loop"}
    ratios = {
        "kd_bare_vs_minimal_bare": over["kd_bare"] / over["minimal_bare"],
        "kd_logged_vs_minimal_logged": over["kd_logged"] / over["minimal_logged"],
        "kd_recipe_vs_minimal_logged": over["kd_recipe"] / over["minimal_logged"],
    }
    return {
        "settings": {"steps": steps, "warmup": warmup, "repeats": repeats, "threads": 1, "batch": 64},
        "ms_per_step": ms,
        "overhead_ms": over,
        "ratios": ratios,
        "targets": {"kd_bare_vs_minimal_bare": 1.2, "kd_logged_vs_minimal_logged": 1.1},
        "samples_ms": samples,
        "torch": torch.__version__,
        "lightning": L.__version__,
    }


def markdown(result: dict) -> str:
    lines = ["| loop | ms / step | overhead over hand loop (ms) |", "|---|---|---|"]
    for case, ms in result["ms_per_step"].items():
        over = result["overhead_ms"].get(case)
        lines.append(f"| {case} | {ms:.3f} | {'–' if over is None else f'{over:.3f}'} |")
    lines += ["", "| ratio | value | target |", "|---|---|---|"]
    for name, value in result["ratios"].items():
        target = result["targets"].get(name)
        lines.append(f"| {name} | {value:.2f} | {'≤ ' + str(target) if target else '–'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--compile", action="store_true", help="add kd_compiled (inductor; compiles once per repeat)")
    p.add_argument("--json", type=Path, help="write every figure and sample here")
    args = p.parse_args(argv)
    threads = torch.get_num_threads()
    try:
        result = run(args.steps, args.repeats, args.compile)
    finally:
        torch.set_num_threads(threads)
    print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()

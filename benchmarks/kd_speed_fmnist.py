"""Fashion-MNIST KD epoch time: the hand-written loop of BENCHMARKS.md vs lightning-kd's default ``fit`` and
its fast path, on the same data, models and hyper-parameters.

Teacher ``ResNet(14, (64, 64, 128, 256), in_channels=1)`` → ``SmallCNN`` (16/32/64), batch 256 (234 steps,
drop_last), SGD Nesterov momentum 0.9, weight decay 5e-4, OneCycle peak 0.05 / pct_start 0.15, loss
0.9 · T² · KL + 0.1 · CE with T = 4, per-sample random crop (2 px, padded with black) + horizontal flip.
The teacher's weights are random: speed does not depend on them.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from functools import partial

import lightning as L
import torch
import torch.nn.functional as F
from kd_speed_timing import EpochTimer, SyncCounter, SyncWindow, sync
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from torch import Tensor, nn

from lightning_kd import DistillationModule
from lightning_kd.callbacks import KDProgressBar
from lightning_kd.data import FashionMNISTDataModule, random_crop_flip
from lightning_kd.models import ResNet, SmallCNN

CASES = ("hand_loop", "default_fit", "fast_fit")
TARGETS = {"default_fit": 1.05, "fast_fit": 0.8}  # × hand loop epoch time
OPTIMIZER = partial(torch.optim.SGD, lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
SCHEDULER = partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.05, pct_start=0.15)
TEMPERATURE, ALPHA = 4.0, 0.9


@dataclass(frozen=True)
class Sizes:
    batch_size: int = 256
    train_samples: int | None = None  # None: all 60,000 (234 steps of 256)
    eval_samples: int | None = None  # None: the 10,000 test images (validated on every epoch by the fits)
    teacher_depth: int = 14
    teacher_widths: tuple[int, int, int, int] = (64, 64, 128, 256)
    warmup_epochs: int = 1
    timed_epochs: int = 2
    refresh_every: int = 100  # fast path: progress bar refresh and logging period, in steps


# The CPU medium mode: real epochs of real data with small models, minutes on 2 cores. 60 steps of 256 (the
# first 15,360 training images), a ResNet-8 teacher 32/32/64/128 (0.3 M params) and the reference student.
CPU_MEDIUM = Sizes(
    train_samples=15_360,
    eval_samples=1_000,
    teacher_depth=8,
    teacher_widths=(32, 32, 64, 128),
    timed_epochs=1,
)
CPU_TARGETS = {"default_fit": 1.10}

SMOKE = Sizes(  # 10 steps of 64 per epoch and a small teacher: seconds on a CPU
    batch_size=64,
    train_samples=640,
    eval_samples=128,
    teacher_depth=8,
    teacher_widths=(16, 16, 32, 64),
    timed_epochs=1,
    refresh_every=5,
)


class FashionMNISTSubset(FashionMNISTDataModule):
    """The first ``train_samples`` / ``eval_samples`` of each split (all of them when ``None``)."""

    def __init__(self, train_samples: int | None, eval_samples: int | None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.train_samples, self.eval_samples = train_samples, eval_samples

    def load_splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        out = super().load_splits()
        limit = {name: self.train_samples if name == "train" else self.eval_samples for name in out}
        return {name: (x[: limit[name]], y[: limit[name]]) for name, (x, y) in out.items()}


def make_models(sizes: Sizes) -> tuple[nn.Module, nn.Module]:
    teacher = ResNet(sizes.teacher_depth, sizes.teacher_widths, in_channels=1, num_classes=10)
    return teacher, SmallCNN(1, 10, widths=(16, 32, 64))


def hinton_loss(student: Tensor, teacher: Tensor, targets: Tensor) -> Tensor:
    """0.9 · T² · KL(softmax(t/T) ‖ softmax(s/T)) + 0.1 · CE(s, y), in fp32."""
    s, t = student.float(), teacher.float()
    log_s, log_t = F.log_softmax(s / TEMPERATURE, 1), F.log_softmax(t / TEMPERATURE, 1)
    kl = F.kl_div(log_s, log_t, reduction="batchmean", log_target=True)
    return ALPHA * TEMPERATURE**2 * kl + (1 - ALPHA) * F.cross_entropy(s, targets)


def sync_window(steps_per_epoch: int) -> tuple[int, int]:
    """Steps ``[first, first + n)`` of the warm-up epoch whose host syncs are counted: its middle third."""
    return steps_per_epoch // 3, max(1, steps_per_epoch // 3)


class Runner:
    """Runs each case once per call; data loaded once and shared."""

    def __init__(self, sizes: Sizes, device: torch.device, data_dir: str | None, compile_fast: bool) -> None:
        self.sizes, self.device, self.compile_fast = sizes, device, compile_fast
        self.cuda = device.type == "cuda"
        kwargs = dict(train_samples=sizes.train_samples, eval_samples=sizes.eval_samples, data_dir=data_dir)
        self.default_dm = FashionMNISTSubset(batch_size=sizes.batch_size, **kwargs)
        self.default_dm.setup()
        self.fast_dm = FashionMNISTSubset(batch_size=sizes.batch_size, resident=True, **kwargs)
        self.fast_dm.splits = dict(self.default_dm.splits)  # same tensors; its setup moves them to the device
        self.steps_per_epoch = len(self.default_dm.splits["train"]) // sizes.batch_size
        self.counters = {case: SyncCounter(device) for case in CASES}

    @property
    def epochs(self) -> int:
        return self.sizes.warmup_epochs + self.sizes.timed_epochs

    def run(self, case: str) -> list[float]:
        """Seconds of each timed epoch of one run of ``case``."""
        torch.manual_seed(0)
        if case == "hand_loop":
            return self.hand_loop()
        return self.lightning_fit(fast=case == "fast_fit")

    def hand_loop(self) -> list[float]:
        dev, b, cl = self.device, self.sizes.batch_size, torch.channels_last
        train = self.default_dm.splits["train"]
        images, labels = train.images.to(dev), train.labels.to(dev)  # resident, like the reference
        teacher, student = make_models(self.sizes)
        teacher = teacher.to(dev, memory_format=cl).eval().requires_grad_(False)
        student = student.to(dev, memory_format=cl)
        steps = self.steps_per_epoch
        optimizer = OPTIMIZER(student.parameters())
        scheduler = SCHEDULER(optimizer, total_steps=self.epochs * steps)
        first, n = sync_window(steps)
        counter = self.counters["hand_loop"]
        black = self.default_dm.black  # the crop pads with black pixels, as the data module does
        seconds = []
        with counter.recording():
            for epoch in range(self.epochs):
                sync(dev)
                start = time.perf_counter()
                order = torch.randperm(len(labels), device=dev)
                for i in range(steps):
                    if epoch == 0 and i == first:
                        counter.start()
                    elif epoch == 0 and i == first + n:
                        counter.stop(n)
                    idx = order[i * b : (i + 1) * b]
                    x = random_crop_flip(images[idx], 2, True, fill=black).contiguous(memory_format=cl)
                    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.cuda):
                        with torch.no_grad():
                            t = teacher(x)
                        s = student(x)
                    loss = hinton_loss(s, t, labels[idx])
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    scheduler.step()
                sync(dev)
                if epoch >= self.sizes.warmup_epochs:
                    seconds.append(time.perf_counter() - start)
        return seconds

    def lightning_fit(self, fast: bool) -> list[float]:
        """lightning-kd's ``fit``. Default: what a Fashion-MNIST recipe run gets — ``channels_last=True``,
        ``KDProgressBar`` (refreshed by time), a CSV logger in a temporary folder, logging every 50 steps — with
        no checkpointing. Fast: also resident data, ``compile=True`` (CUDA), progress bar and logging every
        ``refresh_every`` steps."""
        teacher, student = make_models(self.sizes)
        if fast and self.compile_fast:
            torch._dynamo.reset()  # new modules each repeat: start below Dynamo's recompile limit again
        module = DistillationModule(
            teacher,
            student,
            temperature=TEMPERATURE,
            alpha=ALPHA,
            optimizer=OPTIMIZER,
            lr_scheduler=SCHEDULER,
            compile=fast and self.compile_fast,
            channels_last=True,
        )
        name = "fast_fit" if fast else "default_fit"
        timer = EpochTimer(self.device, self.sizes.warmup_epochs)
        callbacks: list[L.Callback] = [timer, SyncWindow(self.counters[name], 0, *sync_window(self.steps_per_epoch))]
        extra = {}
        if fast:
            callbacks.append(TQDMProgressBar(refresh_rate=self.sizes.refresh_every))
            extra["log_every_n_steps"] = self.sizes.refresh_every
        else:
            callbacks.append(KDProgressBar())
        with tempfile.TemporaryDirectory() as tmp:
            trainer = L.Trainer(
                accelerator="gpu" if self.cuda else "cpu",
                devices=1,
                precision="bf16-mixed" if self.cuda else "32-true",
                max_epochs=self.epochs,
                logger=CSVLogger(tmp, name=name),
                enable_checkpointing=False,
                default_root_dir=tmp,
                callbacks=callbacks,
                **extra,
            )
            with self.counters[name].recording():
                trainer.fit(module, datamodule=self.fast_dm if fast else self.default_dm)
        return timer.seconds


def run(
    sizes: Sizes,
    device: torch.device,
    repeats: int,
    data_dir: str | None,
    compile_fast: bool,
    targets: dict[str, float] | None = None,
) -> dict:
    """All three cases, ``repeats`` times, interleaved (the case order rotates each repeat)."""
    runner = Runner(sizes, device, data_dir, compile_fast)
    samples: dict[str, list[float]] = {case: [] for case in CASES}
    for r in range(repeats):
        for case in CASES[r % len(CASES) :] + CASES[: r % len(CASES)]:
            samples[case] += runner.run(case)
    s_per_epoch = {case: statistics.median(v) for case, v in samples.items()}
    ratios = {f"{case}_vs_hand_loop": s_per_epoch[case] / s_per_epoch["hand_loop"] for case in TARGETS}
    targets = {f"{case}_vs_hand_loop": target for case, target in (TARGETS if targets is None else targets).items()}
    return {
        "config": {
            **asdict(sizes),
            "steps_per_epoch": runner.steps_per_epoch,
            "repeats": repeats,
            "fast_fit_compiled": compile_fast,
        },
        "s_per_epoch": s_per_epoch,
        "samples_s_per_epoch": samples,
        "ratios": ratios,
        "targets": targets,
        "meets_target": {k: ratios[k] <= targets[k] for k in targets},
        "host_syncs_per_step": {case: c.per_step for case, c in runner.counters.items()},
    }

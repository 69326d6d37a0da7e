"""ImageNet-shaped step costs: ResNet-50 → ResNet-18 (torchvision, random weights), 3×224×224, batch 256,
bf16 autocast, channels_last, one synthetic batch resident on the device.

Cases (ms per step, and peak device memory above the shared input batch):

- ``student_step``: the student alone, CE loss, SGD step (plain loop);
- ``teacher_inference``: one teacher forward under ``no_grad`` (plain loop);
- ``online_kd_lightning`` / ``online_kd_plain``: a KD step, teacher run online: lightning-kd's
  ``DistillationModule`` driven by a Trainer / the plain loop;
- ``cached_kd_lightning`` / ``cached_kd_plain``: a KD step on precomputed teacher logits (lightning-kd through
  a teacher component answering with them, as a cached teacher does).
"""

from __future__ import annotations

import gc
import statistics
from dataclasses import asdict, dataclass
from functools import partial

import lightning as L
import torch
import torch.nn.functional as F
import torchvision
from kd_speed_fmnist import hinton_loss
from kd_speed_timing import StepTimer, time_steps
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lightning_kd import DistillationModule
from lightning_kd.core.teacher import TeacherBase, TeacherOutput

CASES = (
    "student_step",
    "teacher_inference",
    "online_kd_lightning",
    "online_kd_plain",
    "cached_kd_lightning",
    "cached_kd_plain",
)
TARGETS = {"online_kd_vs_student_plus_teacher": 1.02, "cached_kd_vs_student": 1.02, "kd_peak_vs_bound": 1.0}
OPTIMIZER = partial(torch.optim.SGD, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)


@dataclass(frozen=True)
class Sizes:
    image_size: int = 224
    batch_size: int = 256
    teacher: str = "resnet50"
    student: str = "resnet18"
    num_classes: int = 1000
    warmup_steps: int = 10
    steps: int = 30


SMOKE = Sizes(image_size=32, batch_size=4, teacher="resnet18", student="resnet18", warmup_steps=1, steps=3)


class PrecomputedTeacher(TeacherBase):
    """A teacher component whose logits are a fixed tensor (``precomputed``): the cost of a cached-teacher step
    without any cache reads, through the same call a :class:`~lightning_kd.CachedTeacher` answers."""

    def __init__(self, precomputed: Tensor) -> None:
        super().__init__()
        self.precomputed = precomputed

    @property
    def num_classes(self) -> int:
        return self.precomputed.shape[-1]

    def forward(self, inputs, index=None, epoch=None) -> TeacherOutput:
        return TeacherOutput(logits=self.precomputed)


def nbytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


class Runner:
    def __init__(self, sizes: Sizes, device: torch.device) -> None:
        self.sizes, self.device, self.cuda = sizes, device, device.type == "cuda"
        torch.manual_seed(0)
        cl = torch.channels_last
        build = partial(torchvision.models.get_model, weights=None, num_classes=sizes.num_classes)
        self.teacher = build(sizes.teacher).to(memory_format=cl).eval().requires_grad_(False)
        self.student = build(sizes.student).to(memory_format=cl)
        shape = (sizes.batch_size, 3, sizes.image_size, sizes.image_size)
        self.x = torch.randn(shape, device=device).contiguous(memory_format=cl)
        self.y = torch.randint(0, sizes.num_classes, (sizes.batch_size,), device=device)
        with torch.no_grad(), self.autocast():
            self.cached = self.teacher.to(device)(self.x).float()  # (B, classes)
        self.teacher.cpu()

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cuda)

    def run(self, case: str) -> tuple[float, int | None]:
        """(ms per step, peak bytes; ``None`` off CUDA) of one run of ``case``. The peak is the device's peak
        allocation over the timed steps (weights and optimizer state included, warm-up excluded) minus what
        was allocated before the case (input batch, cached logits): models are on the CPU between cases."""
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()
            base = torch.cuda.memory_allocated(self.device)
        ms = getattr(self, case)()
        peak = torch.cuda.max_memory_allocated(self.device) - base if self.cuda else None
        self.student.zero_grad(set_to_none=True)
        self.teacher.cpu()
        self.student.cpu()
        return ms, peak

    def _time(self, step) -> float:
        return time_steps(self.device, step, self.sizes.warmup_steps, self.sizes.steps)

    def _train_step(self, loss_fn) -> float:
        student = self.student.to(self.device)
        optimizer = OPTIMIZER(student.parameters())

        def step() -> None:
            loss = loss_fn(student)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        return self._time(step)

    def student_step(self) -> float:
        def loss(student: nn.Module) -> Tensor:
            with self.autocast():
                return F.cross_entropy(student(self.x).float(), self.y)

        return self._train_step(loss)

    def teacher_inference(self) -> float:
        teacher = self.teacher.to(self.device)

        def step() -> None:
            with torch.no_grad(), self.autocast():
                teacher(self.x)

        return self._time(step)

    def online_kd_plain(self) -> float:
        teacher = self.teacher.to(self.device)

        def loss(student: nn.Module) -> Tensor:
            with self.autocast():
                with torch.no_grad():
                    t = teacher(self.x)
                s = student(self.x)
            return hinton_loss(s, t, self.y)

        return self._train_step(loss)

    def cached_kd_plain(self) -> float:
        def loss(student: nn.Module) -> Tensor:
            with self.autocast():
                s = student(self.x)
            return hinton_loss(s, self.cached, self.y)

        return self._train_step(loss)

    def _lightning(self, module: DistillationModule) -> float:
        n = self.sizes.warmup_steps + self.sizes.steps
        timer = StepTimer(self.device, self.sizes.warmup_steps, self.sizes.steps)
        trainer = L.Trainer(
            accelerator="gpu" if self.cuda else "cpu",
            devices=1,
            precision="bf16-mixed" if self.cuda else "32-true",
            max_steps=n,
            max_epochs=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            callbacks=[timer],
        )
        # the same resident batch every step (batch_size=None: items are batches already)
        trainer.fit(module, train_dataloaders=DataLoader([(self.x, self.y)] * n, batch_size=None))
        assert timer.ms is not None
        return timer.ms

    def online_kd_lightning(self) -> float:
        return self._lightning(DistillationModule(self.teacher, self.student, optimizer=OPTIMIZER))

    def cached_kd_lightning(self) -> float:
        module = DistillationModule(PrecomputedTeacher(self.cached), self.student, optimizer=OPTIMIZER)
        return self._lightning(module)


def run(sizes: Sizes, device: torch.device, repeats: int) -> dict:
    """Every case ``repeats`` times, interleaved (the case order rotates each repeat)."""
    runner = Runner(sizes, device)
    samples: dict[str, list[float]] = {case: [] for case in CASES}
    peaks: dict[str, int | None] = dict.fromkeys(CASES)
    for r in range(repeats):
        for case in CASES[r % len(CASES) :] + CASES[: r % len(CASES)]:
            ms, peak = runner.run(case)
            samples[case].append(ms)
            if peak is not None:
                peaks[case] = max(peaks[case] or 0, peak)
    ms = {case: statistics.median(v) for case, v in samples.items()}
    teacher_weights = nbytes(runner.teacher)
    activations = bound = None
    if peaks["teacher_inference"] is not None and peaks["student_step"] is not None:
        activations = peaks["teacher_inference"] - teacher_weights  # peak of a no_grad forward minus weights
        bound = peaks["student_step"] + teacher_weights + activations
    online_base = ms["student_step"] + ms["teacher_inference"]
    ratios = {
        "online_kd_vs_student_plus_teacher": ms["online_kd_lightning"] / online_base,
        "online_kd_plain_vs_student_plus_teacher": ms["online_kd_plain"] / online_base,
        "cached_kd_vs_student": ms["cached_kd_lightning"] / ms["student_step"],
        "cached_kd_plain_vs_student": ms["cached_kd_plain"] / ms["student_step"],
        "kd_peak_vs_bound": peaks["online_kd_lightning"] / bound if bound else None,
        "kd_plain_peak_vs_bound": peaks["online_kd_plain"] / bound if bound else None,
    }
    return {
        "config": {**asdict(sizes), "repeats": repeats, "input": [3, sizes.image_size, sizes.image_size]},
        "ms_per_step": ms,
        "samples_ms_per_step": samples,
        "peak_bytes": peaks,
        "teacher_weights_bytes": teacher_weights,
        "teacher_activation_bytes": activations,
        "kd_memory_bound_bytes": bound,
        "ratios": ratios,
        "targets": TARGETS,
        "meets_target": {k: None if ratios[k] is None else ratios[k] <= t for k, t in TARGETS.items()},
    }

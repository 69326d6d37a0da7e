"""ReportCallback: when ``fit`` ends, the teacher-vs-student report and the student's exports, beside the logs."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn
from typing_extensions import override

from lightning_kd.callbacks.run_checkpoint import RunCheckpoint
from lightning_kd.core.teacher import TeacherBase
from lightning_kd.report.class_names import class_names_for, normalization_of
from lightning_kd.report.run import run_report


def report_models(module: L.LightningModule) -> tuple[nn.Module, nn.Module]:
    """``(teacher network, student network)`` of a distillation module (its teacher component's one network).

    Raises:
        ValueError: the module has no teacher component with exactly one live network, or no ``student``.
    """
    teacher, student = getattr(module, "teacher", None), getattr(module, "student", None)
    if not isinstance(teacher, TeacherBase) or not isinstance(student, nn.Module):
        raise ValueError(
            f"{type(module).__name__} has no teacher component and student: the report compares the teacher and "
            "the student of a DistillationModule. To report a ClassificationModule checkpoint (e.g. the "
            "student-alone baseline) against the teacher, give the distillation recipe (e.g. only its base.yaml) "
            "with that checkpoint: its model.* weights load into the recipe's student."
        )
    if len(teacher.networks) != 1:
        raise ValueError(
            f"the teacher component {type(teacher).__name__} has {len(teacher.networks)} live networks; the report "
            "compares one teacher (an offline cache needs its model, an ensemble is not one network)."
        )
    return teacher.networks[0], student


def _checkpoint_file(trainer: L.Trainer) -> str | None:
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, RunCheckpoint) and callback.published:
            return callback.published  # the model this run published: the weights being reported
        if isinstance(callback, ModelCheckpoint) and (callback.last_model_path or callback.best_model_path):
            return callback.last_model_path or callback.best_model_path
    return None


class ReportCallback(L.Callback):
    """At the end of a successful ``fit``, on rank zero: the report of :func:`~lightning_kd.report.run.run_report`.

    Teacher: the module's teacher component's network (``pl_module.teacher.model``); student:
    ``pl_module.student``; data: the trainer's data module's test split. Written into ``out_dir`` (default
    ``<trainer.log_dir>/report``): ``report.md``, ``report.json``, the figures and ``export/``. A missing
    optional extra (onnx/onnxruntime, matplotlib) leaves that part out with a warning naming the extra; any
    other failure is a warning too — the trained model is already saved, and the run is not failed for its
    report (write it again with ``lightning-kd report``).

    Args:
        out_dir: the report folder; ``None``: ``<trainer.log_dir>/report``, one per run version.
        export: also export the student (ONNX fp32/fp16/int8, ``.pt2``, ``deploy.json``).
        plots: draw the PNG figures.
        batch_sizes: batch sizes of the CPU latency measurements.
        threads: CPU threads for the latency measurements.
        min_run_time: least seconds per latency measurement.
        max_run_time: most seconds per latency measurement.

    Example::

        trainer = L.Trainer(callbacks=[ReportCallback()])  # YAML: trainer.callbacks, class_path
        # lightning_kd.callbacks.report.ReportCallback
    """

    def __init__(
        self,
        out_dir: str | None = None,
        export: bool = True,
        plots: bool = True,
        batch_sizes: Sequence[int] = (1, 64),
        threads: int = 1,
        min_run_time: float = 0.1,
        max_run_time: float = 2.0,
    ) -> None:
        if not batch_sizes or any(int(b) != b or b < 1 for b in batch_sizes):
            raise ValueError(f"batch_sizes must be a non-empty list of integers >= 1, got {batch_sizes!r}.")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}.")
        if not 0 < min_run_time <= max_run_time:
            raise ValueError(f"need 0 < min_run_time <= max_run_time, got {min_run_time} and {max_run_time}.")
        self.out_dir = out_dir
        self.export = export
        self.plots = plots
        self.batch_sizes = tuple(int(b) for b in batch_sizes)
        self.threads = threads
        self.min_run_time = min_run_time
        self.max_run_time = max_run_time
        self.written: dict[str, Any] | None = None  # the last report's run_report result

    def report_dir(self, trainer: L.Trainer) -> str:
        """Where the report goes for this run."""
        return self.out_dir or os.path.join(trainer.log_dir or trainer.default_root_dir, "report")

    def write(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        """Write the report of ``pl_module``'s teacher and student on the trainer's data module's test split."""
        teacher, student = report_models(pl_module)
        datamodule = trainer.datamodule
        if datamodule is None:
            raise ValueError("fit was given dataloaders, not a data module: the report needs its test split.")
        datamodule.setup("test")
        mean, std = normalization_of(datamodule)
        teacher_file = pl_module.hparams.get("teacher_ckpt")
        return run_report(
            teacher,
            student,
            datamodule.test_dataloader(),
            self.report_dir(trainer),
            mean=mean,
            std=std,
            class_names=class_names_for(datamodule),
            export=self.export,
            plots=self.plots,
            batch_sizes=self.batch_sizes,
            threads=self.threads,
            teacher_file=teacher_file if isinstance(teacher_file, str) and os.path.isfile(teacher_file) else None,
            student_file=_checkpoint_file(trainer),
            min_run_time=self.min_run_time,
            max_run_time=self.max_run_time,
        )

    @override
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.fast_dev_run:
            return
        try:
            self.written = self.write(trainer, pl_module)
        except Exception as err:  # the model is saved: a failed report is reported, the run is not failed
            rank_zero_warn(
                f"ReportCallback wrote no report ({type(err).__name__}: {err}). The trained model is saved; "
                "write the report with `lightning-kd report --config <recipe> --ckpt <checkpoint>`."
            )
            return
        for note in self.written["notes"]:
            rank_zero_warn(f"ReportCallback: {note}")
        rank_zero_info(f"teacher-vs-student report: {self.written['paths']['markdown']}")

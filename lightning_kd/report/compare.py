"""Teacher against student, every figure side by side: accuracy, calibration, agreement, cost, file sizes.

:func:`compare_models` measures; :func:`write_report` writes ``report.json``, ``report.md`` and the figures.
Both take plain ``nn.Module``\\ s and data, so a CLI, a callback or a notebook can call them alike.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lightning_kd.core.model_info import count_parameters
from lightning_kd.report._extras import PLOTS, MissingExtraError, import_extra
from lightning_kd.report._files import ensure_writable
from lightning_kd.report.cost import FLOPS_CONVENTION, file_size, flops_per_sample, measure_latency
from lightning_kd.report.markdown import render_markdown
from lightning_kd.report.metrics import (
    DataLike,
    classification_summary,
    collect_pair,
    first_inputs,
    kl_teacher_student,
    top1_agreement,
)
from lightning_kd.report.plots import PLOT_FILES, write_plots

REPORT_VERSION = 1


def _ratio(student: float | None, teacher: float | None) -> float | None:
    return None if student is None or not teacher else student / teacher


def _difference(student: float | None, teacher: float | None) -> float | None:
    return None if student is None or teacher is None else student - teacher


def compare_models(
    teacher: nn.Module,
    student: nn.Module,
    loader: DataLike,
    *,
    class_names: Sequence[str] | None = None,
    example_input: Tensor | None = None,
    batch_sizes: Sequence[int] = (1, 64),
    threads: int | None = None,
    teacher_file: str | os.PathLike | None = None,
    student_file: str | os.PathLike | None = None,
    exports: Mapping[str, Any] | None = None,
    device: torch.device | str | None = None,
    n_bins: int = 15,
    min_run_time: float = 0.1,
    max_run_time: float = 2.0,
) -> dict[str, Any]:
    """Measure teacher and student on the same data and hardware; JSON-ready.

    Args:
        teacher: the teacher (any ``nn.Module`` returning ``(N, C)`` logits); left as it was.
        student: the student, likewise.
        loader: labelled data (see :data:`~lightning_kd.report.metrics.DataLike`); both models see every batch
            in one pass, so a shuffled loader is fine.
        class_names: one name per class, for the tables and figures.
        example_input: real inputs for FLOPs and latency; ``None``: the first batch of ``loader``.
        batch_sizes: batch sizes of the CPU latency measurements.
        threads: torch threads while timing; ``None``: ``torch.get_num_threads()`` (recorded either way).
        teacher_file: the teacher's checkpoint, for its size.
        student_file: the student's checkpoint, likewise.
        exports: the result of :func:`~lightning_kd.report.deploy.export_student`, included as is.
        device: where the logits are computed; ``None``: each model's own device. Latency is always CPU.
        n_bins: confidence bins of the ECE and the reliability diagram.
        min_run_time: least seconds per latency measurement.
        max_run_time: most seconds per latency measurement.

    Returns:
        ``teacher`` and ``student``, each with ``top1``, ``top5`` (``None`` unless C > 5), ``ece``,
        ``per_class_accuracy``, ``confusion_matrix``, ``reliability``, ``params``, ``flops_per_sample``,
        ``latency`` (``{str(batch size): {median_ms, iqr_ms, samples_per_s, threads, batch_size}}``),
        ``file``, ``file_bytes``; ``agreement`` (``top1``, ``kl_teacher_student`` in nats at T = 1);
        ``ratios`` (student / teacher: ``params``, ``flops_per_sample``, ``file_bytes``, ``latency_ms`` and
        ``samples_per_s`` per batch size); ``differences`` (student − teacher: ``top1``, ``top5``, ``ece``);
        ``num_samples``, ``num_classes``, ``class_names``, ``class_counts``, ``exports``, ``settings``.
    """
    threads = torch.get_num_threads() if threads is None else threads
    s_logits, t_logits, targets = collect_pair(student, teacher, loader, device)
    if targets is None:
        raise ValueError(
            "compare_models needs labelled data: give (inputs, targets) or (inputs, targets, index) batches."
        )
    num_classes = t_logits.shape[1]
    if s_logits.shape[1] != num_classes:
        raise ValueError(f"teacher predicts {num_classes} classes but student {s_logits.shape[1]}: they must match.")
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class_names for {num_classes} classes: give one name per class.")
    example = (first_inputs(loader) if example_input is None else example_input).detach().cpu()
    timing = {"threads": threads, "min_run_time": min_run_time, "max_run_time": max_run_time}

    def measure(model: nn.Module, logits: Tensor, path: str | os.PathLike | None) -> dict[str, Any]:
        return {
            **classification_summary(logits, targets, n_bins),
            "params": count_parameters(model),
            "flops_per_sample": flops_per_sample(model, example),
            "latency": {str(b): measure_latency(model, example, b, **timing) for b in batch_sizes},
            "file": None if path is None else os.fspath(path),
            "file_bytes": file_size(path),
        }

    t, s = measure(teacher, t_logits, teacher_file), measure(student, s_logits, student_file)
    return {
        "version": REPORT_VERSION,
        "num_samples": len(targets),
        "num_classes": num_classes,
        "class_names": None if class_names is None else [str(c) for c in class_names],
        "class_counts": torch.bincount(targets, minlength=num_classes).tolist(),
        "teacher": t,
        "student": s,
        "agreement": {
            "top1": top1_agreement(s_logits, t_logits),
            "kl_teacher_student": kl_teacher_student(s_logits, t_logits),
        },
        "ratios": {
            **{k: _ratio(s[k], t[k]) for k in ("params", "flops_per_sample", "file_bytes")},
            **{
                k: {b: _ratio(s["latency"][b][k], t["latency"][b][k]) for b in s["latency"]}
                for k in ("median_ms", "samples_per_s")
            },
        },
        "differences": {k: _difference(s[k], t[k]) for k in ("top1", "top5", "ece")},
        "exports": None if exports is None else dict(exports),
        "settings": {
            "threads": threads,
            "batch_sizes": list(batch_sizes),
            "ece_bins": n_bins,
            "flops": FLOPS_CONVENTION,
            "latency": "CPU, eval + no_grad, median per call of torch.utils.benchmark.Timer.adaptive_autorange",
            "torch_version": torch.__version__,
        },
    }


REPORT_FILES = {"json": "report.json", "markdown": "report.md"}


def write_report(
    result: Mapping[str, Any], out_dir: str | os.PathLike, plots: bool = True, *, overwrite: bool = False
) -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` and (with matplotlib) the PNG figures into ``out_dir``.

    Args:
        result: from :func:`compare_models`.
        out_dir: the report folder (created if missing).
        plots: draw the figures; without matplotlib, ``report.md`` says which extra adds them instead.
        overwrite: replace existing report files; without it an existing one raises :class:`FileExistsError`
            before anything is written.

    Returns:
        ``{"json" | "markdown" | "confusion" | "reliability" | "per_class": path}`` of the files written.
    """
    out = Path(out_dir)
    paths = {key: out / name for key, name in REPORT_FILES.items()}
    plot_note = None
    if plots:
        try:
            import_extra("matplotlib", PLOTS, "The report's figures")
        except MissingExtraError as err:
            plots, plot_note = False, str(err)
    figures = {key: out / name for key, name in PLOT_FILES.items()} if plots else {}
    ensure_writable([*paths.values(), *figures.values()], overwrite)
    out.mkdir(parents=True, exist_ok=True)
    if plots:
        figures = write_plots(result, out, overwrite=overwrite)
    paths["json"].write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    paths["markdown"].write_text(render_markdown(result, {k: p.name for k, p in figures.items()}, plot_note))
    return {**paths, **figures}

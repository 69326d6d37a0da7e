"""PNG figures of a teacher–student comparison: confusion matrices, reliability diagrams, per-class accuracy.

Drawn on :class:`matplotlib.figure.Figure` with the Agg canvas directly, so no pyplot state and no global
backend change. matplotlib comes with the ``lightning-kd[plots]`` extra and is imported only when drawing.
Reliability diagrams follow Guo, Pleiss, Sun & Weinberger, "On Calibration of Modern Neural Networks", 2017,
arXiv:1706.04599 (Fig. 1).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lightning_kd.report._extras import PLOTS, import_extra
from lightning_kd.report._files import ensure_writable

PLOT_FILES = {
    "confusion": "confusion_matrices.png",
    "reliability": "reliability.png",
    "per_class": "per_class_accuracy.png",
}


def _figure(ncols: int, width: float, height: float) -> tuple[Any, Any]:
    figure_mod = import_extra("matplotlib.figure", PLOTS, "Drawing the report's figures")
    agg = import_extra("matplotlib.backends.backend_agg", PLOTS, "Drawing the report's figures")
    fig = figure_mod.Figure(figsize=(width, height), layout="constrained")
    agg.FigureCanvasAgg(fig)
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def _save(fig: Any, path: str | os.PathLike, overwrite: bool) -> Path:
    ensure_writable([path], overwrite)
    fig.savefig(path, dpi=120)
    return Path(path)


def _names(class_names: Sequence[str] | None, n: int) -> list[str]:
    return [str(c) for c in class_names] if class_names is not None else [str(i) for i in range(n)]


def plot_confusion_matrices(
    teacher: Sequence[Sequence[int]],
    student: Sequence[Sequence[int]],
    path: str | os.PathLike,
    *,
    class_names: Sequence[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Teacher and student ``(C, C)`` confusion matrices side by side (rows true, columns predicted)."""
    fig, axes = _figure(2, 11, 5)
    for ax, title, cm in zip(axes, ("teacher", "student"), (teacher, student)):
        cm = np.asarray(cm)
        names = _names(class_names, len(cm))
        ax.imshow(cm, cmap="Blues")
        ax.set(title=title, xlabel="predicted", ylabel="true", xticks=range(len(cm)), yticks=range(len(cm)))
        ax.set_xticklabels(names, rotation=90)
        ax.set_yticklabels(names)
        if len(cm) <= 20:  # counts stay legible up to ~20 classes
            for (i, j), v in np.ndenumerate(cm):
                ax.text(j, i, int(v), ha="center", va="center", fontsize=7, color="w" if v > cm.max() / 2 else "k")
    return _save(fig, path, overwrite)


def plot_reliability(
    teacher: Mapping[str, Sequence[float | None]],
    student: Mapping[str, Sequence[float | None]],
    path: str | os.PathLike,
    *,
    teacher_ece: float | None = None,
    student_ece: float | None = None,
    overwrite: bool = False,
) -> Path:
    """Reliability diagrams: per confidence bin, accuracy (bars) against the diagonal of perfect calibration.

    Args:
        teacher: :func:`~lightning_kd.report.metrics.reliability_bins` of the teacher (tensors or lists with
            ``None`` for empty bins).
        student: the same for the student.
        path: the PNG to write.
        teacher_ece: shown in the title when given.
        student_ece: likewise.
        overwrite: replace an existing file.
    """
    fig, axes = _figure(2, 10, 4.5)
    for ax, title, rel, ece in zip(axes, ("teacher", "student"), (teacher, student), (teacher_ece, student_ece)):
        edges = np.asarray(rel["edges"], dtype=float)
        acc = np.array([np.nan if a is None else a for a in rel["accuracy"]], dtype=float)
        conf = np.array([np.nan if c is None else c for c in rel["confidence"]], dtype=float)
        centers, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
        full = ~np.isnan(acc)  # empty bins draw nothing
        ax.bar(centers[full], acc[full], width=width[full], edgecolor="k", label="accuracy")
        # Guo et al.'s "gap": from the accuracy up (or down) to the mean confidence of the bin
        gap = conf[full] - acc[full]
        ax.bar(
            centers[full], gap, bottom=acc[full], width=width[full], fill=False, hatch="//", edgecolor="r", label="gap"
        )
        ax.plot([0, 1], [0, 1], "k--", lw=1)
        suffix = "" if ece is None else f" (ECE {ece:.3f})"
        ax.set(title=title + suffix, xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
        ax.legend(loc="upper left")
    return _save(fig, path, overwrite)


def plot_per_class_accuracy(
    teacher: Sequence[float | None],
    student: Sequence[float | None],
    path: str | os.PathLike,
    *,
    class_names: Sequence[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Per-class accuracy, teacher and student as grouped bars (a class with no sample has no bar)."""
    t = np.array([np.nan if v is None else v for v in teacher], dtype=float)
    s = np.array([np.nan if v is None else v for v in student], dtype=float)
    fig, (ax,) = _figure(1, max(6, 0.5 * len(t)), 4)
    x = np.arange(len(t))
    ax.bar(x - 0.2, t, width=0.4, label="teacher")
    ax.bar(x + 0.2, s, width=0.4, label="student")
    ax.set(xticks=x, ylim=(0, 1.05), ylabel="accuracy", title="per-class accuracy")
    ax.set_xticklabels(_names(class_names, len(t)), rotation=90 if len(t) > 12 else 0)
    ax.legend()
    return _save(fig, path, overwrite)


def write_plots(result: Mapping[str, Any], out_dir: str | os.PathLike, *, overwrite: bool = False) -> dict[str, Path]:
    """Draw the three figures of a :func:`~lightning_kd.report.compare.compare_models` result into ``out_dir``.

    Returns:
        ``{"confusion" | "reliability" | "per_class": path}``.
    """
    out = Path(out_dir)
    paths = {key: out / name for key, name in PLOT_FILES.items()}
    ensure_writable(paths.values(), overwrite)
    teacher, student, names = result["teacher"], result["student"], result.get("class_names")
    return {
        "confusion": plot_confusion_matrices(
            teacher["confusion_matrix"],
            student["confusion_matrix"],
            paths["confusion"],
            class_names=names,
            overwrite=overwrite,
        ),
        "reliability": plot_reliability(
            teacher["reliability"],
            student["reliability"],
            paths["reliability"],
            teacher_ece=teacher["ece"],
            student_ece=student["ece"],
            overwrite=overwrite,
        ),
        "per_class": plot_per_class_accuracy(
            teacher["per_class_accuracy"],
            student["per_class_accuracy"],
            paths["per_class"],
            class_names=names,
            overwrite=overwrite,
        ),
    }

"""One call from a teacher, a student and labelled data to a report folder: measure, export, write.

:func:`run_report` is what ``lightning-kd report``, :class:`~lightning_kd.callbacks.report.ReportCallback` and the
quickstart share. It checks every file it would write before it computes anything (a refusal leaves an existing
report untouched), exports the student into ``<out_dir>/export/`` when asked, and turns a missing optional extra
into a note — in ``report.md``, ``report.json`` and the returned ``notes`` — instead of an error::

    <out_dir>/
      report.md  report.json  confusion_matrices.png  reliability.png  per_class_accuracy.png
      export/    student.onnx  student.fp16.onnx  student.int8.onnx  student.pt2  deploy.json
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from lightning_kd.report._extras import EXPORT, PLOTS, MissingExtraError, import_extra
from lightning_kd.report._files import ensure_writable
from lightning_kd.report.compare import REPORT_FILES, compare_models, write_report
from lightning_kd.report.deploy import export_student
from lightning_kd.report.markdown import main_table as table_lines
from lightning_kd.report.metrics import DataLike
from lightning_kd.report.plots import PLOT_FILES

EXPORT_DIR = "export"
# what export_student writes with name="student", fp16 and int8 on: checked before anything is computed
EXPORT_FILES = ("student.onnx", "student.fp16.onnx", "student.int8.onnx", "student.pt2", "deploy.json")


def report_targets(out_dir: str | os.PathLike, *, plots: bool = True, export: bool = True) -> list[Path]:
    """Every file :func:`run_report` may write into ``out_dir`` with these settings."""
    out = Path(out_dir)
    names = [*REPORT_FILES.values(), *(PLOT_FILES.values() if plots else ())]
    return [out / n for n in names] + ([out / EXPORT_DIR / n for n in EXPORT_FILES] if export else [])


def _missing(module: str, extra: str, needed_for: str) -> str | None:
    try:
        import_extra(module, extra, needed_for)
    except MissingExtraError as err:
        return str(err)
    return None


def run_report(
    teacher: nn.Module,
    student: nn.Module,
    data: DataLike,
    out_dir: str | os.PathLike,
    *,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    class_names: Sequence[str] | None = None,
    export: bool = True,
    plots: bool = True,
    batch_sizes: Sequence[int] = (1, 64),
    threads: int | None = None,
    teacher_file: str | os.PathLike | None = None,
    student_file: str | os.PathLike | None = None,
    overwrite: bool = False,
    min_run_time: float = 0.1,
    max_run_time: float = 2.0,
) -> dict[str, Any]:
    """Compare ``teacher`` and ``student`` on ``data``, export the student, write the report into ``out_dir``.

    Args:
        teacher: the teacher network (``(N, C)`` logits); left as it was.
        student: the student network, likewise; exported when ``export``.
        data: labelled evaluation data, e.g. a data module's ``test_dataloader()``.
        out_dir: the report folder (created if missing); the exports go to ``<out_dir>/export``.
        mean: the inputs' normalisation mean, for ``deploy.json``.
        std: the inputs' normalisation std, likewise.
        class_names: one name per class, for the tables, the figures and ``deploy.json``.
        export: write the ONNX (fp32, fp16, int8) and ``.pt2`` exports and ``deploy.json``; without onnx and
            onnxruntime a note names the extra instead.
        plots: draw the PNG figures; without matplotlib a note names the extra instead.
        batch_sizes: batch sizes of the latency measurements.
        threads: CPU threads for the latency measurements (torch and ONNX Runtime); ``None``:
            ``torch.get_num_threads()``. Stated in the report.
        teacher_file: the teacher's checkpoint, for its size.
        student_file: the student's checkpoint, likewise.
        overwrite: replace an existing report's files; without it an existing file raises
            :class:`FileExistsError` before anything is computed or written.
        min_run_time: least seconds per latency measurement.
        max_run_time: most seconds per latency measurement.

    Returns:
        ``result`` (:func:`~lightning_kd.report.compare.compare_models`'s, with ``exports`` and ``notes``),
        ``paths`` (``{"json" | "markdown" | figure: path}``), ``export_dir`` (``None`` when nothing was
        exported), ``notes`` (one line per missing extra, naming the ``pip install`` that adds it).
    """
    out = Path(out_dir)
    ensure_writable(report_targets(out, plots=plots, export=export), overwrite)
    timing = {"threads": threads, "min_run_time": min_run_time, "max_run_time": max_run_time}
    # measured first: a fault in the models or the data stops the run before any file is written
    result = compare_models(
        teacher,
        student,
        data,
        class_names=class_names,
        batch_sizes=batch_sizes,
        teacher_file=teacher_file,
        student_file=student_file,
        **timing,
    )
    plot_note = _missing("matplotlib", PLOTS, "The report's figures") if plots else None
    export_note, export_dir = None, None
    if export:
        missing = _missing("onnx", EXPORT, "ONNX export") or _missing("onnxruntime", EXPORT, "Exporting the student")
        if missing is None:
            try:
                result["exports"] = export_student(
                    student,
                    data,
                    out / EXPORT_DIR,
                    mean=mean,
                    std=std,
                    class_names=class_names,
                    batch_sizes=batch_sizes,
                    overwrite=overwrite,
                    **timing,
                )
                export_dir = out / EXPORT_DIR
            except MissingExtraError as err:  # a submodule of the extra (e.g. onnxruntime.quantization)
                missing = str(err)
        export_note = None if missing is None else f"No exports written: {missing}"
    notes = [n for n in (plot_note, export_note) if n is not None]
    result["notes"] = notes
    paths = write_report(result, out, plots, overwrite=overwrite)
    if export_note is not None:  # report.md names a missing plots extra itself, not this one
        with open(paths["markdown"], "a") as md:
            md.write(f"- {export_note}\n\n")
    return {"result": result, "paths": paths, "export_dir": export_dir, "notes": notes}


def main_table(result: dict[str, Any]) -> str:
    """The report's main table (accuracy, parameters, FLOPs, latency, throughput, sizes, agreement, ECE)."""
    return "\n".join(table_lines(result))


def describe_files(report: dict[str, Any]) -> str:
    """Where :func:`run_report` wrote its files, and the notes about what it could not write, as text."""
    lines = [f"report:  {report['paths']['markdown']}", f"         {report['paths']['json']}"]
    figures = [p for key, p in report["paths"].items() if key not in REPORT_FILES]
    lines += [f"figure:  {p}" for p in figures]
    exports = report["result"].get("exports")
    if exports:
        files = [exports[k]["file"] for k in ("onnx", "onnx_fp16", "onnx_int8", "pt2") if k in exports]
        lines.append(f"exports: {report['export_dir']}{os.sep} ({', '.join(files)}, deploy.json)")
    lines += [f"note:    {n}" for n in report["notes"]]
    return "\n".join(lines)

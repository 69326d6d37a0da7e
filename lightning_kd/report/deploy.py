"""From a student to an edge-ready folder: ONNX (fp32, fp16, int8) and ``.pt2``, verified, with ``deploy.json``.

:func:`export_student` writes, into ``out_dir``::

    student.onnx        fp32, dynamic batch, verified against the eager model (atol)
    student.fp16.onnx   fp16 weights/compute, fp32 at the interface
    student.int8.onnx   int8 dynamic quantisation
    student.pt2         torch.export program, dynamic batch, verified (atol)
    deploy.json         input name/shape/dtype, normalisation, class names, output meaning, opset, exporter,
                        and every file with its sha256 and size

and returns every figure: each file's accuracy on ``data``, its max difference from the eager student, and its
ONNX Runtime latency at each batch size.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lightning_kd.report._extras import EXPORT, import_extra
from lightning_kd.report._files import ensure_writable, file_record
from lightning_kd.report.cost import cpu_model
from lightning_kd.report.export import (
    BATCH,
    convert_onnx_fp16,
    export_onnx,
    export_pt2,
    max_abs_difference,
    quantize_onnx_int8,
    verify_onnx,
    verify_pt2,
)
from lightning_kd.report.metrics import DataLike, accuracy, collect_logits, first_inputs
from lightning_kd.report.runtime import onnx_accuracy, onnx_latency, onnx_session, run_onnx

OUTPUT_MEANING = (
    "logits: unnormalised class scores, one per class in class_names order; softmax gives probabilities, "
    "argmax the predicted class"
)


def _floats(value: float | Sequence[float] | None) -> list[float] | None:
    return None if value is None else [float(v) for v in (value if isinstance(value, Sequence) else [value])]


def export_student(
    student: nn.Module,
    data: DataLike,
    out_dir: str | os.PathLike,
    *,
    example_input: Tensor | None = None,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    class_names: Sequence[str] | None = None,
    name: str = "student",
    opset: int | None = None,
    atol: float = 1e-4,
    verify_batch_sizes: Sequence[int] = (1, 16),
    batch_sizes: Sequence[int] = (1, 64),
    threads: int | None = None,
    fp16: bool = True,
    int8: bool = True,
    min_run_time: float = 0.1,
    max_run_time: float = 2.0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Export, verify and measure ``student`` into ``out_dir`` (see the module docstring for the files).

    Args:
        student: the trained student (any ``nn.Module`` returning ``(N, C)`` logits); never moved or changed.
        data: labelled evaluation data (see :data:`~lightning_kd.report.metrics.DataLike`).
        out_dir: folder for the files (created if missing).
        example_input: real inputs for export and verification; ``None``: the first batch of ``data``.
        mean: per-channel normalisation mean the model expects its inputs standardised with (for
            ``deploy.json``; e.g. the data module's ``mean``).
        std: per-channel normalisation std, likewise.
        class_names: one name per output, in order.
        name: stem of the file names.
        opset: ONNX opset; ``None``: the exporter's default.
        atol: largest accepted max absolute difference between an fp32 export and the eager student.
        verify_batch_sizes: batch sizes each export is run at (two or more prove the dynamic batch).
        batch_sizes: batch sizes ONNX Runtime latency is measured at.
        threads: ONNX Runtime intra-op threads; ``None``: ``torch.get_num_threads()``.
        fp16: also write the fp16 variant.
        int8: also write the int8 variant.
        min_run_time: least seconds per latency measurement.
        max_run_time: most seconds per latency measurement.
        overwrite: replace existing files; without it an existing target raises :class:`FileExistsError`
            before anything is written.

    Returns:
        ``eager`` (``top1``, ``top5`` of the student on ``data``), ``threads``, ``deploy_json`` (its path),
        and per file ``onnx``, ``pt2``, ``onnx_fp16``, ``onnx_int8``: ``path``, ``file``, ``bytes``,
        ``sha256``, ``max_abs_diff`` (and per batch size); ONNX files add ``top1``, ``top5`` and ``latency``
        (records as :func:`~lightning_kd.report.cost.measure_latency`'s); ``onnx`` adds ``exporter``,
        ``fallback_reason`` and ``opset``.

    Raises:
        ExportMismatchError: an fp32 export differs from the student by more than ``atol``.
        FileExistsError: a target exists and ``overwrite`` is false.
        MissingExtraError: onnx/onnxruntime are not installed (``pip install "lightning-kd[export]"``).
    """
    import_extra("onnxruntime", EXPORT, "Exporting a student")
    out = Path(out_dir)
    paths = {"onnx": out / f"{name}.onnx", "pt2": out / f"{name}.pt2"}
    if fp16:
        paths["onnx_fp16"] = out / f"{name}.fp16.onnx"
    if int8:
        paths["onnx_int8"] = out / f"{name}.int8.onnx"
    sidecar = out / "deploy.json"
    ensure_writable([*paths.values(), sidecar], overwrite)
    out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads() if threads is None else threads
    student = cpu_model(student)
    inputs = (first_inputs(data) if example_input is None else example_input).detach().cpu()

    logits, targets = collect_logits(student, data)
    if targets is None:
        raise ValueError("export_student needs labelled data: give (inputs, targets) batches.")
    num_classes = logits.shape[1]
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class_names for a model with {num_classes} outputs: give one per class.")
    result: dict[str, Any] = {
        "eager": {
            "top1": accuracy(logits, targets, 1),
            "top5": accuracy(logits, targets, 5) if num_classes > 5 else None,
        },
        "threads": threads,
    }
    check = {"batch_sizes": verify_batch_sizes}
    onnx = export_onnx(student, inputs, paths["onnx"], opset=opset, overwrite=overwrite)
    result["onnx"] = {**onnx, **verify_onnx(paths["onnx"], student, inputs, atol=atol, threads=threads, **check)}
    result["pt2"] = {**export_pt2(student, inputs, paths["pt2"], overwrite=overwrite)}
    result["pt2"].update(verify_pt2(paths["pt2"], student, inputs, atol=atol, **check))
    if fp16:
        result["onnx_fp16"] = convert_onnx_fp16(paths["onnx"], paths["onnx_fp16"], overwrite=overwrite)
    if int8:
        result["onnx_int8"] = quantize_onnx_int8(paths["onnx"], paths["onnx_int8"], overwrite=overwrite)
    timing = {"threads": threads, "min_run_time": min_run_time, "max_run_time": max_run_time}
    for key in ("onnx", "onnx_fp16", "onnx_int8"):
        if key not in result:
            continue
        session = onnx_session(paths[key], threads)
        if key != "onnx":  # lossy variants: measured, not held to atol
            diffs = max_abs_difference(student, lambda x, s=session: run_onnx(s, x), inputs, verify_batch_sizes)
            result[key]["max_abs_diff"] = max(diffs.values())
            result[key]["max_abs_diff_per_batch"] = {str(b): d for b, d in diffs.items()}
        result[key].update(onnx_accuracy(session, data))
        result[key]["latency"] = onnx_latency(session, inputs, batch_sizes, **timing)
    for key, path in paths.items():
        result[key].update(file_record(path))

    deploy = {
        "format": "lightning-kd deploy sidecar",
        "version": 1,
        "input": {
            "name": onnx["input_name"],
            "shape": [BATCH, *inputs.shape[1:]],
            "dynamic_axes": {"0": BATCH},
            "dtype": str(inputs.dtype).removeprefix("torch."),
        },
        "normalization": {
            "mean": _floats(mean),
            "std": _floats(std),
            "note": "inputs are standardised per channel, x = (x - mean) / std, before they enter the model",
        },
        "output": {
            "name": onnx["output_name"],
            "shape": [BATCH, num_classes],
            "dtype": "float32",
            "meaning": OUTPUT_MEANING,
        },
        "class_names": None if class_names is None else list(class_names),
        "opset": onnx["opset"],
        "exporter": onnx["exporter"],
        "torch_version": torch.__version__,
        "files": {
            key: {
                **{k: result[key][k] for k in ("file", "bytes", "sha256")},
                **{k: result[key][k] for k in ("top1", "top5", "max_abs_diff") if k in result[key]},
            }
            for key in paths
        },
    }
    sidecar.write_text(json.dumps(deploy, indent=2) + "\n")
    result["deploy_json"] = os.fspath(sidecar)
    return result

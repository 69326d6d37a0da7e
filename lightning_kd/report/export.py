"""Export a student for deployment and prove each file computes what the eager model computes.

* ONNX through :func:`torch.onnx.export`: the dynamo exporter (``dynamo=True``, built on ``torch.export``) is
  tried first; if it raises, the TorchScript exporter (``dynamo=False``) is used and the reason recorded.
* ``.pt2`` through :func:`torch.export.export` + :func:`torch.export.save`.
* Variants of the ONNX file: fp16 weights and compute (ONNX Runtime's float16 converter, fp32 at the
  interface) and int8 dynamic quantisation (:func:`onnxruntime.quantization.quantize_dynamic`).

Every export has a dynamic batch dimension, and verification runs it at two batch sizes on real inputs.
onnx/onnxscript/onnxruntime come with the ``lightning-kd[export]`` extra.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lightning_kd.report._extras import EXPORT, import_extra
from lightning_kd.report._files import ensure_writable
from lightning_kd.report.cost import cpu_model, tile_batch
from lightning_kd.report.metrics import eval_mode
from lightning_kd.report.runtime import onnx_session, run_onnx

BATCH = "batch"  # name of the dynamic batch dimension in every export


class ExportMismatchError(RuntimeError):
    """An exported file's outputs differ from the eager model's by more than the tolerance."""


def _export_example(example_input: Tensor) -> Tensor:
    # batch 2: an exporter traced at batch 1 may specialise the batch dimension to the constant 1
    return tile_batch(example_input.detach().cpu(), 2)


def export_onnx(
    model: nn.Module,
    example_input: Tensor,
    path: str | os.PathLike,
    *,
    opset: int | None = None,
    input_name: str = "input",
    output_name: str = "logits",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Export ``model`` (a CPU copy, in eval mode) to one self-contained ONNX file with a dynamic batch.

    Args:
        model: the classifier.
        example_input: ``(N, ...)`` real inputs; fixes every dimension but the batch.
        path: the ``.onnx`` file to write.
        opset: ONNX opset; ``None``: the exporter's default.
        input_name: name of the graph input.
        output_name: name of the graph output (the logits).
        overwrite: replace an existing file.

    Returns:
        ``path``, ``exporter`` (``"dynamo"`` or ``"torchscript"``), ``fallback_reason`` (why dynamo failed, or
        ``None``), ``opset``, ``input_name``, ``output_name``.
    """
    onnx = import_extra("onnx", EXPORT, "ONNX export")
    ensure_writable([path], overwrite)
    model, x = cpu_model(model), _export_example(example_input)
    names = {"input_names": [input_name], "output_names": [output_name], "opset_version": opset}
    exporter, reason = "dynamo", None
    with eval_mode(model):
        try:
            import_extra("onnxscript", EXPORT, "The dynamo ONNX exporter")
            dynamic_shapes = ({0: torch.export.Dim(BATCH)},)
            torch.onnx.export(
                model,
                (x,),
                path,
                dynamo=True,
                external_data=False,
                verbose=False,
                dynamic_shapes=dynamic_shapes,
                **names,
            )
        except Exception as err:  # any exporter failure: the TorchScript exporter may still succeed
            exporter, reason = "torchscript", f"{type(err).__name__}: {str(err).strip()[:500]}"
            warnings.warn(f"dynamo ONNX export failed ({reason}); using the TorchScript exporter.", stacklevel=2)
            dynamic_axes = {input_name: {0: BATCH}, output_name: {0: BATCH}}
            torch.onnx.export(model, (x,), path, dynamo=False, dynamic_axes=dynamic_axes, **names)
    proto = onnx.load(os.fspath(path), load_external_data=False)
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    return {
        "path": os.fspath(path),
        "exporter": exporter,
        "fallback_reason": reason,
        "opset": opset,
        "input_name": input_name,
        "output_name": output_name,
    }


def export_pt2(
    model: nn.Module, example_input: Tensor, path: str | os.PathLike, *, overwrite: bool = False
) -> dict[str, Any]:
    """Export ``model`` (a CPU copy, in eval mode) with :func:`torch.export.export` and a dynamic batch dim.

    Load it with ``torch.export.load(path).module()``.

    Returns:
        ``path``.
    """
    ensure_writable([path], overwrite)
    model, x = cpu_model(model), _export_example(example_input)
    with eval_mode(model):
        program = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim(BATCH)},))
    torch.export.save(program, path)
    return {"path": os.fspath(path)}


def max_abs_difference(
    model: nn.Module, run: Callable[[Tensor], Tensor], inputs: Tensor, batch_sizes: Sequence[int]
) -> dict[int, float]:
    """``{batch size: max |run(x) − model(x)|}`` on batches of real ``inputs`` (repeated when too few)."""
    model = cpu_model(model)
    diffs = {}
    with eval_mode(model), torch.no_grad():
        for batch_size in batch_sizes:
            x = tile_batch(inputs.detach().cpu(), batch_size)
            expected = model(x).float()
            got = run(x)
            if got.shape != expected.shape:
                raise ExportMismatchError(f"batch {batch_size}: output {tuple(got.shape)} != {tuple(expected.shape)}")
            diffs[batch_size] = (got.float() - expected).abs().max().item()
    return diffs


def _verify(path: str | os.PathLike, diffs: dict[int, float], atol: float | None) -> dict[str, Any]:
    worst = max(diffs.values())
    if atol is not None and not worst <= atol:  # `not <=` also catches NaN
        raise ExportMismatchError(
            f"{os.fspath(path)}: outputs differ from the eager model by max |diff| = {worst:.3g} > atol={atol:g} "
            f"(per batch size: {diffs}). The export is wrong or lossy; check the model for train-mode or "
            "data-dependent behaviour, or raise atol if the difference is expected."
        )
    return {"max_abs_diff": worst, "max_abs_diff_per_batch": {str(b): d for b, d in diffs.items()}}


def verify_onnx(
    path: str | os.PathLike,
    model: nn.Module,
    inputs: Tensor,
    *,
    batch_sizes: Sequence[int] = (1, 16),
    atol: float | None = 1e-4,
    threads: int | None = None,
) -> dict[str, Any]:
    """Run the ONNX file in ONNX Runtime (CPU) at each batch size and compare with the eager ``model``.

    Args:
        path: the ``.onnx`` file.
        model: the eager model it was exported from.
        inputs: ``(N, ...)`` real inputs.
        batch_sizes: at least two sizes prove the batch dimension is dynamic.
        atol: largest accepted max absolute difference; ``None``: only measure.
        threads: ONNX Runtime intra-op threads.

    Raises:
        ExportMismatchError: the difference exceeds ``atol`` (the message names the file and both numbers).

    Returns:
        ``max_abs_diff`` and ``max_abs_diff_per_batch``.
    """
    session = onnx_session(path, threads)
    return _verify(path, max_abs_difference(model, lambda x: run_onnx(session, x), inputs, batch_sizes), atol)


def verify_pt2(
    path: str | os.PathLike,
    model: nn.Module,
    inputs: Tensor,
    *,
    batch_sizes: Sequence[int] = (1, 16),
    atol: float | None = 1e-4,
) -> dict[str, Any]:
    """Load the ``.pt2`` file (``torch.export.load(path).module()``) and compare it with ``model`` like
    :func:`verify_onnx`."""
    loaded = torch.export.load(os.fspath(path)).module()
    return _verify(path, max_abs_difference(model, loaded, inputs, batch_sizes), atol)


def convert_onnx_fp16(src: str | os.PathLike, dst: str | os.PathLike, *, overwrite: bool = False) -> dict[str, Any]:
    """fp16 copy of an fp32 ONNX file: weights and compute in fp16, inputs and outputs still fp32.

    ONNX Runtime's CPU provider runs the ops it has no fp16 kernel for in fp32 (casts inserted at load), so the
    file halves in size everywhere but is faster only on hardware with fp16 kernels.
    """
    onnx = import_extra("onnx", EXPORT, "fp16 ONNX conversion")
    float16 = import_extra("onnxruntime.transformers.float16", EXPORT, "fp16 ONNX conversion")
    ensure_writable([dst], overwrite)
    onnx.save(float16.convert_float_to_float16(onnx.load(os.fspath(src)), keep_io_types=True), os.fspath(dst))
    return {"path": os.fspath(dst), "method": "onnxruntime.transformers.float16, keep_io_types=True"}


def quantize_onnx_int8(src: str | os.PathLike, dst: str | os.PathLike, *, overwrite: bool = False) -> dict[str, Any]:
    """int8 dynamic quantisation of an fp32 ONNX file: int8 weights, activations quantised per call.

    The activations' range is measured on each call, so a sample's logits depend slightly on the other
    samples of its batch; accuracies of the int8 file are therefore those of the batches it was given.
    ONNX Runtime's pre-processing (shape inference, graph optimisation) runs first, as its docs advise; if it
    fails, the original graph is quantised and the reason recorded.
    """
    quantization = import_extra("onnxruntime.quantization", EXPORT, "int8 ONNX quantisation")
    ensure_writable([dst], overwrite)
    reason = None
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp, "preprocessed.onnx")
        try:
            quantization.quant_pre_process(os.fspath(src), os.fspath(source))
        except Exception as err:  # pre-processing is an optimisation: quantise the original graph instead
            source, reason = Path(src), f"{type(err).__name__}: {str(err).strip()[:300]}"
        quantization.quantize_dynamic(os.fspath(source), os.fspath(dst), weight_type=quantization.QuantType.QInt8)
    return {
        "path": os.fspath(dst),
        "method": "onnxruntime.quantization.quantize_dynamic, weight_type=QInt8",
        "preprocess_failed": reason,
    }

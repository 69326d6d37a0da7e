"""Run exported ONNX files with ONNX Runtime on the CPU: logits over data, accuracy, latency.

ONNX Runtime comes with the ``lightning-kd[export]`` extra and is imported only when a function here runs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.benchmark import Timer

from lightning_kd.report._extras import EXPORT, import_extra
from lightning_kd.report.cost import tile_batch, timing_record
from lightning_kd.report.metrics import DataLike, accuracy, iter_batches


def onnx_session(path: str | os.PathLike, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU ``InferenceSession`` of ``path`` with ``threads`` intra-op threads.

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads; ``None``: ``torch.get_num_threads()``, the count torch is timed with.
    """
    ort = import_extra("onnxruntime", EXPORT, "Running an ONNX export")
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads() if threads is None else threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: this session's warnings, not the process's logging
    return ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])


def run_onnx(session: Any, inputs: Tensor) -> Tensor:
    """Logits ``(N, C)`` fp32 of an ONNX session on one batch of ``inputs``."""
    x = inputs.detach().cpu()
    feed = {session.get_inputs()[0].name: (x.float() if x.is_floating_point() else x).numpy()}
    return torch.from_numpy(np.asarray(session.run(None, feed)[0], dtype=np.float32))


def onnx_logits(session: Any, data: DataLike) -> tuple[Tensor, Tensor | None]:
    """``(logits (N, C) fp32, targets (N,) or None)`` of an ONNX session over ``data``, batch by batch."""
    logits, targets = [], []
    for inputs, y in iter_batches(data):
        logits.append(run_onnx(session, inputs))
        if y is not None:
            targets.append(y.long().cpu())
    return torch.cat(logits), torch.cat(targets) if targets else None


def onnx_accuracy(session: Any, data: DataLike) -> dict[str, float | None]:
    """Top-1 and top-5 (``None`` unless C > 5) accuracy of an ONNX session over labelled ``data``."""
    logits, targets = onnx_logits(session, data)
    if targets is None:
        raise ValueError("accuracy needs targets: give (inputs, targets) batches.")
    return {
        "top1": accuracy(logits, targets, 1),
        "top5": accuracy(logits, targets, 5) if logits.shape[1] > 5 else None,
    }


def onnx_latency(
    session: Any,
    example_input: Tensor,
    batch_sizes: Sequence[int],
    *,
    threads: int,
    min_run_time: float = 0.1,
    max_run_time: float = 2.0,
) -> dict[str, dict[str, float | int]]:
    """Median latency of ``session.run`` per batch size, timed like :func:`~lightning_kd.report.cost.measure_latency`.

    Args:
        session: from :func:`onnx_session`, made with the same ``threads``.
        example_input: ``(N, ...)`` real inputs, repeated to fill each batch.
        batch_sizes: batch sizes to time.
        threads: the session's intra-op threads (recorded with the figures).
        min_run_time: least seconds per batch size.
        max_run_time: most seconds per batch size.

    Returns:
        ``{str(batch size): record}``, records as :func:`~lightning_kd.report.cost.measure_latency`'s.
    """
    records = {}
    name = session.get_inputs()[0].name
    for batch_size in batch_sizes:
        x = tile_batch(example_input.cpu(), batch_size)
        feed = {name: (x.float() if x.is_floating_point() else x).numpy()}
        timer = Timer(stmt="session.run(None, feed)", globals={"session": session, "feed": feed})
        m = timer.adaptive_autorange(min_run_time=min_run_time, max_run_time=max_run_time)
        records[str(batch_size)] = timing_record(m.median, m.iqr, batch_size, threads)
    return records

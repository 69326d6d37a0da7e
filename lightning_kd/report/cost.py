"""What a model costs: parameters, FLOPs per sample, CPU latency and throughput, file sizes.

FLOPs are counted by :class:`torch.utils.flop_counter.FlopCounterMode` on one forward pass at batch 1, as torch
counts them: a matmul ``(M, K) @ (K, N)`` is ``2·M·N·K`` (one multiply and one add per term), convolutions
likewise; element-wise ops (activations, batch-norm in eval, pooling, bias adds) are not counted.

Latency is measured on the CPU with :class:`torch.utils.benchmark.Timer` (``adaptive_autorange``: blocks of
calls are timed until the spread of the per-call times is below 10 % of their median, at least ``min_run_time``
and at most ``max_run_time`` seconds; the median per call is reported) with ``threads`` torch threads — the
figures depend on it, so it is reported with them.
"""

from __future__ import annotations

import copy
import os

import torch
from torch import Tensor, nn
from torch.utils.benchmark import Timer
from torch.utils.flop_counter import FlopCounterMode

from lightning_kd.report.metrics import eval_mode, model_device

FLOPS_CONVENTION = "torch.utils.flop_counter: 2*M*N*K per matmul/conv (multiply + add), element-wise ops not counted"


def tile_batch(example: Tensor, batch_size: int) -> Tensor:
    """A ``(batch_size, ...)`` batch made of the samples of ``example`` repeated in order."""
    if len(example) == 0:
        raise ValueError("the example input is empty: give at least one sample.")
    reps = -(-batch_size // len(example))  # ceil
    return example.repeat(reps, *([1] * (example.dim() - 1)))[:batch_size].contiguous()


def cpu_model(model: nn.Module) -> nn.Module:
    """``model`` itself when it lives on the CPU, else a CPU copy (the caller's model is never moved)."""
    return model if model_device(model).type == "cpu" else copy.deepcopy(model).cpu()


def flops_per_sample(model: nn.Module, example_input: Tensor) -> int:
    """FLOPs of one forward pass at batch 1 (see the module docstring for what is counted).

    Args:
        model: the model; put in eval mode for the count, its flags restored.
        example_input: ``(N, ...)`` real inputs; the first sample is used.

    Example:
        >>> flops_per_sample(nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)), torch.randn(1, 64))
        4736
    """
    x = example_input[:1].to(model_device(model))
    with eval_mode(model), torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


def measure_latency(
    model: nn.Module,
    example_input: Tensor,
    batch_size: int,
    *,
    threads: int | None = None,
    min_run_time: float = 0.1,
    max_run_time: float = 2.0,
) -> dict[str, float | int]:
    """CPU latency of one forward pass (eval, ``no_grad``) on a batch of ``batch_size`` real samples.

    A model that lives on another device is timed on a CPU copy; the model itself is not moved.

    Args:
        model: the model.
        example_input: ``(N, ...)`` real inputs, repeated to fill the batch.
        batch_size: samples per call.
        threads: torch intra-op threads while timing; ``None``: ``torch.get_num_threads()``.
        min_run_time: least seconds spent measuring.
        max_run_time: most seconds spent measuring, even if the times are still spread.

    Returns:
        ``batch_size``, ``median_ms`` per call, ``iqr_ms``, ``samples_per_s`` (= batch / median), ``threads``.
    """
    threads = torch.get_num_threads() if threads is None else threads
    if threads < 1 or batch_size < 1:
        raise ValueError(f"threads={threads} and batch_size={batch_size} must both be >= 1.")
    model = cpu_model(model)
    x = tile_batch(example_input.cpu(), batch_size)
    with eval_mode(model):
        timer = Timer(stmt="run(x)", globals={"run": torch.no_grad()(model), "x": x}, num_threads=threads)
        m = timer.adaptive_autorange(min_run_time=min_run_time, max_run_time=max_run_time)
    return timing_record(m.median, m.iqr, batch_size, threads)


def timing_record(median_s: float, iqr_s: float, batch_size: int, threads: int) -> dict[str, float | int]:
    """The latency record of :func:`measure_latency` from a median and IQR per call in seconds."""
    return {
        "batch_size": batch_size,
        "median_ms": median_s * 1e3,
        "iqr_ms": iqr_s * 1e3,
        "samples_per_s": batch_size / median_s,
        "threads": threads,
    }


def file_size(path: str | os.PathLike | None) -> int | None:
    """Size of the file at ``path`` in bytes; ``None`` when no path is given."""
    return None if path is None else os.path.getsize(path)

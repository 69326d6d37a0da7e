"""Cheap fingerprints of training data: what a teacher cache and a resumed run check they are given again."""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch import Tensor


def dataset_fingerprint(images: Tensor, labels: Tensor, rows: int = 16) -> str:
    """``N`` plus sha256 of ``rows`` evenly spaced samples (pixels as stored, labels): cheap, and it catches
    another split, order, normalisation or data set."""
    n = len(labels)
    pick = torch.linspace(0, n - 1, min(rows, n)).round().long() if n else torch.zeros(0, dtype=torch.long)
    h = hashlib.sha256(f"{n}|{tuple(images.shape)}|{images.dtype}|".encode())
    h.update(tensor_bytes(images[pick]))
    h.update(tensor_bytes(labels[pick].to(torch.int64)))
    return f"{n}:{h.hexdigest()}"


def tensor_bytes(t: Tensor) -> bytes:
    """The raw bytes of ``t`` in row-major order, whatever its dtype (bf16 included) or memory format."""
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def tokens_fingerprint(ids: np.ndarray) -> str:
    """``shape`` plus sha256 of the whole token array (a few MB per million tokens: cheap, and exact)."""
    h = hashlib.sha256(f"{tuple(ids.shape)}|".encode())
    h.update(np.ascontiguousarray(ids.astype(np.int64)).tobytes())
    return f"{tuple(ids.shape)}:{h.hexdigest()}"

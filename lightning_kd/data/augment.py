"""Batched, per-sample augmentation that runs wherever the batch is (GPU included). Pure torch.

One gather per batch instead of per-sample Python: the reference experiment's "random crop with zero
padding + horizontal flip, per sample, on the GPU" (BENCHMARKS.md).

Two ways to pick each sample's crop offset and flip:

- :func:`random_crop_flip` draws them from a random generator (the global one by default);
- :func:`crop_flip_params` derives them from a counter-based hash of ``(seed, epoch, sample index)``, so the
  view of sample ``i`` in epoch ``e`` is a pure function of those three numbers, whatever the batch it is
  in, its position there, or the device. An offline teacher cache (:mod:`lightning_kd.cache`) replays it.

Both end in :func:`apply_crop_flip`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_MASK64 = (1 << 64) - 1


def _int64(value: int) -> int:
    """A Python int reduced mod 2**64 and read as a signed int64 (two's complement)."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


# SplitMix64 (Steele, Lea & Flood, 2014; as in java.util.SplittableRandom), constants as signed int64.
_GAMMA = _int64(0x9E3779B97F4A7C15)
_MUL1 = _int64(0xBF58476D1CE4E5B9)
_MUL2 = _int64(0x94D049BB133111EB)


def _shr(x: Tensor, bits: int) -> Tensor:
    """Logical right shift of int64 ``x`` (torch's ``>>`` is arithmetic: it copies the sign bit)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _mix(x: Tensor) -> Tensor:
    """One SplitMix64 step on int64 ``x``: add the golden gamma, then the finaliser. Integer multiply and
    add wrap mod 2**64 in two's complement on CPU and CUDA alike, so the result is the same everywhere."""
    z = x + _GAMMA
    z = (z ^ _shr(z, 30)) * _MUL1
    z = (z ^ _shr(z, 27)) * _MUL2
    return z ^ _shr(z, 31)


def sample_hash(seed: int, epoch: int, indices: Tensor) -> Tensor:
    """64 random bits per sample, a pure function of ``(seed, epoch, index)``: ``mix(mix(mix(seed) ^ epoch) ^ i)``.

    Args:
        seed: any Python int (reduced mod 2**64).
        epoch: any Python int.
        indices: ``(N,)`` integer sample indices.

    Returns:
        ``(N,)`` int64 on ``indices.device``.
    """
    dev = indices.device
    key = _mix(torch.tensor(_int64(seed), dtype=torch.int64, device=dev))
    key = _mix(key ^ _int64(epoch))
    return _mix(indices.to(torch.int64) ^ key)


def crop_flip_params(seed: int, epoch: int, indices: Tensor, padding: int, flip: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Crop offsets and flips for :func:`apply_crop_flip`, replayable from ``(seed, epoch, index)``.

    Bits 0–15 of :func:`sample_hash` pick ``dy``, bits 16–31 ``dx`` (each uniform on ``0..2·padding`` up
    to a modulo bias below 2e-4), bit 32 the flip.

    Args:
        seed: the augmentation seed.
        epoch: the training epoch (a new view of every sample each epoch).
        indices: ``(N,)`` sample indices in the training set.
        padding: crop padding; offsets are in ``[0, 2·padding]``.
        flip: whether flips happen at all.

    Returns:
        ``dy``, ``dx``: ``(N,)`` int64; ``flipped``: ``(N,)`` bool, all on ``indices.device``.

    Example:
        >>> dy, dx, f = crop_flip_params(0, 3, torch.tensor([5, 1]), padding=2, flip=True)
        >>> torch.equal(dy[:1], crop_flip_params(0, 3, torch.tensor([5]), 2, True)[0])
        True
    """
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}.")
    h = sample_hash(seed, epoch, indices)
    span = 2 * padding + 1
    dy = (h & 0xFFFF) % span
    dx = (_shr(h, 16) & 0xFFFF) % span
    flipped = (_shr(h, 32) & 1).bool() if flip else torch.zeros_like(h, dtype=torch.bool)
    return dy, dx, flipped


def apply_crop_flip(images: Tensor, dy: Tensor, dx: Tensor, flipped: Tensor, padding: int, fill: float = 0.0) -> Tensor:
    """Pad by ``padding`` with ``fill``, crop each sample at ``(dy, dx)`` back to the input size, flip it
    horizontally where ``flipped``. One gather for the whole batch.

    Args:
        images: ``(N, C, H, W)``.
        dy: ``(N,)`` row offsets into the padded image, in ``[0, 2·padding]``.
        dx: ``(N,)`` column offsets, same range.
        flipped: ``(N,)`` bool: mirror the crop.
        padding: pixels added on every side before cropping.
        fill: value of the padded border.

    Returns:
        ``(N, C, H, W)``, same dtype and device.
    """
    n, c, h, w = images.shape
    dev = images.device
    padded = F.pad(images, (padding,) * 4, value=fill) if padding else images  # (N, C, H+2p, W+2p)
    rows = dy[:, None] + torch.arange(h, device=dev)  # (N, H)
    cols = torch.arange(w, device=dev).expand(n, w)  # (N, W)
    cols = torch.where(flipped[:, None], cols.flip(1), cols)
    cols = dx[:, None] + cols
    b = torch.arange(n, device=dev)[:, None, None, None]
    ch = torch.arange(c, device=dev)[None, :, None, None]
    return padded[b, ch, rows[:, None, :, None], cols[:, None, None, :]]


def random_crop_flip(
    images: Tensor,
    padding: int = 2,
    flip: bool = True,
    fill: float = 0.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Pad by ``padding`` with ``fill``, crop back to the input size at a random offset, randomly flip.

    Each sample gets its own offset and flip.

    Args:
        images: ``(N, C, H, W)``.
        padding: pixels added on every side before cropping; ``0`` disables the crop.
        flip: flip each sample horizontally with probability 1/2.
        fill: value of the padded border (for normalised data: the normalised value of a black pixel).
        generator: random generator on ``images.device`` (``None``: the global one).

    Returns:
        ``(N, C, H, W)``, same dtype and device.

    Example:
        >>> random_crop_flip(torch.zeros(4, 1, 28, 28)).shape
        torch.Size([4, 1, 28, 28])
    """
    n, dev = images.shape[0], images.device
    dy = torch.randint(0, 2 * padding + 1, (n,), device=dev, generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), device=dev, generator=generator)
    if flip:
        flipped = torch.rand(n, device=dev, generator=generator) < 0.5
    else:
        flipped = torch.zeros(n, dtype=torch.bool, device=dev)
    return apply_crop_flip(images, dy, dx, flipped, padding, fill)

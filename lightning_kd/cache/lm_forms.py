"""What an LM teacher store keeps of the teacher's logits per position: its top ``k`` log-probabilities, or ``k``
tokens drawn from its distribution and their log-probabilities (:mod:`lightning_kd.cache.lm_store`)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def topk_logprobs(logits: Tensor, k: int, temperature: float = 1.0) -> tuple[Tensor, Tensor]:
    """The ``k`` largest of ``log_softmax(logits / T)`` over the last dim, descending, and their indices.

    Args:
        logits: ``(..., V)``.
        k: ``1 <= k <= V``.
        temperature: ``T > 0``.
    """
    v = logits.shape[-1]
    if not 1 <= k <= v:
        raise ValueError(f"k must be in [1, vocab size {v}], got {k}.")
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    return logp.topk(k, dim=-1)


def sampled_logprobs(
    logits: Tensor, draws: int, temperature: float, seeds: Tensor | list[int]
) -> tuple[Tensor, Tensor]:
    """``draws`` tokens per position drawn with replacement from ``softmax(logits / T)``, and their log-probabilities:
    ``(logprobs, ids)`` ``(B, L, draws)``. Row ``b`` draws from a generator seeded with ``seeds[b]`` (the build
    uses the store's seed and the sequence's index), so the same sequence gets the same draws in any batch.

    Args:
        logits: ``(B, L, V)``.
        draws: ``>= 1``.
        temperature: ``T > 0``.
        seeds: ``B`` integer seeds.
    """
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}; 32 costs what a top-32 store does.")
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    ids = torch.empty(*logp.shape[:-1], draws, dtype=torch.long, device=logp.device)
    for b, seed in enumerate(torch.as_tensor(seeds).tolist()):
        generator = torch.Generator(device=logp.device).manual_seed(int(seed))
        ids[b] = torch.multinomial(logp[b].exp(), draws, replacement=True, generator=generator)
    return logp.gather(-1, ids), ids


def draw_seed(store_seed: int, index: int) -> int:
    """The generator seed of sequence ``index``'s draws in a sampled store built with ``store_seed``: both mixed into
    32 bits (torch's CPU generator keeps only the low 32 bits of a seed)."""
    return int(np.random.SeedSequence([int(store_seed), int(index)]).generate_state(1)[0])

"""How faithful an LM teacher store is to the teacher: what ``lightning-kd cache-lm`` prints and writes into the
store's ``meta.json`` (``fidelity``).

- ``bytes_per_token``: what the store costs on disk per training token.
- ``captured_mass``: the teacher's probability mass on the distinct stored tokens, averaged over every stored
  position (top-``k``: ``Σ_topk p_t``; sampled: the mass of the distinct tokens drawn).
- ``held_out``: on ``positions`` positions of held-out sequences (the data module's validation split, the teacher
  run live), the distribution the store stands for, ``q``, against the teacher's full ``p``: ``kl_stored_to_full``
  ``= KL(q ‖ p)`` and ``tv = ½ Σ |q − p|``. For top-``k`` ``q`` is the stored tokens with the rest of the mass
  spread evenly (:func:`~lightning_kd.losses.token.decode_lm_topk`, the store's only full-vocabulary reading);
  for a sampled store ``q`` is the draws' empirical distribution (what the forward-KL estimate's gradient pulls
  the student to, in each step: ``tv`` is half the L1 error of that target). Absent when the teacher's full
  distribution is not available (a store filled from a server).
- ``build_seconds``: the build's wall time (the last session's part of it, when a build was resumed).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from lightning_kd.losses.token.sparse import decode_lm_topk


def distinct_mass(logprobs: Tensor, ids: Tensor) -> Tensor:
    """``(...,)`` the probability mass of the distinct ids among the ``k`` stored per position (a token drawn twice
    counts once)."""
    order = ids.argsort(dim=-1)
    sorted_ids, sorted_lp = ids.gather(-1, order), logprobs.float().gather(-1, order)
    first = torch.ones_like(sorted_ids, dtype=torch.bool)
    first[..., 1:] = sorted_ids[..., 1:] != sorted_ids[..., :-1]
    return (sorted_lp.exp() * first).sum(-1)


def stored_distribution(logprobs: Tensor, ids: Tensor, vocab_size: int, kind: str) -> Tensor:
    """``(..., V)`` probabilities ``q`` the store stands for (module docstring)."""
    if kind == "sampled":
        q = torch.zeros(*ids.shape[:-1], vocab_size, dtype=torch.float32, device=ids.device)
        return q.scatter_add_(-1, ids.long(), torch.full(ids.shape, 1.0 / ids.shape[-1], device=ids.device))
    return torch.softmax(decode_lm_topk(logprobs, ids, vocab_size), dim=-1)


def held_out_fidelity(teacher_logp: Tensor, logprobs: Tensor, ids: Tensor, kind: str) -> dict[str, float]:
    """``kl_stored_to_full`` and ``tv`` (module docstring), averaged over positions, of the stored form
    ``(logprobs, ids)`` ``(..., k)`` of the teacher's full log-probabilities ``teacher_logp`` ``(..., V)``."""
    p_log = teacher_logp.float()
    q = stored_distribution(logprobs, ids, p_log.shape[-1], kind)
    kl = torch.where(q > 0, q * (q.clamp_min(1e-30).log() - p_log), torch.zeros_like(q)).sum(-1)
    tv = 0.5 * (q - p_log.exp()).abs().sum(-1)
    return {"kl_stored_to_full": float(kl.mean()), "tv": float(tv.mean()), "positions": int(kl.numel())}


def captured_mass(logprobs: Any, ids: Any, rows_per_chunk: int = 256) -> float:
    """The mean of :func:`distinct_mass` over every position of a store's ``(N, L, k)`` arrays (memory-mapped ones
    are read a chunk of sequences at a time)."""
    total, count = 0.0, 0
    for start in range(0, len(ids), rows_per_chunk):
        lp = torch.from_numpy(np.asarray(logprobs[start : start + rows_per_chunk], dtype=np.float32))
        mass = distinct_mass(lp, torch.from_numpy(np.asarray(ids[start : start + rows_per_chunk])))
        total, count = total + float(mass.sum()), count + mass.numel()
    return total / max(count, 1)


def fidelity_report(
    bytes_per_token: float, mass: float, seconds: float, held_out: dict[str, float] | None
) -> dict[str, Any]:
    """The ``fidelity`` entry of ``meta.json``."""
    out: dict[str, Any] = {"bytes_per_token": bytes_per_token, "captured_mass": round(mass, 6)}
    if held_out is not None:
        out["held_out"] = held_out
    out["build_seconds"] = round(seconds, 2)
    return out


def describe(fidelity: dict[str, Any]) -> str:
    """One line for the build's printout."""
    parts = [f"{fidelity['bytes_per_token']:.0f} bytes/token"]
    parts.append(f"captured teacher mass {fidelity['captured_mass']:.3f} (mean over the stored positions)")
    held = fidelity.get("held_out")
    if held:
        parts.append(
            f"held-out KL(stored || full) {held['kl_stored_to_full']:.4f} nats, TV {held['tv']:.4f} "
            f"({held['positions']} positions)"
        )
    else:
        parts.append("held-out KL: not measured (no full teacher distribution)")
    parts.append(f"build {fidelity['build_seconds']:.1f} s")
    return "; ".join(parts)

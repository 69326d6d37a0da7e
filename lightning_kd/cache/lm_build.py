"""Build an LM teacher store: run the teacher once over the training sequences and keep, per token, its top-``k``
log-probabilities (``kind="topk"``) or ``k`` tokens drawn from it (``kind="sampled"``). From a recipe:
``lightning-kd cache-lm`` (:mod:`lightning_kd.apps.cache_lm`); from an inference server:
:mod:`lightning_kd.cache.lm_server`."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lightning_kd.cache.lm_fidelity import captured_mass, fidelity_report, held_out_fidelity
from lightning_kd.cache.lm_keys import training_tokens
from lightning_kd.cache.lm_store import (
    LMTeacherStore,
    StoreDtype,
    StoreKind,
    draw_seed,
    sampled_logprobs,
    topk_logprobs,
)
from lightning_kd.core.digest import weights_fingerprint
from lightning_kd.core.teacher import output_logits
from lightning_kd.data.fingerprint import tokens_fingerprint

#: held-out sequences the fidelity report runs the teacher on (from the data module's validation split)
HELD_OUT_SEQUENCES = 16
_HELD_OUT_OFFSET = 1 << 31  # held-out draws use seeds no training sequence has


def stored_form(
    logits: Tensor, kind: StoreKind, k: int, temperature: float, seed: int, indices: Tensor
) -> tuple[Tensor, Tensor]:
    """What a store of ``kind`` keeps of ``logits`` ``(B, L, V)`` for sequences ``indices``: ``(logprobs, ids)``."""
    if kind == "sampled":
        return sampled_logprobs(logits, k, temperature, [draw_seed(seed, int(i)) for i in indices])
    return topk_logprobs(logits, k, temperature)


def build_lm_store(
    teacher: nn.Module,
    datamodule: Any,
    out: str | os.PathLike,
    k: int,
    temperature: float = 1.0,
    dtype: StoreDtype = "fp16",
    batch_size: int = 16,
    device: str | None = None,
    overwrite: bool = False,
    kind: StoreKind = "topk",
    seed: int = 0,
) -> LMTeacherStore:
    """Run ``teacher`` once over the training sequences of ``datamodule`` and store, at ``temperature``, its top-``k``
    log-probabilities or ``k`` draws (seeded by ``seed`` and each sequence's index) per token; an interrupted build
    resumes where it stopped. The store's fidelity (:mod:`lightning_kd.cache.lm_fidelity`) is measured on held-out
    sequences of the data module's validation split and written into ``meta.json``."""
    start = time.perf_counter()
    tokens = training_tokens(datamodule)
    vocab_size = int(datamodule.vocab_size)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    record: dict[str, Any] = {"seed": int(seed)} if kind == "sampled" else {}
    store = LMTeacherStore.create(
        out,
        num_sequences=len(tokens),
        seq_len=tokens.shape[1],
        k=k,
        temperature=temperature,
        vocab_size=vocab_size,
        dtype=dtype,
        overwrite=overwrite,
        kind=kind,
        teacher_fingerprint=weights_fingerprint(teacher),
        vocab_fingerprint=datamodule.vocab_fingerprint,
        data_fingerprint=tokens_fingerprint(tokens),
        **record,
    )
    was_training = teacher.training
    teacher.eval().to(device)

    def logits_of(ids: np.ndarray) -> Tensor:
        input_ids = torch.as_tensor(ids.astype("int64"), device=device)
        return output_logits(teacher(input_ids=input_ids), "teacher")[..., :vocab_size]

    try:
        todo = store.remaining
        with torch.no_grad():
            for first in range(0, len(todo), batch_size):
                rows = torch.as_tensor(todo[first : first + batch_size])
                store.write(rows, *stored_form(logits_of(tokens[rows.numpy()]), kind, k, temperature, seed, rows))
            held_out = _held_out(datamodule, logits_of, kind, k, temperature, seed, batch_size)
    finally:
        teacher.train(was_training)
    mass = captured_mass(store.arrays["logprobs"], store.arrays["ids"])
    store.finish(fidelity=fidelity_report(store.bytes_per_token, mass, time.perf_counter() - start, held_out))
    return store


def _held_out(
    datamodule: Any, logits_of: Any, kind: StoreKind, k: int, temperature: float, seed: int, batch_size: int
) -> dict[str, float] | None:
    """The held-out part of the fidelity report, or ``None`` when the data module has no validation split."""
    split = getattr(datamodule, "splits", {}).get("val")
    if split is None or not hasattr(split, "ids") or len(split.ids) == 0:
        return None
    ids = split.ids[:HELD_OUT_SEQUENCES]
    parts = []
    for first in range(0, len(ids), batch_size):
        logits = logits_of(ids[first : first + batch_size])
        rows = torch.arange(first, first + len(logits)) + _HELD_OUT_OFFSET
        stored = stored_form(logits, kind, k, temperature, seed, rows)
        parts.append(held_out_fidelity(torch.log_softmax(logits.float() / temperature, -1), *stored, kind))
    positions = sum(p["positions"] for p in parts)
    return {
        "kl_stored_to_full": sum(p["kl_stored_to_full"] * p["positions"] for p in parts) / positions,
        "tv": sum(p["tv"] * p["positions"] for p in parts) / positions,
        "positions": positions,
    }

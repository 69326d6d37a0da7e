"""Build an LM teacher store: run the teacher once over the training sequences and keep its top-``k``
log-probabilities per token. From a recipe: ``lightning-kd cache-lm`` (:mod:`lightning_kd.apps.cache_lm`)."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from lightning_kd.cache.lm_keys import training_tokens
from lightning_kd.cache.lm_store import LMTeacherStore, StoreDtype, topk_logprobs
from lightning_kd.core.digest import weights_fingerprint
from lightning_kd.core.teacher import output_logits
from lightning_kd.data.fingerprint import tokens_fingerprint


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
) -> LMTeacherStore:
    """Run ``teacher`` once over the training sequences of ``datamodule`` and store its top-``k``
    log-probabilities at ``temperature`` (an interrupted build resumes where it stopped)."""
    tokens = training_tokens(datamodule)
    vocab_size = int(datamodule.vocab_size)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    store = LMTeacherStore.create(
        out,
        num_sequences=len(tokens),
        seq_len=tokens.shape[1],
        k=k,
        temperature=temperature,
        vocab_size=vocab_size,
        dtype=dtype,
        overwrite=overwrite,
        teacher_fingerprint=weights_fingerprint(teacher),
        vocab_fingerprint=datamodule.vocab_fingerprint,
        data_fingerprint=tokens_fingerprint(tokens),
    )
    was_training = teacher.training
    teacher.eval().to(device)
    try:
        todo = store.remaining
        with torch.no_grad():
            for start in range(0, len(todo), batch_size):
                rows = torch.as_tensor(todo[start : start + batch_size])
                input_ids = torch.as_tensor(tokens[rows.numpy()].astype("int64"), device=device)
                logits = output_logits(teacher(input_ids=input_ids), "teacher")[..., :vocab_size]
                store.write(rows, *topk_logprobs(logits, k, temperature))
    finally:
        teacher.train(was_training)
    store.finish()
    return store

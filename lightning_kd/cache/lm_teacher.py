"""The offline causal-LM teacher: build a top-k store once (``lightning-kd cache-lm``), train from it.

    lightning-kd cache-lm --config configs/lm/base.yaml --config configs/lm/kd_offline_topk.yaml   # once
    lightning-kd fit      --config configs/lm/base.yaml --config configs/lm/kd_offline_topk.yaml

The recipe's teacher is a :class:`CachedLMTeacher` (the store's ``path`` and, optionally, the live ``model`` and
``ckpt``: the builder runs it, and validation reports it); the build uses the recipe's data module (its training
split, which needs ``with_indices: true``), ``k`` and the module's ``temperature``. The store's format and its
tail: :mod:`lightning_kd.cache.lm_store`.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lightning_kd.cache.lm_store import (
    LMTeacherStore,
    StoreDtype,
    decode_lm_topk,
    tokens_fingerprint,
    topk_logprobs,
)
from lightning_kd.core.lm import CausalLMTeacher
from lightning_kd.core.teacher import TeacherBase, TeacherOutput, output_logits, weights_fingerprint


def _training_tokens(datamodule: Any) -> Any:
    datamodule.setup("fit")
    split = getattr(datamodule, "splits", {}).get("train")
    if split is None or not hasattr(split, "ids"):
        raise ValueError(
            f"an LM teacher store needs a data module of packed sequences (PackedTextDataModule), got "
            f"{type(datamodule).__name__}: its training rows are the store's keys."
        )
    return split.ids


class CachedLMTeacher(TeacherBase):
    """Top-k teacher log-probabilities from an :class:`~lightning_kd.cache.lm_store.LMTeacherStore` in training;
    the live ``model`` (when given) at validation and test.

    At fit start the store is opened and the run refused, naming the difference, when the data module does not
    give sequence indices (``with_indices: true``), or the store was built from other training tokens, another
    tokenizer, another teacher (when ``model`` is given) or at another temperature.

    Args:
        path: the store's folder.
        model: the teacher network (optional): checked against the store's fingerprint, run at validation/test
            (``val/teacher_*``, ``val/kd``). Without it no teacher metric is logged.
        ckpt: weights for ``model``.
        tail: how the student is compared with a teacher known through its top ``k`` only: ``bucket`` (the
            divergence over the ``k`` stored tokens plus one "anything else" bucket; the default) or ``uniform``
            (the rest of the mass spread evenly over the other tokens, a full-vocabulary divergence); see
            :mod:`lightning_kd.losses.token.sparse`. Both equal the live teacher at ``k = V``.
    """

    def __init__(
        self,
        path: str,
        model: nn.Module | None = None,
        ckpt: str | None = None,
        tail: Literal["bucket", "uniform"] = "bucket",
    ) -> None:
        super().__init__()
        if tail not in ("bucket", "uniform"):
            raise ValueError(f"CachedLMTeacher: tail must be 'bucket' or 'uniform', got {tail!r}.")
        self.tail = tail
        if ckpt is not None and model is None:
            raise ValueError(f"CachedLMTeacher got ckpt={str(ckpt)!r} but no model to load it into; give `model` too.")
        self.path = os.fspath(path)
        self.live = CausalLMTeacher(model, ckpt=ckpt) if model is not None else None
        self.store: LMTeacherStore | None = None

    @property
    def model(self) -> nn.Module | None:
        return self.live.model if self.live is not None else None

    @property
    def num_classes(self) -> int | None:
        if self.live is not None:
            return self.live.num_classes
        return self.store.meta["vocab_size"] if self.store is not None else None

    def prepare_fit(self, datamodule: Any = None, max_epochs: int | None = None) -> None:
        if not getattr(datamodule, "with_indices", False):
            raise ValueError(
                f"CachedLMTeacher looks the teacher up by sequence index: set with_indices: true on the data module "
                f"({type(datamodule).__name__})."
            )
        store = LMTeacherStore.open(self.path)
        expected = {
            "data_fingerprint": tokens_fingerprint(_training_tokens(datamodule)),
            "vocab_fingerprint": getattr(datamodule, "vocab_fingerprint", None),
            "teacher_fingerprint": weights_fingerprint(self.live.model) if self.live is not None else None,
        }
        store.check(expected, against=f"this run (data module {type(datamodule).__name__})")
        self.store = store

    def check_temperature(self, temperature: float) -> None:
        stored = self.store.meta["temperature"] if self.store is not None else None
        if stored is not None and abs(stored - temperature) > 1e-9:
            self.store.check({"temperature": float(temperature)}, against="this run")

    def targets(self, out: TeacherOutput, temperature: float) -> Tensor | tuple[Tensor, Tensor]:
        """What the loss compares the student with, from a training-time answer: ``(top-k log-probs, ids)`` for
        ``tail="bucket"``; for ``"uniform"`` full logits, the rebuilt log-probabilities times ``T`` (so that the
        loss's softening by ``T`` gives back the stored distribution)."""
        self.check_temperature(temperature)
        if self.tail == "bucket":
            return out.topk_logprobs, out.topk_ids
        return temperature * decode_lm_topk(out.topk_logprobs, out.topk_ids, self.store.meta["vocab_size"])

    def release(self) -> None:
        self.store = None

    def forward(self, inputs: Any, index: Tensor | None = None, epoch: int | None = None) -> TeacherOutput:
        if index is not None:
            if self.store is None:
                raise RuntimeError("the LM teacher store is opened when fit starts; a training step ran outside fit.")
            logprobs, ids = self.store.lookup(index, device=index.device)
            return TeacherOutput(topk_logprobs=logprobs, topk_ids=ids)
        if self.live is not None:
            return self.live(inputs)
        return TeacherOutput()

    def checkpoint_keys(self, prefix: str) -> list[str]:
        return []  # the live model is a Teacher component and answers for its own keys

    def refill(self, state: dict[str, Any], prefix: str) -> None:
        return None


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
    tokens = _training_tokens(datamodule)
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


def build_from_recipe(
    configs: Sequence[str],
    overrides: Sequence[str] = (),
    out: str | None = None,
    k: int = 32,
    dtype: StoreDtype = "fp16",
    batch_size: int = 16,
    device: str | None = None,
    overwrite: bool = False,
) -> LMTeacherStore:
    """Build the store a recipe's :class:`CachedLMTeacher` reads: its teacher model and checkpoint, its data
    module, its module's ``temperature``; ``out`` defaults to the teacher's ``path``."""
    from lightning_kd.apps.cli import build_cli

    cli = build_cli([a for c in configs for a in ("--config", str(c))] + list(overrides), run=False)
    component = cli.model.teacher
    if isinstance(component, CachedLMTeacher):
        if component.live is None:
            raise ValueError("the recipe's CachedLMTeacher has no `model` to run: give it the teacher network.")
        teacher, out = component.live.model, out or component.path
    elif isinstance(component, CausalLMTeacher):
        teacher = component.model
    else:
        raise ValueError(f"cannot build an LM store for a {type(component).__name__} teacher.")
    if out is None:
        raise ValueError("the recipe's teacher is not a CachedLMTeacher with a `path`: pass --out.")
    temperature = float(getattr(cli.model, "temperature", 1.0))
    return build_lm_store(teacher, cli.datamodule, out, k, temperature, dtype, batch_size, device, overwrite)


def main(argv: Sequence[str] | None = None) -> None:
    """``lightning-kd cache-lm --config recipe.yaml [--config fragment.yaml] [--k 32] [--out DIR] [...]``."""
    parser = argparse.ArgumentParser(description="Store a causal-LM teacher's top-k log-probabilities per token.")
    parser.add_argument("--config", action="append", required=True, help="recipe YAML (repeatable)")
    parser.add_argument("--out", help="store folder (default: the recipe's CachedLMTeacher path)")
    parser.add_argument("--k", type=int, default=32, help="tokens kept per position (default 32)")
    parser.add_argument("--dtype", choices=["fp16", "fp32"], default="fp16", help="log-probability storage")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--device", help="default: cuda if available, else cpu")
    parser.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    opts, overrides = parser.parse_known_args(argv)
    start = time.perf_counter()
    store = build_from_recipe(
        opts.config, overrides, opts.out, opts.k, opts.dtype, opts.batch_size, opts.device, opts.overwrite
    )
    n, seq_len, k = store.arrays["logprobs"].shape
    print(
        f"LM teacher store {store.path}: {n} sequences x {seq_len} tokens, k={k}, T={store.meta['temperature']}, "
        f"{store.bytes_per_token:.0f} bytes/token ({store.nbytes / 2**20:.1f} MiB), "
        f"{time.perf_counter() - start:.1f} s"
    )

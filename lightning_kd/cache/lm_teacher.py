"""The offline causal-LM teacher: a top-k store built once (``lightning-kd cache-lm``), read in training.

    lightning-kd cache-lm --config configs/lm/base.yaml --config configs/lm/kd_offline_topk.yaml   # once
    lightning-kd fit      --config configs/lm/base.yaml --config configs/lm/kd_offline_topk.yaml

The recipe's teacher is a :class:`CachedLMTeacher` (the store's ``path`` and, optionally, the live ``model`` and
``ckpt``: the builder runs it, and validation reports it); the build uses the recipe's data module (its training
split, which needs ``with_indices: true``), ``k`` and the module's ``temperature``. The store's format and its
tail: :mod:`lightning_kd.cache.lm_store`.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from torch import Tensor, nn

from lightning_kd.cache.lm_keys import training_tokens
from lightning_kd.cache.lm_store import LMTeacherStore
from lightning_kd.core.batch import inputs_device
from lightning_kd.core.digest import weights_fingerprint
from lightning_kd.core.lm import CausalLMTeacher, SampledTokenLoss, TokenLoss, TopKTokenLoss
from lightning_kd.core.teacher import TeacherBase, TeacherOutput
from lightning_kd.data.fingerprint import tokens_fingerprint


class CachedLMTeacher(TeacherBase):
    """The teacher's stored tokens from an :class:`~lightning_kd.cache.lm_store.LMTeacherStore` in training (its top
    ``k``, or ``k`` tokens drawn from it); the live ``model`` (when given) at validation and test.

    At fit start the store is opened and the run refused, naming the difference, when the data module does not
    give sequence indices (``with_indices: true``), or the store was built from other training tokens, another
    tokenizer, another teacher (when ``model`` is given), at another temperature, or of another ``kind``.

    Args:
        path: the store's folder.
        model: the teacher network (optional): checked against the store's fingerprint, run at validation/test
            (``val/teacher_*``, ``val/kd``). Without it no teacher metric is logged.
        ckpt: weights for ``model``.
        tail: how the student is compared with a teacher known through its top ``k`` only: ``bucket`` (the
            divergence over the ``k`` stored tokens plus one "anything else" bucket; the default) or ``uniform``
            (the rest of the mass spread evenly over the other tokens, a full-vocabulary divergence); see
            :mod:`lightning_kd.losses.token.sparse`. Both equal the live teacher at ``k = V``. Top-k stores only.
        kind: the store's kind: ``topk`` (its top ``k``) or ``sampled`` (``k`` draws, an unbiased estimate of every
            divergence: :mod:`lightning_kd.losses.token.sampled`). ``lightning-kd cache-lm`` builds this kind.
            With ``tail`` it picks the module's token loss (:meth:`token_loss`:
            :class:`~lightning_kd.core.lm.TopKTokenLoss` or :class:`~lightning_kd.core.lm.SampledTokenLoss`).
    """

    checks_vocab = True  # the store records its tokenizer's fingerprint; prepare_fit compares it with the data's

    def __init__(
        self,
        path: str,
        model: nn.Module | None = None,
        ckpt: str | None = None,
        tail: Literal["bucket", "uniform"] = "bucket",
        kind: Literal["topk", "sampled"] = "topk",
    ) -> None:
        super().__init__()
        if tail not in ("bucket", "uniform"):
            raise ValueError(f"CachedLMTeacher: tail must be 'bucket' or 'uniform', got {tail!r}.")
        if kind not in ("topk", "sampled"):
            raise ValueError(f"CachedLMTeacher: kind must be 'topk' or 'sampled', got {kind!r}.")
        self.tail, self.kind = tail, kind
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
        rows = datamodule.store_rows() if hasattr(datamodule, "store_rows") else None
        store = LMTeacherStore.open(self.path, rows=rows)  # a rank of rank_shards maps its block only
        expected = {
            "data_fingerprint": tokens_fingerprint(training_tokens(datamodule)),
            "vocab_fingerprint": getattr(datamodule, "vocab_fingerprint", None),
            # a store filled from a server records the server's model name, not weights: nothing to compare
            "teacher_fingerprint": (
                weights_fingerprint(self.live.model)
                if self.live is not None and "server_model" not in store.meta
                else None
            ),
            "kind": self.kind,
        }
        store.check(expected, against=f"this run (data module {type(datamodule).__name__})")
        self.store = store

    def token_loss(self, chunk_size: int | None) -> TokenLoss:
        """The strategy of this teacher's ``kind`` (and ``tail``): with ``chunk_size`` the student's lm head is
        applied that many tokens at a time, so its full logits never exist."""
        if self.kind == "sampled":
            return SampledTokenLoss(chunk_size)
        return TopKTokenLoss(self.tail, chunk_size)

    def inputs(self) -> list[tuple[str, str]]:
        return [("the LM teacher store", self.path), *(self.live.inputs() if self.live is not None else [])]

    def release(self) -> None:
        self.store = None

    def forward(
        self, inputs: Any, index: Tensor | None = None, epoch: int | None = None, output: str = "topk"
    ) -> TeacherOutput:
        """``output="topk"`` with sequence indices: the stored top-k (and the store's temperature); otherwise the
        live model's answer (``output`` as :class:`~lightning_kd.core.lm.CausalLMTeacher` takes it), or nothing."""
        if index is not None and output == "topk":
            if self.store is None:
                raise RuntimeError("the LM teacher store is opened when fit starts; a training step ran outside fit.")
            logprobs, ids = self.store.lookup(index, device=inputs_device(inputs) or index.device)
            return TeacherOutput(topk_logprobs=logprobs, topk_ids=ids, temperature=self.store.meta["temperature"])
        if self.live is not None:
            return self.live(inputs, output="logits" if output == "topk" else output)
        return TeacherOutput()

    def checkpoint_keys(self, prefix: str) -> list[str]:
        return []  # the live model is a Teacher component and answers for its own keys

    def refill(self, state: dict[str, Any], prefix: str) -> None:
        return None

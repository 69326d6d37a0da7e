"""The lm head and the final hidden states of a causal LM, for losses that apply the head themselves.

The chunked token loss (:func:`~lightning_kd.losses.token.chunked_token_distill_loss`) needs each model's final
hidden states and lm-head weight instead of its logits. For a ``transformers`` causal LM these are
``model.base_model(...).last_hidden_state`` (after the final norm) and ``model.get_output_embeddings()``
(a tied head is the input embedding itself). A head that does more than ``hidden @ W.T + b`` — Gemma 2's
logit soft-capping, Cohere's logit scale — cannot be reproduced from these two, so it is refused by name
(:func:`check_plain_head`) and the naive path (full logits) is the fallback; :func:`check_head_matches` also
checks numerically, on a real batch, that the head reproduces the model's own logits. Pure torch.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from lightning_kd.core.teacher import output_logits

# config attributes of heads that are not a plain linear map, with what they do
_HEAD_EXTRAS = {
    "final_logit_softcapping": "soft-caps the logits (tanh)",
    "logit_scale": "scales the logits",
    "output_multiplier": "scales the logits",
    "logits_scaling": "scales the logits",
}


class UnsupportedHeadError(ValueError):
    """The model's lm head is not ``hidden @ W.T + b``: the chunked path cannot reproduce its logits."""


def lm_head(model: nn.Module, who: str = "model") -> tuple[Tensor, Tensor | None]:
    """``(weight (V, H), bias (V,) or None)`` of a causal LM's output layer."""
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    if not isinstance(head, nn.Linear):
        raise UnsupportedHeadError(
            f"the {who} ({type(model).__name__}) has no nn.Linear output layer (get_output_embeddings() gave "
            f"{type(head).__name__}); the chunked loss needs one: set chunk_size: null to use full logits."
        )
    return head.weight, head.bias


def check_plain_head(model: nn.Module, who: str = "model") -> None:
    """Refuse, by name, a head the chunked path does not implement (e.g. logit soft-capping)."""
    config = getattr(model, "config", None)
    for name, what in _HEAD_EXTRAS.items():
        value = getattr(config, name, None)
        if value not in (None, 0, 1, 1.0, 0.0):
            raise UnsupportedHeadError(
                f"the {who} ({type(model).__name__}) {what}: config.{name}={value}. The chunked loss applies only "
                "hidden @ W.T + b, so it would train on other logits than the model's; set chunk_size: null (full "
                "logits) for this model."
            )
    lm_head(model, who)
    if not isinstance(getattr(model, "base_model", None), nn.Module):
        raise UnsupportedHeadError(
            f"the {who} ({type(model).__name__}) has no base_model giving the final hidden states; set chunk_size: "
            "null to use full logits."
        )


def final_hidden(model: nn.Module, inputs: Mapping[str, Tensor]) -> Tensor:
    """``(B, L, H)`` final hidden states (after the final norm) of a ``transformers`` causal LM."""
    out = model.base_model(**inputs)
    hidden = getattr(out, "last_hidden_state", None)
    if hidden is None:
        hidden = out[0]
    return hidden


def check_head_matches(model: nn.Module, inputs: Mapping[str, Tensor], who: str = "model", atol: float = 1e-3) -> None:
    """Check that ``final_hidden`` and ``lm_head`` reproduce the model's own logits on ``inputs``.

    Raises:
        UnsupportedHeadError: they differ by more than ``atol`` (relative to the logits' scale); the message
            names the model and the fallback.
    """
    with torch.no_grad():
        logits = output_logits(model(**inputs), who).float()
        weight, bias = lm_head(model, who)
        mine = nn.functional.linear(final_hidden(model, inputs), weight, bias).float()
    if mine.shape != logits.shape:
        raise UnsupportedHeadError(
            f"the {who} ({type(model).__name__}) returns logits of shape {tuple(logits.shape)} but its hidden states "
            f"and head give {tuple(mine.shape)}; set chunk_size: null to use full logits."
        )
    err = (mine - logits).abs().max().item()
    scale = max(1.0, logits.abs().max().item())
    if not err <= atol * scale:
        raise UnsupportedHeadError(
            f"the {who} ({type(model).__name__}) computes its logits in a way the chunked loss does not reproduce "
            f"(largest difference {err:.3g} between hidden @ W.T + b and the model's own logits). Set chunk_size: "
            "null to train on the model's full logits."
        )


def head_width(model: nn.Module) -> int | None:
    """Number of vocabulary columns of the model's logits (its lm head's rows), when it has a linear head."""
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    return head.weight.shape[0] if isinstance(head, nn.Linear) else None

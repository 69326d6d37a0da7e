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


def unwrapped(model: nn.Module) -> nn.Module:
    """The ``transformers`` causal LM inside adapter wrappers (a ``peft`` model's ``get_base_model()``, its LoRA
    layers in place), or ``model`` itself."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


def lm_head(model: nn.Module, who: str = "model") -> tuple[Tensor, Tensor | None]:
    """``(weight (V, H), bias (V,) or None)`` of a causal LM's output layer (through adapter wrappers)."""
    get = getattr(unwrapped(model), "get_output_embeddings", None)
    head = get() if callable(get) else None
    if not isinstance(head, nn.Linear) or type(head).forward is not nn.Linear.forward:
        adapted = head is not None and hasattr(head, "base_layer")
        why = (
            "is wrapped by an adapter (LoRA on the lm head): leave the head out of target_modules, or"
            if adapted
            else f"is not an nn.Linear (get_output_embeddings() gave {type(head).__name__}):"
        )
        raise UnsupportedHeadError(
            f"the {who}'s output layer ({type(model).__name__}) {why} the chunked loss needs a plain linear head; "
            "set chunk_size: null to use full logits."
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
    if not isinstance(getattr(unwrapped(model), "base_model", None), nn.Module):
        raise UnsupportedHeadError(
            f"the {who} ({type(model).__name__}) has no base_model giving the final hidden states; set chunk_size: "
            "null to use full logits."
        )


def final_hidden(model: nn.Module, inputs: Mapping[str, Tensor]) -> Tensor:
    """``(B, L, H)`` final hidden states (after the final norm) of a ``transformers`` causal LM, through adapter
    wrappers (a ``peft`` model's ``base_model`` is the adapter layer, not the decoder)."""
    out = unwrapped(model).base_model(**inputs)
    hidden = getattr(out, "last_hidden_state", None)
    if hidden is None:
        hidden = out[0]
    return hidden


def check_head_matches(model: nn.Module, inputs: Mapping[str, Tensor], who: str = "model", atol: float = 1e-3) -> None:
    """Check that ``final_hidden`` and ``lm_head`` reproduce the model's own logits on ``inputs``.

    Both passes run with the model in eval mode (dropout off; each submodule's mode is put back after), so a model
    trained with dropout is compared with itself, not with another dropout draw.

    Raises:
        UnsupportedHeadError: they differ by more than ``atol`` (relative to the logits' scale); the message
            names the model and the fallback.
    """
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            logits = output_logits(model(**inputs), who).float()
            weight, bias = lm_head(model, who)
            mine = nn.functional.linear(final_hidden(model, inputs), weight, bias).float()
    finally:
        for module, mode in modes.items():
            module.training = mode
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
    get = getattr(unwrapped(model), "get_output_embeddings", None)
    head = get() if callable(get) else None
    weight = getattr(head, "weight", None)
    return weight.shape[0] if isinstance(weight, Tensor) and weight.dim() == 2 else None

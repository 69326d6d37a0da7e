"""LoRA (and other ``peft`` adapters) on a causal LM, as a model a recipe can name.

Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", 2021, arXiv:2106.09685: each adapted linear
layer ``W`` gets a trainable low-rank update ``(α / r) · B A`` while ``W`` stays frozen, so only the adapters
reach the optimizer (a lightning-kd module gives the optimizer the parameters that require grad, nothing
else). In a recipe::

    student:
      class_path: lightning_kd.models.lora
      init_args:
        model: {class_path: lightning_kd.models.pretrained_lm, init_args: {path: models/student}}
        r: 16
        target_modules: [q_proj, k_proj, v_proj, o_proj]

``peft`` is imported when the adapter is built (the ``llm`` extra).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def lora(
    model: nn.Module,
    r: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    target_modules: Sequence[str] | str | None = "all-linear",
    modules_to_save: Sequence[str] | None = None,
) -> nn.Module:
    """``model`` with LoRA adapters (a ``peft`` model): only the adapters (and ``modules_to_save``) train.

    Args:
        model: a ``transformers`` causal LM (e.g. :func:`~lightning_kd.models.pretrained_lm`).
        r: rank of each update.
        alpha: scale ``α`` (the update is ``α / r · B A``).
        dropout: dropout on the adapters' input.
        target_modules: names of the layers to adapt (``[q_proj, v_proj]``), or ``all-linear`` (every linear
            layer but the lm head: the chunked loss then keeps its plain head).
        modules_to_save: other layers to train in full and save with the adapter (e.g. ``[embed_tokens]``).

    Example:
        >>> from lightning_kd.models import llama_lm
        >>> student = lora(llama_lm(64, hidden_size=32, num_layers=1, num_heads=2), r=4)  # doctest: +SKIP
        >>> sum(p.numel() for p in student.parameters() if p.requires_grad) > 0  # doctest: +SKIP
        True
    """
    if not isinstance(r, int) or r < 1:
        raise ValueError(f"lora: r must be a positive int (the rank of each update), got {r!r}; e.g. r=8.")
    if not alpha > 0:
        raise ValueError(f"lora: alpha must be > 0, got {alpha}; the usual choice is 2·r.")
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as err:
        raise ImportError("LoRA students need peft: pip install 'lightning-kd[llm]'.") from err
    targets = list(target_modules) if isinstance(target_modules, (list, tuple)) else target_modules
    config = LoraConfig(
        task_type="CAUSAL_LM",
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=targets,
        modules_to_save=list(modules_to_save) if modules_to_save else None,
    )
    adapted = get_peft_model(model, config)
    if getattr(model, "is_gradient_checkpointing", False):
        adapted.enable_input_require_grads()  # frozen embeddings: checkpointed layers still need a grad input
    return adapted.train()

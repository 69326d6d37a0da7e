"""Causal language models for distillation: built from a config, or loaded from a ``transformers`` folder.

Both return a ``transformers`` causal LM in an explicit dtype (transformers 5 loads a bf16 checkpoint as
bf16 unless told otherwise; distillation losses want to know). Both are plain functions, so a YAML recipe
names them as ``class_path`` (as :func:`~lightning_kd.models.hub.torchvision_model`)::

    student:
      class_path: lightning_kd.models.llama_lm
      init_args: {vocab_size: 4096, hidden_size: 128, num_layers: 2}

``transformers`` is imported when a model is built (the ``llm`` extra), never at package import.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

VOCAB_FINGERPRINT_KEY = "lightning_kd_vocab_fingerprint"
"""The config attribute (saved in ``config.json``) holding the sha256 of the vocabulary a model was trained on."""

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as err:
        raise ImportError(
            "causal language models need transformers: pip install 'lightning-kd[llm]' (transformers>=5)."
        ) from err
    return transformers


def _dtype(dtype: str) -> torch.dtype:
    if dtype not in _DTYPES:
        raise ValueError(f"dtype={dtype!r} is not one of {sorted(_DTYPES)}; float32 is the default for training.")
    return _DTYPES[dtype]


def llama_lm(
    vocab_size: int,
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int | None = None,
    intermediate_size: int | None = None,
    max_position: int = 512,
    tie_embeddings: bool = True,
    dtype: str = "float32",
    vocab_fingerprint: str | None = None,
    seed: int | None = None,
    attn_implementation: str | None = None,
    gradient_checkpointing: bool = False,
) -> nn.Module:
    """A randomly initialised Llama-architecture causal LM (``transformers.LlamaForCausalLM``).

    Args:
        vocab_size: embedding rows and lm-head outputs: the tokenizer's size (``len(tokenizer)``) or more.
        hidden_size: width of the residual stream.
        num_layers: decoder layers.
        num_heads: attention heads (must divide ``hidden_size``).
        num_kv_heads: key/value heads (grouped-query attention); ``None``: ``num_heads``.
        intermediate_size: width of the MLP; ``None``: ``round(8/3 · hidden_size)`` rounded up to 32.
        max_position: the longest sequence (RoPE needs no table, but generation stops there).
        tie_embeddings: share the input embedding and the lm head (small models: most parameters are there).
        dtype: ``float32``, ``bfloat16`` or ``float16``.
        vocab_fingerprint: the sha256 of the vocabulary (:func:`lightning_kd.data.tokenizer.vocab_fingerprint`),
            recorded in the config so the model's vocabulary can be checked wherever it goes.
        seed: draw the initial weights from this seed with a generator of their own (the global RNG is neither
            used nor changed), so two recipes that build the same student — alone and with KD, after a teacher
            was built or not — start from the same weights. ``None``: transformers' own initialisation from the
            global RNG.
        attn_implementation: ``eager``, ``sdpa``, ``flash_attention_2``, … (transformers' choice when ``None``).
        gradient_checkpointing: recompute each decoder layer's activations in backward instead of keeping them
            (less memory, about a third more compute): for a student too large for its batch.

    Example:
        >>> m = llama_lm(vocab_size=64, hidden_size=32, num_layers=1, num_heads=2)  # doctest: +SKIP
        >>> m(input_ids=torch.zeros(1, 5, dtype=torch.long)).logits.shape  # doctest: +SKIP
        torch.Size([1, 5, 64])
    """
    if hidden_size % num_heads:
        raise ValueError(f"num_heads={num_heads} must divide hidden_size={hidden_size}, e.g. num_heads=4.")
    if num_kv_heads is not None and num_heads % num_kv_heads:
        raise ValueError(f"num_kv_heads={num_kv_heads} must divide num_heads={num_heads}.")
    if intermediate_size is None:
        intermediate_size = -(-round(8 * hidden_size / 3) // 32) * 32
    transformers = _transformers()
    config = transformers.LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads or num_heads,
        max_position_embeddings=max_position,
        tie_word_embeddings=tie_embeddings,
    )
    if vocab_fingerprint is not None:
        setattr(config, VOCAB_FINGERPRINT_KEY, vocab_fingerprint)
    if attn_implementation is not None:
        config._attn_implementation = attn_implementation
    model = transformers.LlamaForCausalLM(config)
    if seed is not None:
        init_weights(model, seed, config.initializer_range)
    return _ready(model.to(_dtype(dtype)), gradient_checkpointing)


def _ready(model: nn.Module, gradient_checkpointing: bool) -> nn.Module:
    """``model`` in train mode (``from_pretrained`` returns eval mode: dropout off) with gradient checkpointing
    switched on when asked."""
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model.train()


@torch.no_grad()
def init_weights(model: nn.Module, seed: int, std: float = 0.02) -> nn.Module:
    """Re-draw a transformer's weights from ``seed`` with a local generator, as transformers initialises Llama-type
    models: linear and embedding weights ``N(0, std²)``, biases 0, the padding embedding 0; norms are left at
    their construction value (ones). The global RNG is untouched."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.copy_(torch.empty(module.weight.shape).normal_(0.0, std, generator=generator))
            if isinstance(module, nn.Linear) and module.bias is not None:
                module.bias.zero_()
            if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                module.weight[module.padding_idx].zero_()
    return model


def pretrained_lm(
    path: str | os.PathLike,
    dtype: str = "float32",
    local_files_only: bool = True,
    attn_implementation: str | None = None,
    gradient_checkpointing: bool = False,
) -> nn.Module:
    """A causal LM from a ``transformers`` folder (``save_pretrained``) or, with ``local_files_only=False``, the hub,
    in train mode (``from_pretrained`` returns eval mode; a teacher component puts its model back in eval).

    Args:
        path: the folder (``config.json`` + weights), or a hub id. Its tokenizer files, if any, say the model's
            vocabulary: a distillation checks the data's tokenizer against them.
        dtype: the dtype to load in, explicitly: ``float32`` (default), ``bfloat16`` or ``float16``.
        local_files_only: never download; a missing folder is an error naming it.
        attn_implementation: ``eager``, ``sdpa``, ``flash_attention_2``, … (transformers' choice when ``None``).
        gradient_checkpointing: recompute each decoder layer's activations in backward instead of keeping them.
    """
    transformers = _transformers()
    folder = Path(path)
    if local_files_only and not (folder / "config.json").is_file():
        hint = "it does not exist" if not folder.exists() else "it has no config.json"
        raise FileNotFoundError(
            f"pretrained_lm: {os.fspath(path)!r} is not a transformers model folder ({hint}); save one with "
            "model.save_pretrained(folder), or pass local_files_only=False to download a hub id."
        )
    extra = {} if attn_implementation is None else {"attn_implementation": attn_implementation}
    model = transformers.AutoModelForCausalLM.from_pretrained(
        os.fspath(path), dtype=_dtype(dtype), local_files_only=local_files_only, **extra
    )
    return _ready(model, gradient_checkpointing)


def model_vocab_fingerprint(model: nn.Module) -> str | None:
    """The vocabulary fingerprint recorded in a model's config, if any (through adapter wrappers)."""
    get = getattr(model, "get_base_model", None)
    config = getattr(get() if callable(get) else model, "config", None)
    value = getattr(config, VOCAB_FINGERPRINT_KEY, None)
    return value if isinstance(value, str) else None


def model_folder(model: nn.Module) -> Path | None:
    """The local folder a model was loaded from (``from_pretrained``), if it was (through adapter wrappers)."""
    get = getattr(model, "get_base_model", None)
    config = getattr(get() if callable(get) else model, "config", None)
    name = getattr(config, "_name_or_path", None) or getattr(config, "name_or_path", None)
    return Path(name) if isinstance(name, str) and name and Path(name).is_dir() else None

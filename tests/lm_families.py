"""Model folders as users bring them: tiny random causal LMs of real ``transformers`` families, saved with
``save_pretrained`` beside a tokenizer in that family's special-token style (trained here on a small corpus, so
nothing is downloaded)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, processors

from lightning_kd.data.text_corpus import TextCorpus
from lightning_kd.data.tokenizer import train_bpe_tokenizer
from tests.lm_helpers import write_corpus

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
GEMMA_CHAT = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{{ m['content'] }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
LLAMA3_CHAT = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)

#: special-token styles: the tokens (ids 0, 1, …), the roles, the token the tokenizer starts a text with, a template
STYLES: dict[str, dict[str, Any]] = {
    # GPT-2 / GPT-NeoX: one <|endoftext|> for everything, no pad, nothing added
    "gpt2": {"tokens": ["<|endoftext|>"], "roles": {"bos": "<|endoftext|>", "eos": "<|endoftext|>",
                                                   "unk": "<|endoftext|>"}},
    # Llama 2 / Mistral / Phi-3: <s> added in front, </s> ends, no pad
    "llama": {"tokens": ["<unk>", "<s>", "</s>"], "roles": {"bos": "<s>", "eos": "</s>", "unk": "<unk>"},
              "prefix": "<s>"},
    # Qwen: pad = eos = <|endoftext|>, no BOS, ChatML template
    "qwen": {"tokens": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
             "roles": {"eos": "<|endoftext|>", "pad": "<|endoftext|>"}, "chat": CHATML},
    # Gemma: <bos> added, <eos>, <pad>, its own turn markers
    "gemma": {"tokens": ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"],
              "roles": {"bos": "<bos>", "eos": "<eos>", "pad": "<pad>"}, "prefix": "<bos>", "chat": GEMMA_CHAT},
    # OPT: </s> is both BOS (added in front) and EOS, <pad>
    "opt": {"tokens": ["<s>", "<pad>", "</s>"], "roles": {"bos": "</s>", "eos": "</s>", "pad": "<pad>"},
            "prefix": "</s>"},
    # Llama 3 / SmolLM3 / OLMo 2: <|begin_of_text|> added, <|end_of_text|> ends, header/eot chat markers
    "llama3": {"tokens": ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                          "<|eot_id|>"], "roles": {"bos": "<|begin_of_text|>", "eos": "<|end_of_text|>"},
               "prefix": "<|begin_of_text|>", "chat": LLAMA3_CHAT},
}  # fmt: skip


@cache
def _corpus_texts(folder: str) -> TextCorpus:
    return TextCorpus.from_directory(write_corpus(Path(folder)), "*.py")


def family_tokenizer(style: str, corpus_folder: Path, vocab_size: int = 320) -> Any:
    """A ``transformers`` tokenizer in ``style`` (see :data:`STYLES`), a byte-level BPE trained on a small corpus."""
    from transformers import PreTrainedTokenizerFast

    spec = STYLES[style]
    raw: Tokenizer = train_bpe_tokenizer(_corpus_texts(str(corpus_folder)), vocab_size, special_tokens=spec["tokens"])
    if "prefix" in spec:
        bos = spec["prefix"]
        raw.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, raw.token_to_id(bos))]
        )
    roles = {f"{role}_token": token for role, token in spec["roles"].items()}
    extra = [t for t in spec["tokens"] if t not in spec["roles"].values()]
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, additional_special_tokens=extra, **roles)
    if "chat" in spec:
        tok.chat_template = spec["chat"]
    return tok


def _ids(tok: Any) -> dict[str, int | None]:
    return {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}


def family_config(family: str, tok: Any, width: int = 32, layers: int = 1, vocab_pad: int = 0) -> Any:
    """A tiny random config of ``family`` for ``tok``'s vocabulary (``vocab_pad`` extra rows: a padded head)."""
    import transformers as tf

    v = len(tok) + vocab_pad
    heads = dict(num_attention_heads=2, num_key_value_heads=1)
    common = dict(vocab_size=v, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
                  max_position_embeddings=128, **heads, **_ids(tok))  # fmt: skip
    if family == "gpt2":
        return tf.GPT2Config(vocab_size=v, n_embd=width, n_layer=layers, n_head=2, n_positions=128, **_ids(tok))
    if family == "opt":
        return tf.OPTConfig(vocab_size=v, hidden_size=width, ffn_dim=2 * width, num_hidden_layers=layers,
                            num_attention_heads=2, max_position_embeddings=128, word_embed_proj_dim=width,
                            **_ids(tok))  # fmt: skip
    if family == "gpt_neox":
        return tf.GPTNeoXConfig(vocab_size=v, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
                                num_attention_heads=2, max_position_embeddings=128, **_ids(tok))  # fmt: skip
    if family == "gemma2":
        return tf.Gemma2Config(head_dim=16, **common)  # soft-capped logits (final_logit_softcapping=30)
    if family == "gemma3":
        return tf.Gemma3TextConfig(head_dim=16, sliding_window=16, **common)
    configs = {
        "llama": tf.LlamaConfig, "mistral": tf.MistralConfig, "qwen2": tf.Qwen2Config, "qwen3": tf.Qwen3Config,
        "phi3": tf.Phi3Config, "smollm3": tf.SmolLM3Config, "olmo2": tf.Olmo2Config,
    }  # fmt: skip
    extra = {"head_dim": 16} if family == "qwen3" else {}
    return configs[family](**common, **extra)


#: every family with the special-token style its tokenizers use
FAMILIES = {
    "gpt2": "gpt2", "llama": "llama", "qwen2": "qwen", "qwen3": "qwen", "mistral": "llama", "gemma2": "gemma",
    "gemma3": "gemma", "phi3": "llama", "opt": "opt", "gpt_neox": "gpt2", "smollm3": "llama3", "olmo2": "llama3",
}  # fmt: skip


def model_folder(
    root: Path, family: str, seed: int, width: int = 32, layers: int = 1, vocab_pad: int = 0, tok: Any = None
) -> Path:
    """A folder holding a tiny random ``family`` model (``save_pretrained``) and its tokenizer, as users have."""
    import torch
    from transformers import AutoModelForCausalLM

    from lightning_kd.data.tokenizer import vocab_fingerprint

    tok = tok if tok is not None else family_tokenizer(FAMILIES[family], root / "corpus")
    folder = root / f"{family}-{width}-{seed}-{vocab_pad}-{vocab_fingerprint(tok)[:8]}"
    if (folder / "config.json").is_file():
        return folder
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(family_config(family, tok, width, layers, vocab_pad))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def metaspace_tokenizer(corpus_folder: Path, vocab_size: int = 300, lowercase: bool = False) -> Any:
    """A SentencePiece-style tokenizer as Llama 2 / Mistral ship it (``▁`` for a space, a dummy prefix space,
    ``<s>`` added in front, ``<unk>`` for a character it never saw), BPE trained on the small corpus;
    ``lowercase``: with a normalizer, so its tokens no longer spell the text."""
    from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    raw.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first")
    if lowercase:
        raw.normalizer = normalizers.Lowercase()
    alphabet = [*"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789#@!?", *"éïüÜ🙂✓"]  # no <unk>
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=alphabet, show_progress=False
    )
    raw.train_from_iterator(_corpus_texts(str(corpus_folder)).texts(), trainer)
    raw.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", raw.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def llama2_tokenizer(corpus_folder: Path, vocab_size: int = 400) -> Any:
    """A tokenizer in the layout Llama 2 and Mistral ship: ``<unk> <s> </s>``, then the 256 byte-fallback tokens
    ``<0x00>``…``<0xFF>`` (ids 3–258), then the merged pieces; spaces written ``▁`` by a ``Prepend``/``Replace``
    normalizer (no pre-tokenizer), decoded by ``Replace``/``ByteFallback``/``Fuse``/``Strip``; ``<s>`` in front.
    The merges are :func:`metaspace_tokenizer`'s."""
    import json

    from tokenizers import decoders, models, normalizers
    from transformers import PreTrainedTokenizerFast

    spec = json.loads(metaspace_tokenizer(corpus_folder, vocab_size).backend_tokenizer.to_str())["model"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"<0x{b:02X}>": 3 + b for b in range(256)}}
    for token, _ in sorted(spec["vocab"].items(), key=lambda item: item[1]):
        vocab.setdefault(token, len(vocab))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in spec["merges"]]
    raw = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    raw.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    raw.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    raw.add_special_tokens(["<unk>", "<s>", "</s>"])
    raw.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>", unk_token="<unk>")

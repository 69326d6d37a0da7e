"""Byte-level BPE tokenizers trained on a :class:`~lightning_kd.data.text_corpus.TextCorpus`, cached and fingerprinted.

Teacher and student of a language model must index the same vocabulary for their logits to be compared:
:func:`vocab_fingerprint` identifies a vocabulary whatever wraps it, so the check is by identity, not by size.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tokenizers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from lightning_kd.data.text_corpus import TextCorpus, stdlib_corpus

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

EOS_TOKEN = "<|endoftext|>"
"""Ends every document (and every response); also what a model emits to stop."""
PAD_TOKEN = "<|pad|>"
"""Fills batches of unequal lengths; never a label."""
SPECIAL_TOKENS = (EOS_TOKEN, PAD_TOKEN)


def train_bpe_tokenizer(
    corpus: TextCorpus,
    vocab_size: int = 4096,
    cache_dir: str | os.PathLike | None = None,
    min_frequency: int = 2,
    special_tokens: Sequence[str] = SPECIAL_TOKENS,
) -> Tokenizer:
    """A byte-level BPE tokenizer (GPT-2's pre-tokenisation, all 256 bytes in the vocabulary) trained on ``corpus``.

    With ``cache_dir`` it is saved as ``<cache_dir>/bpe-<vocab_size>-<key>/tokenizer.json`` next to a
    ``settings.json`` recording what it was trained on; ``key`` hashes those settings (corpus content hash,
    vocabulary size, minimum frequency, special tokens), and a later call with the same settings loads it
    instead of training. A ``tokenizer.json`` found there without matching settings (written by hand, edited,
    or copied in) is never overwritten: the call raises, naming the file and what differs.

    Args:
        corpus: the text to learn merges from: pass the training split only.
        vocab_size: the size to reach, special tokens and the 256 bytes included. A corpus too small to yield
            that many merges gives fewer; read the result's ``get_vocab_size()``.
        cache_dir: the folder of saved tokenizers; ``None`` trains without saving.
        min_frequency: a pair is merged only if it occurs at least this often.
        special_tokens: added tokens, given ids ``0, 1, ...`` in this order; never split and never merged.

    Returns:
        The trained (or reloaded) tokenizer. It adds no special tokens by itself when encoding.
    """
    if vocab_size < 256 + len(special_tokens):
        raise ValueError(
            f"vocab_size={vocab_size} cannot hold the 256 byte tokens and {len(special_tokens)} special tokens: "
            f"use at least {256 + len(special_tokens)}."
        )
    if min_frequency < 1:
        raise ValueError(f"min_frequency must be >= 1, got {min_frequency}.")
    settings = {
        "corpus": corpus.label,
        "corpus_sha256": corpus.sha256,
        "num_files": len(corpus.files),
        "model": "byte-level BPE",
        "vocab_size": vocab_size,
        "min_frequency": min_frequency,
        "special_tokens": list(special_tokens),
    }
    if cache_dir is None:
        return _train_bpe(corpus.texts(), vocab_size, min_frequency, special_tokens)
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    folder = Path(cache_dir) / f"bpe-{vocab_size}-{key}"
    path, meta_path = folder / "tokenizer.json", folder / "settings.json"
    if path.exists():
        return _load_checked(path, meta_path, settings)
    tokenizer = _train_bpe(corpus.texts(), vocab_size, min_frequency, special_tokens)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {**settings, "tokenizers_version": tokenizers.__version__, "vocab_fingerprint": vocab_fingerprint(tokenizer)}
    _write_atomic(path, tokenizer.to_str())
    _write_atomic(meta_path, json.dumps(meta, indent=1))
    return tokenizer


def _train_bpe(texts: list[str], vocab_size: int, min_frequency: int, special_tokens: Sequence[str]) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer, length=len(texts))
    return tokenizer


def _load_checked(path: Path, meta_path: Path, settings: dict[str, Any]) -> Tokenizer:
    """Load a cached tokenizer, refusing one whose recorded settings or vocabulary are not the expected ones."""
    keep = "It is not reused and not overwritten: move it away or pass another cache_dir."
    if not meta_path.is_file():
        raise FileExistsError(f"{path} exists without the {meta_path.name} that records its training settings. {keep}")
    meta = json.loads(meta_path.read_text())
    differs = [f"{k}: {meta.get(k)!r} there, {v!r} wanted" for k, v in settings.items() if meta.get(k) != v]
    if differs:
        raise FileExistsError(f"{path} was trained with other settings ({'; '.join(differs)}). {keep}")
    tokenizer = Tokenizer.from_file(str(path))
    if vocab_fingerprint(tokenizer) != meta.get("vocab_fingerprint"):
        raise FileExistsError(f"{path} was modified after training: its vocabulary is not the one recorded. {keep}")
    return tokenizer


def _write_atomic(path: Path, text: str) -> None:
    """Write whole or not at all, so a concurrent reader (another rank) never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def stdlib_tokenizer(
    vocab_size: int = 4096, val_fraction: float = 0.05, cache_dir: str | os.PathLike | None = "runs/lm/data"
) -> Tokenizer:
    """The default tokenizer: byte-level BPE on the training files of :func:`stdlib_corpus` split at ``val_fraction``.

    The same arguments always give the same tokenizer, so data modules built with them share one vocabulary.
    """
    train, _ = stdlib_corpus().split(val_fraction)
    return train_bpe_tokenizer(train, vocab_size, cache_dir)


def token_id(tokenizer: Tokenizer, token: str) -> int:
    """The id of ``token``, which must be in the vocabulary."""
    index = tokenizer.token_to_id(token)
    if index is None:
        raise ValueError(f"The tokenizer has no {token!r} token: train it with special_tokens including {token!r}.")
    return index


def vocab_fingerprint(
    tokenizer: Tokenizer | PreTrainedTokenizerBase | Mapping[str, int], special_tokens: Iterable[str] = ()
) -> str:
    """sha256 of a vocabulary: its sorted ``token -> id`` mapping and which of its tokens are special.

    Equal for the same vocabulary whether it comes as a ``tokenizers.Tokenizer``, a transformers tokenizer
    (fast or slow) or a plain dict, so a teacher and a student can be checked to share one. It identifies the id
    space the logits index, which is what distillation compares; it does not cover merge rules or
    normalisation (text is tokenised once, by the data module, for both models).

    Args:
        tokenizer: the tokenizer, or a ``token -> id`` mapping.
        special_tokens: for a mapping only (it cannot say which of its tokens are special): the special tokens.
            A tokenizer's own are its added tokens marked special.
    """
    if isinstance(tokenizer, Mapping):
        vocab = dict(tokenizer)
        special = sorted(special_tokens)
        missing = [t for t in special if t not in vocab]
        if missing:
            raise ValueError(f"special_tokens {missing} are not in the vocabulary: add them or leave them out.")
    else:
        if special_tokens:
            raise ValueError("special_tokens is for a plain mapping; a tokenizer's special tokens are read from it.")
        if isinstance(tokenizer, Tokenizer):
            vocab, added = tokenizer.get_vocab(with_added_tokens=True), tokenizer.get_added_tokens_decoder()
        else:
            transformers = sys.modules.get("transformers")  # a transformers tokenizer implies it is imported
            if transformers is None or not isinstance(tokenizer, transformers.PreTrainedTokenizerBase):
                raise TypeError(
                    f"vocab_fingerprint takes a tokenizers.Tokenizer, a transformers tokenizer or a dict, "
                    f"got {type(tokenizer).__name__}."
                )
            vocab, added = tokenizer.get_vocab(), tokenizer.added_tokens_decoder
        special = sorted(t.content for t in added.values() if t.special)
    payload = {"vocab": sorted(vocab.items()), "special": [(t, vocab[t]) for t in special]}
    return hashlib.sha256(json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()).hexdigest()


def as_transformers_tokenizer(tokenizer: Tokenizer, model_max_length: int | None = None) -> PreTrainedTokenizerFast:
    """Wrap a tokenizer trained here for transformers (``save_pretrained``, ``AutoTokenizer.from_pretrained``).

    Its end-of-text token becomes ``eos_token`` and ``bos_token``, its padding token ``pad_token``; the
    vocabulary, and so :func:`vocab_fingerprint`, is unchanged.

    Args:
        tokenizer: a tokenizer holding :data:`EOS_TOKEN` and :data:`PAD_TOKEN`.
        model_max_length: the longest sequence the model takes (its context), if known.
    """
    try:
        from transformers import PreTrainedTokenizerFast
    except ImportError as err:
        raise ImportError("as_transformers_tokenizer needs transformers: pip install 'lightning-kd[llm]'.") from err
    for token in SPECIAL_TOKENS:
        token_id(tokenizer, token)
    extra = {} if model_max_length is None else {"model_max_length": model_max_length}
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token=EOS_TOKEN, bos_token=EOS_TOKEN, pad_token=PAD_TOKEN, **extra
    )

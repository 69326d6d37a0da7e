"""The tokenizer a text data module uses: the model's own (a folder, a ``tokenizer.json``, an object) or the
library's BPE, always as one ``transformers`` tokenizer, so every module encodes, pads and templates one way.

A user distils models that came with a tokenizer; the data must be tokenised with it, with its own special tokens:
its BOS where the tokenizer adds one (Llama's ``<s>``, Gemma's ``<bos>``, OPT's ``</s>``), its EOS to end each
document and response, its pad token — or its EOS where it has none (GPT-2, Qwen). :func:`load_tokenizer` takes
what a recipe or a script can give; :class:`TokenizerProperties` is what a data module then says about it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning_kd.data.tokenizer import EOS_TOKEN, PAD_TOKEN, as_transformers_tokenizer, vocab_fingerprint

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

#: what ``tokenizer:`` of a text data module may be: a path (folder or ``tokenizer.json``), a hub id, an object
TokenizerSource = Any


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as err:
        raise ImportError("text data needs transformers and tokenizers: pip install 'lightning-kd[llm]'.") from err
    return transformers


def load_tokenizer(source: TokenizerSource, local_files_only: bool = True) -> PreTrainedTokenizerBase:
    """A ``transformers`` tokenizer from what a user has.

    Args:
        source: a ``transformers`` tokenizer (returned as is); a ``tokenizers.Tokenizer`` trained here (wrapped:
            ``<|endoftext|>`` is its EOS, ``<|pad|>`` its pad); a model or tokenizer folder (``AutoTokenizer``,
            its ``tokenizer_config.json`` says which tokens are special); a ``tokenizer.json`` file (trained here,
            or beside a ``tokenizer_config.json``, which is then read from its folder); or a hub id (``org/name``),
            found in the local hub cache — or downloaded, with ``local_files_only=False``.
        local_files_only: never download; a path that does not exist is an error naming it.

    Raises:
        FileNotFoundError: the path does not exist, or a folder holds no tokenizer files.
        ValueError: the tokenizer has no end-of-text token to end documents and responses with.
    """
    transformers = _transformers()
    from tokenizers import Tokenizer

    if isinstance(source, transformers.PreTrainedTokenizerBase):
        tokenizer = source
    elif isinstance(source, Tokenizer):
        tokenizer = as_transformers_tokenizer(source)
    elif isinstance(source, (str, os.PathLike)):
        tokenizer = _from_path(Path(source), local_files_only, transformers)
    else:
        raise TypeError(
            f"tokenizer must be a path (a model folder or a tokenizer.json), a transformers tokenizer or a "
            f"tokenizers.Tokenizer, got {type(source).__name__}."
        )
    if tokenizer.eos_token_id is None:
        raise ValueError(
            f"the tokenizer {_name(tokenizer)} has no end-of-text (eos) token, which ends every document and "
            "response: set one (tokenizer.eos_token = '...' and save it), or use the model's own tokenizer folder."
        )
    return tokenizer


def _from_path(path: Path, local_files_only: bool, transformers: Any) -> PreTrainedTokenizerBase:
    from tokenizers import Tokenizer

    if path.is_file():
        if (path.parent / "tokenizer_config.json").is_file():  # a model folder's tokenizer: its roles are there
            return transformers.AutoTokenizer.from_pretrained(os.fspath(path.parent), local_files_only=True)
        raw = Tokenizer.from_file(os.fspath(path))
        if raw.token_to_id(EOS_TOKEN) is None:
            raise ValueError(
                f"{path} is a bare tokenizer.json without {EOS_TOKEN!r}: which of its tokens ends a text is not "
                "recorded in it. Pass the folder that holds it with its tokenizer_config.json (a model folder), or "
                "a transformers tokenizer object."
            )
        return as_transformers_tokenizer(raw) if raw.token_to_id(PAD_TOKEN) is not None else _eos_only(raw)
    if path.is_dir():
        if not any((path / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json")):
            raise FileNotFoundError(
                f"{path} holds no tokenizer (no tokenizer.json or tokenizer_config.json): save one there with "
                "tokenizer.save_pretrained(folder), or point tokenizer: at the folder that has it."
            )
        return transformers.AutoTokenizer.from_pretrained(os.fspath(path), local_files_only=True)
    name = os.fspath(path)
    missing = FileNotFoundError(
        f"tokenizer {name!r} does not exist: give a model folder (with its tokenizer files) or a tokenizer.json; a "
        "hub id (org/name) is looked up in the local hub cache, and downloaded only where the network is reachable."
    )
    if not _looks_like_hub_id(name):
        raise missing
    try:  # a hub id: the local cache first; the hub itself only when allowed
        return transformers.AutoTokenizer.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError):
        if local_files_only:
            raise missing from None
    try:
        return transformers.AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise missing from err


def _looks_like_hub_id(name: str) -> bool:
    """``org/name`` (one slash, no path syntax): what the hub names a repository."""
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "~")) and "\\" not in name


def _eos_only(raw: Any) -> PreTrainedTokenizerBase:
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=raw, eos_token=EOS_TOKEN, bos_token=EOS_TOKEN)


def _name(tokenizer: Any) -> str:
    return repr(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)


def encode_texts(tokenizer: PreTrainedTokenizerBase, texts: list[str], end_with_eos: bool = True) -> list[list[int]]:
    """Each text's token ids framed as its tokenizer frames a text by itself — its BOS where it adds one — and,
    with ``end_with_eos``, ended by EOS (appended unless the tokenizer already ends texts with it)."""
    eos = tokenizer.eos_token_id
    out = tokenizer(list(texts), add_special_tokens=True)["input_ids"]
    if not end_with_eos:
        return [list(ids) for ids in out]
    return [list(ids) if ids and ids[-1] == eos else [*ids, eos] for ids in out]


def special_prefix(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The special tokens the tokenizer puts before a text by itself (``[<s>]`` for Llama, ``[]`` for GPT-2)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    framed = tokenizer("a", add_special_tokens=True)["input_ids"]
    for start in range(len(framed) - len(plain) + 1):
        if framed[start : start + len(plain)] == plain:
            return list(framed[:start])
    return []


def special_suffix(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The special tokens the tokenizer puts after a text by itself (usually none for causal LMs)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    framed = tokenizer("a", add_special_tokens=True)["input_ids"]
    for end in range(len(framed), len(plain) - 1, -1):
        if framed[end - len(plain) : end] == plain:
            return list(framed[end:])
    return []


class TokenizerProperties:
    """What every text data module says about its ``tokenizer`` (a ``transformers`` tokenizer): sizes, special
    ids, fingerprint."""

    tokenizer: PreTrainedTokenizerBase

    @property
    def vocab_size(self) -> int:
        """Size of the tokenizer's vocabulary, added tokens included: the rows the models' embeddings need."""
        return len(self.tokenizer)

    @property
    def eos_token_id(self) -> int:
        """Id of the tokenizer's end-of-text token: ends each document and response."""
        return self.tokenizer.eos_token_id

    @property
    def bos_token_id(self) -> int | None:
        """Id of the token the tokenizer starts a text with, if it adds one."""
        prefix = special_prefix(self.tokenizer)
        return prefix[0] if prefix else None

    @property
    def pad_token_id(self) -> int:
        """Id that fills padded positions (masked out of attention and labels): the pad token, else EOS."""
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else self.tokenizer.eos_token_id

    @property
    def vocab_fingerprint(self) -> str:
        """:func:`~lightning_kd.data.tokenizer.vocab_fingerprint` of the tokenizer: what teacher and student share."""
        return vocab_fingerprint(self.tokenizer)

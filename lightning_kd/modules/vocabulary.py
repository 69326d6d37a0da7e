"""Vocabularies of causal-LM distillation: which columns of the heads the loss compares, and the check, by
identity, that the data, the teacher and the student share one tokenizer (recorded in a config, a checkpoint, or a
model folder's tokenizer files)."""

from __future__ import annotations

import os

import torch
from torch import nn

from lightning_kd.models.language import model_folder, model_vocab_fingerprint

VOCAB_RECORD_KEY = "lightning_kd_vocab"
"""Checkpoint key of the vocabulary a language model was trained on: ``{"fingerprint": sha256, "size": n}``."""


def resolve_vocab_size(
    widths: dict[str, int | None], data_size: int | None, given: int | None, data_name: str
) -> int | None:
    """The number of logit columns the loss compares: ``None`` (all) when every head and the tokenizer agree; the
    tokenizer's size when a head is padded past it (the padding ids are left out); an error otherwise."""
    known = {who: w for who, w in widths.items() if w is not None}
    size = given if given is not None else data_size
    if size is not None:
        short = {who: w for who, w in known.items() if w < size}
        if short:
            who, w = next(iter(short.items()))
            source = f"vocab_size={given}" if given is not None else f"the tokenizer of {data_name} ({size} tokens)"
            raise ValueError(
                f"the {who}'s lm head has {w} outputs but {source} needs {size}: the {who} was built for another, "
                f"smaller vocabulary. Build it with vocab_size={size} (or the tokenizer it was trained with)."
            )
        return None if all(w == size for w in known.values()) else size
    if len(set(known.values())) > 1:
        raise ValueError(
            f"the lm heads have different widths ({', '.join(f'{k} {v}' for k, v in known.items())}) and the data "
            "module does not say its tokenizer's size: pass vocab_size=<len(tokenizer)> to compare the shared "
            "columns (padded heads), or use models built for the same tokenizer."
        )
    return None


def check_same_vocab(records: list[tuple[str, str | None, str]], data_name: str) -> None:
    """Refuse models and data whose vocabulary fingerprints differ. ``records``: ``(who, fingerprint, source)``."""
    known = [r for r in records if r[1]]
    for who, fp, source in known[1:]:
        ref_who, ref_fp, ref_source = known[0]
        if fp != ref_fp:
            raise ValueError(
                f"the {who}'s vocabulary ({source}: sha256 {fp[:12]}…) is not the {ref_who}'s ({ref_source}: "
                f"sha256 {ref_fp[:12]}…). Tokenizers are compared by identity, not size: two tokenizers with the "
                "same number of tokens map text to different ids, and distilling across them trains on garbage. "
                f"Use the tokenizer the {who} was trained with for {data_name}{_folder_hint(source, ref_source)}, or "
                f"a {who} trained on this one. For a teacher of another vocabulary, use cross-tokenizer distillation: "
                "model CrossTokenizerDistillation with data PackedTextDataModule(teacher_tokenizer=<the teacher's "
                "tokenizer>), recipe configs/lm/kd_cross_tokenizer.yaml (docs/language_models.md)."
            )


def _folder_hint(*sources: str) -> str:
    """`` (data: tokenizer: <folder>)`` when one side's vocabulary comes from a model folder's tokenizer."""
    for source in sources:
        if source.startswith("the tokenizer in "):
            return f" (its data module's tokenizer: {source[len('the tokenizer in ') :]})"
    return ""


def read_vocab_record(path: str | None) -> str | None:
    """The vocabulary fingerprint a lightning-kd checkpoint recorded, if the file has one."""
    if path is None:
        return None
    try:
        record = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get(VOCAB_RECORD_KEY)
    except Exception:  # noqa: BLE001 - the weights loader has already said what is wrong with the file
        return None
    return record.get("fingerprint") if isinstance(record, dict) else None


def vocab_fingerprint_of(value: str) -> str:
    """A vocabulary fingerprint given directly (64 hex digits) or as a tokenizer file/folder to compute it from."""
    if len(value) == 64 and all(c in "0123456789abcdef" for c in value.lower()):
        return value.lower()
    path = os.path.join(value, "tokenizer.json") if os.path.isdir(value) else value
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"teacher_vocab={value!r} is neither a sha256 vocabulary fingerprint nor a tokenizer.json file or a folder "
            "holding one (a transformers model folder saved with its tokenizer)."
        )
    from tokenizers import Tokenizer

    from lightning_kd.data.tokenizer import vocab_fingerprint

    return vocab_fingerprint(Tokenizer.from_file(path))


def model_vocab(model: nn.Module | None) -> tuple[str | None, str]:
    """``(fingerprint, where it comes from)`` of the vocabulary a model was built for: the one recorded in its
    config (``lightning_kd_vocab_fingerprint``), else that of the tokenizer files in the folder it was loaded from
    (a user's model folder); ``(None, "")`` when nothing says."""
    if model is None:
        return None, ""
    recorded = model_vocab_fingerprint(model)
    if recorded:
        return recorded, "its config"
    folder = model_folder(model)
    if folder is None or not any((folder / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json")):
        return None, ""
    from transformers import AutoTokenizer

    from lightning_kd.data.tokenizer import vocab_fingerprint

    return vocab_fingerprint(AutoTokenizer.from_pretrained(folder, local_files_only=True)), f"the tokenizer in {folder}"

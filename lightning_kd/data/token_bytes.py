"""What text each token of a tokenizer stands for, as bytes: the ground both sides of cross-tokenizer distillation
stand on (:mod:`lightning_kd.data.alignment`).

A token's string in a vocabulary is not its text: byte-level BPE (GPT-2, Llama 3, Qwen) writes bytes as printable
characters (``Ġ`` for a space, ``Ċ`` for a newline), SentencePiece-style vocabularies (Llama 2, Mistral, Gemma)
write a space as ``▁`` and unknown bytes as ``<0x0A>``. :func:`token_byte_strings` undoes each scheme, so two
vocabularies can be compared by what their tokens *mean* (:func:`shared_vocab_map`) and a token sequence can be
placed on the bytes of its text (its byte offsets, :mod:`lightning_kd.data.alignment`).

Special tokens stand for no text; they map to the other side's token of the same role (EOS to EOS, BOS to BOS,
PAD to PAD, UNK to UNK) and are otherwise unmapped.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

_SPECIAL_ROLES = ("eos_token_id", "bos_token_id", "pad_token_id", "unk_token_id")


@lru_cache(maxsize=1)
def _unicode_to_byte() -> dict[str, int]:
    """The inverse of byte-level BPE's byte → printable character table (GPT-2, arXiv:1908.09203's released
    encoder): printable Latin-1 bytes stand for themselves, the other 68 bytes for ``chr(256 + n)`` in byte order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[chr(b)] = b
        else:
            table[chr(256 + extra)] = b
            extra += 1
    return table


def byte_scheme(tokenizer: Any) -> str:
    """How the vocabulary writes text: ``byte_level`` (GPT-2-style), ``metaspace`` (``▁`` for a space, SentencePiece:
    a ``Metaspace`` pre-tokenizer, or the ``Prepend``/``Replace`` normalizer and ``Replace`` decoder that Llama 2,
    Mistral and Gemma ship) or ``plain`` (token strings are the text), read from the fast tokenizer's pre-tokenizer,
    normalizer and decoder."""
    backend = getattr(tokenizer, "backend_tokenizer", None) or (tokenizer if hasattr(tokenizer, "to_str") else None)
    if backend is None:
        return "plain"
    parts = json.loads(backend.to_str())
    spec = json.dumps({k: parts.get(k) for k in ("pre_tokenizer", "decoder", "normalizer")}, ensure_ascii=False)
    if '"ByteLevel"' in spec:
        return "byte_level"
    if '"Metaspace"' in spec or "\u2581" in spec:
        return "metaspace"
    return "plain"


def _is_byte_fallback(token: str) -> bool:
    """``<0x0A>``: a SentencePiece byte-fallback token."""
    return len(token) == 6 and token.startswith("<0x") and token.endswith(">")


def _metaspace_bytes(token: str) -> bytes:
    if _is_byte_fallback(token):
        try:
            return bytes([int(token[3:5], 16)])
        except ValueError:
            pass
    return token.replace("\u2581", " ").encode("utf-8")


def token_byte_strings(tokenizer: Any) -> list[bytes | None]:
    """The bytes each id of ``tokenizer`` (a ``transformers`` tokenizer) stands for; ``None`` for special tokens.

    Added tokens that are not special (a user's extra words) stand for their own text.

    Example:
        >>> from lightning_kd.data.tokenizer import as_transformers_tokenizer, stdlib_tokenizer  # doctest: +SKIP
        >>> tok = as_transformers_tokenizer(stdlib_tokenizer())  # doctest: +SKIP
        >>> token_byte_strings(tok)[tok.convert_tokens_to_ids("Ġdef")]  # doctest: +SKIP
        b' def'
    """
    scheme = byte_scheme(tokenizer)
    table = _unicode_to_byte()
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    out: list[bytes | None] = [None] * len(tokenizer)
    for token, index in tokenizer.get_vocab().items():
        if index >= len(out):
            out.extend([None] * (index + 1 - len(out)))
        if index in added:
            out[index] = None if added[index].special else token.encode("utf-8")
        elif scheme == "byte_level":
            try:
                out[index] = bytes(table[c] for c in token)
            except KeyError:  # not written in the byte alphabet (a merged-in plain token): its own text
                out[index] = token.encode("utf-8")
        elif scheme == "metaspace":
            out[index] = _metaspace_bytes(token)
        else:
            out[index] = token.encode("utf-8")
    for role in _SPECIAL_ROLES:  # a special token declared by role but not flagged special in the vocabulary
        index = getattr(tokenizer, role, None)
        if isinstance(index, int) and 0 <= index < len(out):
            out[index] = None
    return out


def byte_lengths(tokenizer: Any) -> np.ndarray:
    """``(V,)`` int64: how many bytes of text each id stands for (0 for special tokens)."""
    return np.asarray([0 if b is None else len(b) for b in token_byte_strings(tokenizer)], dtype=np.int64)


def _ordinary_first(tokenizer: Any) -> list[int]:
    """Ids with ordinary tokens before byte-fallback ones (``,`` before ``<0x2C>``: Llama 2 and Mistral put the 256
    byte tokens at ids 3–258), so where two tokens stand for the same bytes the ordinary one is used."""
    fallback = {i for t, i in tokenizer.get_vocab().items() if _is_byte_fallback(t)}
    return sorted(range(len(tokenizer)), key=lambda i: (i in fallback, i))


def _by_bytes(tokenizer: Any) -> dict[bytes, int]:
    """``bytes -> id`` of a vocabulary, ordinary tokens winning over byte-fallback ones."""
    strings, out = token_byte_strings(tokenizer), {}
    for index in _ordinary_first(tokenizer):
        raw = strings[index]
        if raw is not None and raw not in out:
            out[raw] = index
    return out


def _is_special(tokenizer: Any, index: int) -> bool:
    added = (getattr(tokenizer, "added_tokens_decoder", {}) or {}).get(index)
    return (added is not None and added.special) or index in {getattr(tokenizer, r, None) for r in _SPECIAL_ROLES}


def shared_vocab_map(student: Any, teacher: Any) -> np.ndarray:
    """``(V_teacher,)`` int64: for each teacher id, the student id that stands for the same bytes, else ``-1``.

    A token written the same way in both vocabularies maps to its twin first (so identical tokenizers give the
    identity, byte-fallback tokens included); then by bytes, ordinary tokens before byte-fallback ones (``,``
    before ``<0x2C>``). Special tokens map to the same special token (``<|im_end|>`` in both), else by role (EOS →
    EOS, BOS → BOS, PAD → PAD, UNK → UNK). The map is one-to-one: a teacher token whose bytes' student token is
    already taken (``<0x2C>`` after ``,``) stays unmapped, so no student column receives two tokens' mass.
    """
    by_bytes = _by_bytes(student)
    out = np.full(len(teacher), -1, dtype=np.int64)
    taken: set[int] = set()
    t_bytes, s_bytes, s_vocab = token_byte_strings(teacher), token_byte_strings(student), student.get_vocab()
    for token, index in teacher.get_vocab().items():  # the same entry in both vocabularies
        twin = s_vocab.get(token)
        if twin is not None and index < len(out) and t_bytes[index] is not None and s_bytes[twin] == t_bytes[index]:
            out[index] = twin
            taken.add(twin)
    for index in _ordinary_first(teacher):
        if out[index] >= 0:
            continue
        raw = t_bytes[index]
        target = by_bytes.get(raw) if raw is not None else None
        if target is not None and target not in taken:
            out[index] = target
            taken.add(target)
    s_special = {t: i for t, i in student.get_vocab().items() if i < len(student) and _is_special(student, i)}
    for token, index in teacher.get_vocab().items():  # the same special token in both (<|im_end|>, <eos>)
        target = s_special.get(token)
        if target is not None and _is_special(teacher, index) and out[index] < 0 and target not in taken:
            out[index] = target
            taken.add(target)
    for role in _SPECIAL_ROLES:
        t_id, s_id = getattr(teacher, role, None), getattr(student, role, None)
        if isinstance(t_id, int) and isinstance(s_id, int) and out[t_id] < 0 and s_id not in taken:
            out[t_id] = s_id
            taken.add(s_id)
    return out


def first_piece_map(student: Any, teacher: Any) -> np.ndarray:
    """:func:`shared_vocab_map`, and each teacher token the student lacks mapped to the student's first token of the
    same text: the student tokenizer is run on the teacher token's text (``Ġreturn`` → `` return`` → the student's
    ``Ġr`` + ``eturn`` → ``Ġr``), so the target is the token the student itself would predict next. Where that
    cannot be asked (bytes that are not whole UTF-8 characters; a SentencePiece-style student, which adds its own
    leading space, on a text that does not start with one) it is the student's longest token the text starts with.
    Many-to-one: a student column receives the mass of every teacher token whose text it begins. Teacher tokens
    standing for no text stay unmapped unless they map by name or role."""
    out = shared_vocab_map(student, teacher)
    by_bytes = _by_bytes(student)
    longest = max((len(b) for b in by_bytes), default=0)
    dummy_space = byte_scheme(student) == "metaspace"
    asked: dict[int, str] = {}
    for index, raw in enumerate(token_byte_strings(teacher)):
        if raw is None or out[index] >= 0:
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is not None and (not dummy_space or text.startswith(" ")):
            asked[index] = text[1:] if dummy_space else text
            continue
        for size in range(min(len(raw), longest), 0, -1):
            target = by_bytes.get(raw[:size])
            if target is not None:
                out[index] = target
                break
    if asked:
        firsts = student(list(asked.values()), add_special_tokens=False)["input_ids"]
        for index, ids in zip(asked, firsts):
            if ids:
                out[index] = ids[0]
    return out


MAPS = {"shared": shared_vocab_map, "first_piece": first_piece_map}


def cached_vocab_map(
    student: Any, teacher: Any, cache_dir: str | os.PathLike | None, kind: str = "shared"
) -> np.ndarray:
    """:func:`shared_vocab_map` (``kind="shared"``) or :func:`first_piece_map` (``"first_piece"``), saved once under
    ``cache_dir`` as ``vocab-map-v3-<kind>-<student fp>-<teacher fp>.npy`` (both vocabulary fingerprints in the name,
    so another pair never reads it); ``None``: not saved."""
    from lightning_kd.data.tokenizer import vocab_fingerprint

    if kind not in MAPS:
        raise ValueError(f"vocabulary map kind must be one of {', '.join(MAPS)}, got {kind!r}.")
    if cache_dir is None:
        return MAPS[kind](student, teacher)
    tag = f"v3-{kind}-"  # v3: first pieces from the student's own tokenization; v2: byte-fallback twins, normalizers
    path = Path(cache_dir) / f"vocab-map-{tag}{vocab_fingerprint(student)[:16]}-{vocab_fingerprint(teacher)[:16]}.npy"
    if path.is_file():
        found = np.load(path)
        if found.shape == (len(teacher),) and found.max(initial=-1) < len(student):
            return found
        raise ValueError(
            f"{path} does not hold a vocabulary map for these tokenizers (shape {found.shape}, expected "
            f"({len(teacher)},)): it was written by something else. It is not overwritten: move it away."
        )
    out = MAPS[kind](student, teacher)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.npy")
    np.save(tmp, out)
    os.replace(tmp, path)
    return out

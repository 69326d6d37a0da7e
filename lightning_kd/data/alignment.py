"""Two tokenizations of one text, placed on its bytes and aligned: which student prediction and which teacher
prediction are about the same next piece of text.

Every token is given the byte span of the text it stands for (:func:`token_spans`): from the bytes its id stands
for (:func:`~lightning_kd.data.token_bytes.token_byte_strings`), laid end to end, which is exact whatever the
tokenizer's offset conventions (``trim_offsets`` drops the space of ``Ġword`` from its offsets); a document whose
tokens do not spell it (a normalising tokenizer: NFKC, lower-casing) falls back to the tokenizer's own character
offsets. Special tokens at a text's start (BOS) take no bytes; the end-of-text token that closes each document
takes one virtual byte, so documents line up on both sides.

**Aligned positions** (:func:`aligned_pairs`): a piece of text where *both* tokenizations start a token. The text
before it is the same for both models, so the student's prediction at the token before and the teacher's
prediction at its token before are two distributions over "what comes next" given the same text. A word split
1:2, 2:1 or 2:3 aligns at its start and at the next common boundary; the tokens inside it have no teacher
counterpart (they still get the student's cross-entropy). Identical tokenizers align every position. This is the
span rule of ULD/GOLD-style cross-tokenizer KD (Boizard et al. 2024, arXiv:2402.12030), with the spans found from
exact byte offsets. Pure numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np


class TokenSpans(NamedTuple):
    """A token stream placed on the bytes of its text: ``ids``, ``starts`` and ``ends`` (byte offsets), ``(T,)``
    int64 each; how many documents needed the tokenizer's offsets instead of their tokens' bytes; and
    ``unaligned`` ``(T,)`` bool (or ``None``): tokens that stand for more than their span and must not be aligned
    (a SentencePiece token carrying the dummy prefix space, ``▁def`` for a text that starts ``def``)."""

    ids: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    offset_fallbacks: int = 0
    unaligned: np.ndarray | None = None


def _char_to_byte(text: str) -> np.ndarray:
    """``(len(text) + 1,)`` byte offset of each character offset."""
    widths = np.fromiter((len(c.encode("utf-8")) for c in text), dtype=np.int64, count=len(text))
    return np.concatenate([[0], np.cumsum(widths)])


def _literal(tokenizer: Any, index: int) -> bytes:
    token = tokenizer.convert_ids_to_tokens(index)
    return token.encode("utf-8") if isinstance(token, str) else b""


def _document_widths(
    tokenizer: Any, text: str, ids: list[int], strings: list[bytes | None], prefix: int, closed: bool
) -> tuple[np.ndarray, bool, bool]:
    """Bytes of text each of a document's tokens covers (prefix specials 0, the closing EOS 1); whether the
    tokenizer's offsets had to be used; whether the first text token carries a dummy prefix space."""
    body = slice(prefix, len(ids) - 1 if closed else len(ids))
    pieces = [strings[i] if 0 <= i < len(strings) else None for i in ids[body]]
    widths = np.zeros(len(ids), dtype=np.int64)
    widths[body] = [0 if p is None else len(p) for p in pieces]
    if closed:
        widths[-1] = 1
    raw, spelt = text.encode("utf-8"), b"".join(p for p in pieces if p is not None)
    if spelt == raw:  # the tokens spell the text byte for byte (an <unk> or a normalised byte would not)
        return widths, False, False
    if spelt == b" " + raw and widths[prefix] > 0:
        widths[prefix] -= 1  # SentencePiece's dummy prefix: "▁Hello" for "Hello" at a text's start
        return widths, False, True
    if any(p is None for p in pieces):  # a chat template's markers (<|im_start|>) are written in the text
        literal = [p if p is not None else _literal(tokenizer, i) for p, i in zip(pieces, ids[body])]
        if b"".join(literal) == raw:
            widths[body] = [len(p) for p in literal]
            return widths, False, False
    size = len(raw)
    # the tokens do not spell the text (normalisation): the tokenizer's character offsets, made contiguous
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    if list(enc["input_ids"]) != list(ids[body]):
        raise ValueError(
            f"the tokenizer {getattr(tokenizer, 'name_or_path', '')!r} gives other ids for a text with and without "
            "its special tokens; cross-tokenizer alignment cannot place its tokens on the text."
        )
    char_bytes = _char_to_byte(text)
    ends = np.maximum.accumulate(np.asarray([char_bytes[e] for _, e in enc["offset_mapping"]] or [0], dtype=np.int64))
    ends[-1] = size if len(ends) else 0
    widths[body] = np.diff(np.concatenate([[0], ends]))[: len(ids[body])]
    return widths, True, False


def token_spans(
    tokenizer: Any, texts: Sequence[str], encoded: Sequence[list[int]], prefix: int, closed: bool | None = None
) -> TokenSpans:
    """The documents' concatenated token stream with each token's byte span in the concatenated text.

    Args:
        tokenizer: the ``transformers`` tokenizer that encoded them.
        texts: the documents.
        encoded: each document's ids as :func:`~lightning_kd.data.text_tokenizer.encode_texts` frames them: the
            tokenizer's ``prefix`` special tokens (BOS), the text, then end-of-text.
        prefix: how many special tokens the tokenizer puts before a text.
        closed: whether each document's last id is its end-of-text (one virtual byte); ``None``: where it is the
            tokenizer's EOS.

    Document ``d`` occupies bytes ``[O_d, O_d + n_d)`` and its end-of-text token ``[O_d + n_d, O_d + n_d + 1)``,
    the same for every tokenizer of the same texts.
    """
    from lightning_kd.data.token_bytes import token_byte_strings

    strings = token_byte_strings(tokenizer)
    eos = tokenizer.eos_token_id
    widths, fallbacks, unaligned, at = [], 0, [], 0
    for text, ids in zip(texts, encoded):
        end = bool(ids) and ids[-1] == eos if closed is None else closed
        w, fell_back, dummy = _document_widths(tokenizer, text, ids, strings, prefix, closed=end)
        widths.append(w)
        fallbacks += fell_back
        if dummy:
            unaligned.append(at + prefix)
        at += len(ids)
    ids = np.concatenate([np.asarray(i, dtype=np.int64) for i in encoded]) if encoded else np.zeros(0, np.int64)
    width = np.concatenate(widths) if widths else np.zeros(0, np.int64)
    ends = np.cumsum(width)
    mask = np.zeros(len(ids), dtype=bool)
    mask[np.asarray(unaligned, dtype=np.int64)] = True
    return TokenSpans(ids, ends - width, ends, fallbacks, mask)


def _alignable(spans: TokenSpans) -> np.ndarray:
    ok = spans.ends > spans.starts
    return ok if spans.unaligned is None else ok & ~spans.unaligned


def aligned_pairs(student: TokenSpans, teacher: TokenSpans) -> tuple[np.ndarray, np.ndarray]:
    """``(i, j)``: the tokens (indices into each stream) that start at the same byte, both covering text.

    Student position ``i − 1`` and teacher position ``j − 1`` then predict the same next piece of text from the
    same text before it. Tokens that take no bytes (BOS, other specials) never align, nor do those marked
    ``unaligned``.

    Example:
        >>> s = TokenSpans(np.arange(3), np.array([0, 2, 3]), np.array([2, 3, 5]))  # "ab" "c" "de"
        >>> t = TokenSpans(np.arange(2), np.array([0, 3]), np.array([3, 5]))        # "abc" "de"
        >>> aligned_pairs(s, t)
        (array([0, 2]), array([0, 1]))
    """
    s_real = np.flatnonzero(_alignable(student))
    t_real = np.flatnonzero(_alignable(teacher))
    _, si, ti = np.intersect1d(student.starts[s_real], teacher.starts[t_real], assume_unique=True, return_indices=True)
    return s_real[si], t_real[ti]


class RowAlignment(NamedTuple):
    """Packed student rows and what each needs of the teacher: ``t_start``/``t_stop`` (``(R,)``) bound the teacher
    tokens that lie wholly inside the row's text; ``pair_row``, ``s_pos``, ``t_pos`` (``(P,)``) list the aligned
    predictions by row, as positions inside the student row and inside the row's teacher slice."""

    t_start: np.ndarray
    t_stop: np.ndarray
    pair_row: np.ndarray
    s_pos: np.ndarray
    t_pos: np.ndarray


def align_rows(student: TokenSpans, teacher: TokenSpans, seq_len: int, rows: int) -> RowAlignment:
    """Cut the student stream into ``rows`` rows of ``seq_len`` tokens and align each with the teacher tokens of
    the same text (a teacher token crossing the row's edge is left out: the teacher sees only the row's text)."""
    first = np.arange(rows, dtype=np.int64) * seq_len
    a, b = student.starts[first], student.ends[first + seq_len - 1]
    t_start = np.searchsorted(teacher.starts, a, side="left")
    t_stop = np.maximum(np.searchsorted(teacher.ends, b, side="right"), t_start)
    i, j = aligned_pairs(student, teacher)
    row = i // seq_len
    ok = (i % seq_len != 0) & (row < rows)  # the prediction (i − 1) and its target (i) in one row
    row_c = np.minimum(row, rows - 1)
    ok &= (j - 1 >= t_start[row_c]) & (j < t_stop[row_c])
    i, j, row = i[ok], j[ok], row[ok]
    return RowAlignment(t_start, t_stop, row, i - 1 - row * seq_len, j - 1 - t_start[row])


def align_texts(student_tokenizer: Any, teacher_tokenizer: Any, text: str) -> tuple[list[tuple[int, int]], Any]:
    """The aligned ``(student position, teacher position)`` predictions of one text encoded by each tokenizer
    without special tokens, and the two id lists: a way to look at (and test) an alignment by hand."""
    out = []
    for tok in (student_tokenizer, teacher_tokenizer):
        ids = list(tok(text, add_special_tokens=False)["input_ids"])
        out.append((ids, token_spans(tok, [text], [ids], prefix=0)))
    i, j = aligned_pairs(out[0][1], out[1][1])
    keep = (i > 0) & (j > 0)
    return list(zip((i[keep] - 1).tolist(), (j[keep] - 1).tolist())), (out[0][0], out[1][0])

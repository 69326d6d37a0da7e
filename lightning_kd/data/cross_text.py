"""Packed text tokenized twice, for a teacher and a student that do not share a vocabulary.

:class:`~lightning_kd.data.text.PackedTextDataModule` with ``teacher_tokenizer`` set packs the student's token
stream as usual and, per sequence, adds the teacher's tokens of the same text and the aligned predictions
(:mod:`lightning_kd.data.alignment`), all computed once in ``setup`` (and cached) and sliced per batch in the
loader's workers; the training step only gathers rows. A batch then holds, beside the student's
``input_ids``/``attention_mask``/``labels`` ``(B, L)``:

- ``teacher_input_ids``, ``teacher_attention_mask`` ``(B, L_t)``: the teacher's tokens of each sequence's text
  (``L_t`` the batch's longest, padded with the teacher's pad id, mask 0);
- ``align`` ``(B, 2, A)`` int64: row 0 the student positions, row 1 the teacher positions whose next-token
  predictions are about the same piece of text (``-1`` padding);
- ``token_bytes`` ``(B, L)`` int64: the bytes of text each student token stands for (bits per byte in evaluation).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from lightning_kd.data.alignment import RowAlignment, TokenSpans, align_rows, token_spans
from lightning_kd.data.text_corpus import TextCorpus
from lightning_kd.data.text_tokenizer import encode_texts, special_prefix


def spans_of(tokenizer: Any, corpus: TextCorpus, cache_dir: Path) -> TokenSpans:
    """:func:`~lightning_kd.data.alignment.token_spans` of a corpus, cached under ``cache_dir`` by the corpus's
    content hash and the tokenizer's vocabulary fingerprint and framing."""
    from lightning_kd.data.tokenizer import vocab_fingerprint

    prefix = special_prefix(tokenizer)
    key = hashlib.sha256(f"{corpus.sha256}|{vocab_fingerprint(tokenizer)}|{prefix}".encode()).hexdigest()[:24]
    path = cache_dir / f"spans-v2-{key}.npz"  # v2: the layout of lightning_kd.data.alignment.token_spans
    if path.is_file():
        with np.load(path) as f:
            return TokenSpans(f["ids"], f["starts"], f["ends"], int(f["fallbacks"]), f["unaligned"])
    texts = corpus.texts()
    encoded: list[list[int]] = []
    for start in range(0, len(texts), 64):
        encoded += encode_texts(tokenizer, texts[start : start + 64])
    spans = token_spans(tokenizer, texts, encoded, len(prefix))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.npz")
    np.savez(
        tmp, ids=spans.ids, starts=spans.starts, ends=spans.ends, fallbacks=spans.offset_fallbacks,
        unaligned=spans.unaligned,
    )  # fmt: skip
    os.replace(tmp, path)
    return spans


class AlignedSequences(Dataset):
    """Student rows of a packed stream with their teacher tokens and aligned predictions (see the module
    docstring); ``__getitems__`` builds whole batches."""

    def __init__(
        self,
        student: TokenSpans,
        teacher: TokenSpans,
        seq_len: int,
        rows: np.ndarray,
        teacher_pad_id: int,
        with_indices: bool = False,
    ) -> None:
        n_rows = len(student.ids) // seq_len
        self.seq_len, self.rows, self.pad, self.with_indices = seq_len, rows, teacher_pad_id, with_indices
        self.s_ids = student.ids[: n_rows * seq_len].reshape(n_rows, seq_len)
        self.s_bytes = (student.ends - student.starts)[: n_rows * seq_len].reshape(n_rows, seq_len)
        self.t_ids = teacher.ids
        self.align: RowAlignment = align_rows(student, teacher, seq_len, n_rows)
        self.pair_bounds = np.searchsorted(self.align.pair_row, np.arange(n_rows + 1))
        self.ids = self.s_ids[rows]  # what the resume key and the fingerprint read

    def __len__(self) -> int:
        return len(self.rows)

    def stats(self) -> dict[str, float]:
        """``aligned``: share of the student's predictions that have a teacher counterpart; ``teacher_per_student``:
        teacher tokens per student token over the rows."""
        rows = self.rows
        pairs = int((self.pair_bounds[rows + 1] - self.pair_bounds[rows]).sum())
        teacher = int((self.align.t_stop[rows] - self.align.t_start[rows]).sum())
        predictions = len(rows) * (self.seq_len - 1)
        return {
            "aligned": pairs / max(1, predictions),
            "teacher_per_student": teacher / max(1, len(rows) * self.seq_len),
        }

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {k: v[0] for k, v in self.__getitems__([index]).items()}

    def __getitems__(self, indices: list[int]) -> dict[str, Tensor]:
        rows = self.rows[np.asarray(indices)]
        input_ids = torch.from_numpy(self.s_ids[rows].astype(np.int64))
        lo, hi = self.align.t_start[rows], self.align.t_stop[rows]
        width = max(1, int((hi - lo).max()))
        t_ids = np.full((len(rows), width), self.pad, dtype=np.int64)
        t_mask = np.zeros((len(rows), width), dtype=np.int64)
        p_lo, p_hi = self.pair_bounds[rows], self.pair_bounds[rows + 1]
        align = np.full((len(rows), 2, max(1, int((p_hi - p_lo).max()))), -1, dtype=np.int64)
        for k in range(len(rows)):
            n = hi[k] - lo[k]
            t_ids[k, :n], t_mask[k, :n] = self.t_ids[lo[k] : hi[k]], 1
            m = p_hi[k] - p_lo[k]
            align[k, 0, :m] = self.align.s_pos[p_lo[k] : p_hi[k]]
            align[k, 1, :m] = self.align.t_pos[p_lo[k] : p_hi[k]]
        batch = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "labels": input_ids.clone(),
            "teacher_input_ids": torch.from_numpy(t_ids),
            "teacher_attention_mask": torch.from_numpy(t_mask),
            "align": torch.from_numpy(align),
            "token_bytes": torch.from_numpy(self.s_bytes[rows].astype(np.int64)),
        }
        if self.with_indices:
            batch["index"] = torch.as_tensor(indices, dtype=torch.int64)
        return batch


class TeacherTokenization:
    """What :class:`~lightning_kd.data.text.PackedTextDataModule` adds for a teacher of another vocabulary:
    its tokenizer, fingerprint, size and special ids, the shared-token map, and the aligned datasets."""

    _teacher_tokenizer: Any
    teacher_bpe_vocab_size: int | None
    cache_dir: Path
    train_corpus: TextCorpus
    min_frequency: int

    @property
    def cross_tokenizer(self) -> bool:
        """Whether batches carry a second (teacher) tokenization."""
        return self._teacher_tokenizer is not None or self.teacher_bpe_vocab_size is not None

    @property
    def teacher_tokenizer(self) -> Any:
        """The teacher's ``transformers`` tokenizer (``None`` without a cross-tokenizer teacher)."""
        if self._teacher_tokenizer is None and self.teacher_bpe_vocab_size is not None:
            from lightning_kd.data.tokenizer import as_transformers_tokenizer, train_bpe_tokenizer

            bpe = train_bpe_tokenizer(
                self.train_corpus, self.teacher_bpe_vocab_size, self.cache_dir, self.min_frequency
            )
            self._teacher_tokenizer = as_transformers_tokenizer(bpe)
        return self._teacher_tokenizer

    @property
    def teacher_vocab_fingerprint(self) -> str | None:
        """Fingerprint of the teacher's vocabulary, checked against the teacher model."""
        from lightning_kd.data.tokenizer import vocab_fingerprint

        return None if self.teacher_tokenizer is None else vocab_fingerprint(self.teacher_tokenizer)

    @property
    def teacher_vocab_size(self) -> int | None:
        return None if self.teacher_tokenizer is None else len(self.teacher_tokenizer)

    @property
    def teacher_pad_token_id(self) -> int:
        tok = self.teacher_tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def vocab_map(self, kind: str = "shared") -> np.ndarray:
        """``(V_teacher,)``: the student id of each teacher token that stands for the same bytes (``first_piece``:
        or for the start of its bytes), else ``-1`` (:func:`~lightning_kd.data.token_bytes.cached_vocab_map`,
        saved under ``cache_dir``)."""
        from lightning_kd.data.token_bytes import cached_vocab_map

        return cached_vocab_map(self.tokenizer, self.teacher_tokenizer, self.cache_dir, kind)  # type: ignore[attr-defined]

    def aligned_split(self, corpus: TextCorpus, rows: np.ndarray, seq_len: int, with_indices: bool) -> AlignedSequences:
        student = spans_of(self.tokenizer, corpus, self.cache_dir)  # type: ignore[attr-defined]
        teacher = spans_of(self.teacher_tokenizer, corpus, self.cache_dir)
        return AlignedSequences(student, teacher, seq_len, rows, self.teacher_pad_token_id, with_indices)

    def teacher_sample_ids(self) -> np.ndarray:
        """Teacher token ids of (up to) the first 256 training sequences."""
        split = self.splits["train"]  # type: ignore[attr-defined]
        if isinstance(split, list):  # prompt/response examples
            return np.concatenate([e["teacher_ids"] for e in split[:256]])
        lo, hi = split.align.t_start[split.rows[:256]], split.align.t_stop[split.rows[:256]]
        return np.concatenate([split.t_ids[a:b] for a, b in zip(lo, hi)]) if len(lo) else np.zeros(0, np.int64)

    def teacher_longest(self) -> int:
        """The most teacher tokens any sequence of any split gives the teacher (its context must hold them)."""
        self.setup()  # type: ignore[attr-defined]
        longest = 0
        for split in self.splits.values():  # type: ignore[attr-defined]
            if isinstance(split, list):
                longest = max([longest, *(len(e["teacher_ids"]) for e in split)])
            elif len(split.rows):
                longest = max(longest, int((split.align.t_stop - split.align.t_start)[split.rows].max()))
        return longest

    def mapped_share(self, kind: str = "shared") -> float:
        """Share of the teacher's tokens in (a sample of) the training text whose id has a student counterpart
        under the ``kind`` of map."""
        ids = self.teacher_sample_ids()
        return float((self.vocab_map(kind)[ids] >= 0).mean()) if len(ids) else 0.0

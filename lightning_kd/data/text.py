"""Text data for causal-LM distillation: a corpus packed into equal sequences, and what text data modules share.

Text data modules (this one and :class:`~lightning_kd.data.prompt_response.PromptResponseDataModule`) yield
dict batches ``{"input_ids", "attention_mask", "labels"}``, each ``(B, L)`` int64. ``labels`` are
``input_ids`` with ``-100`` where no loss is taken (padding, prompt tokens) and are **not shifted**: the model
shifts once (position ``t``'s logits are scored against ``labels[:, t + 1]``), as transformers' causal-LM
models do.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader

from lightning_kd.data.cross_text import AlignedSequences, TeacherTokenization, spans_of
from lightning_kd.data.fingerprint import tokens_fingerprint
from lightning_kd.data.packed import IGNORE_INDEX, PackedSequences, keep_batch, seeded_loader, spread_rows
from lightning_kd.data.rank_shards import RankShardSampler, rank_rows
from lightning_kd.data.resume import ResumableData
from lightning_kd.data.sampling import ReplayShuffleSampler
from lightning_kd.data.text_corpus import TextCorpus, stdlib_corpus
from lightning_kd.data.text_tokenizer import (
    TokenizerProperties,
    TokenizerSource,
    encode_texts,
    load_tokenizer,
    special_prefix,
)
from lightning_kd.data.tokenizer import as_transformers_tokenizer, train_bpe_tokenizer

__all__ = ["IGNORE_INDEX", "PackedSequences", "PackedTextDataModule", "seeded_loader", "spread_rows"]


class PackedTextDataModule(ResumableData, TeacherTokenization, TokenizerProperties, L.LightningDataModule):
    """A corpus as one token stream cut into equal sequences: causal-LM pre-training data, no padding.

    Documents (files) are tokenised with the models' tokenizer (``tokenizer``: a model folder, a
    ``tokenizer.json`` or an object) or, by default, a byte-level BPE tokenizer trained on the training files; each
    is framed as that tokenizer frames a text (its BOS, where it adds one) and followed by its end-of-text token,
    concatenated, and cut into ``seq_len`` tokens per sequence (the stream's tail shorter than ``seq_len`` is
    dropped). A sequence may span two documents, separated by end-of-text.
    Validation files are held out by a hash of their path (:meth:`~lightning_kd.data.text_corpus.TextCorpus.split`).
    The token streams are cached as ``.npy`` (uint16 when the vocabulary allows) under ``cache_dir``, keyed by
    the split's content hash and the tokenizer's fingerprint (packing is a reshape, so ``seq_len`` is free to
    change). ``vocab_size``, ``eos_token_id``, ``pad_token_id``, ``vocab_fingerprint`` and ``tokenizer`` are
    available before ``setup`` (the tokenizer is trained or loaded on first use), e.g. to size a model.

    Args:
        text_files: text files, one document each. With ``text_dir`` unset and this ``None``: the CPython
            standard-library corpus (:func:`~lightning_kd.data.text_corpus.stdlib_corpus`).
        text_dir: a directory of text files, taken with ``pattern``.
        pattern: glob of the files under ``text_dir`` (``**`` recurses).
        tokenizer: the tokenizer of the models to distil: a model folder (``AutoTokenizer``), a ``tokenizer.json``,
            a ``transformers`` tokenizer or a ``tokenizers.Tokenizer`` (see
            :func:`~lightning_kd.data.text_tokenizer.load_tokenizer`); ``None``: the library's BPE, trained on the
            training files (``vocab_size``, ``min_frequency``), the default for the embedded stdlib corpus.
        batch_size: sequences per batch (training drops the last incomplete batch).
        seq_len: tokens per sequence.
        vocab_size: size of the BPE vocabulary to train (``tokenizer=None`` only).
        val_fraction: share of files held out for validation.
        cache_dir: where the tokenizer and token streams are saved and reused.
        seed: seed of the training batch order (the split does not depend on it). Under a distributed strategy
            Lightning swaps in its own sampler, which orders by the ``seed_everything`` seed instead.
        num_workers: DataLoader workers.
        max_train_tokens: keep only this many training tokens (quick runs), as whole sequences spread evenly over
            the training stream, so every part of the corpus is seen (a prefix would be the alphabetically first
            files only); ``None``: all.
        max_val_tokens: the same for the held-out split: a fixed sample of whole sequences spread evenly over all
            held-out files (``limit_val_batches`` would take the first files only, an easier or harder slice than
            the whole); ``None``: all of it.
        min_frequency: minimum count of a pair for a BPE merge (``tokenizer=None`` only).
        with_indices: training batches also carry ``"index"``, each sequence's row in the training split (the key
            of an offline teacher store, :class:`~lightning_kd.cache.CachedLMTeacher`).
        teacher_tokenizer: a teacher of *another* vocabulary (cross-tokenizer distillation,
            :class:`~lightning_kd.modules.CrossTokenizerDistillation`): its tokenizer, in the forms ``tokenizer``
            takes. Batches then also carry the teacher's tokens of each sequence's text and the aligned
            predictions (:mod:`lightning_kd.data.cross_text`).
        teacher_bpe_vocab_size: instead of ``teacher_tokenizer``: the library's BPE of this size trained on the
            training files (the teacher of the stdlib recipes, when the student gets another ``vocab_size``).
        rank_shards: under several processes (DDP), each rank trains on its own contiguous block of the training
            sequences and an offline teacher store is opened for that block only
            (:mod:`lightning_kd.data.rank_shards`); ``False``: Lightning's sampler deals out a global shuffle.

    Example:
        >>> dm = PackedTextDataModule(seq_len=128); dm.setup()  # doctest: +SKIP
        >>> next(iter(dm.train_dataloader()))["input_ids"].shape  # doctest: +SKIP
        torch.Size([32, 128])
    """

    def __init__(
        self,
        text_files: Sequence[str] | None = None,
        text_dir: str | None = None,
        pattern: str = "**/*.txt",
        tokenizer: TokenizerSource = None,
        batch_size: int = 32,
        seq_len: int = 128,
        vocab_size: int = 4096,
        val_fraction: float = 0.05,
        cache_dir: str = "runs/lm/data",
        seed: int = 0,
        num_workers: int = 0,
        max_train_tokens: int | None = None,
        max_val_tokens: int | None = None,
        min_frequency: int = 2,
        with_indices: bool = False,
        teacher_tokenizer: TokenizerSource = None,
        teacher_bpe_vocab_size: int | None = None,
        rank_shards: bool = False,
    ) -> None:
        super().__init__()
        if text_files is not None and text_dir is not None:
            raise ValueError(f"Pass text_files or text_dir, not both (got text_dir={text_dir!r}).")
        if teacher_tokenizer is not None and teacher_bpe_vocab_size is not None:
            raise ValueError(
                f"Pass teacher_tokenizer or teacher_bpe_vocab_size, not both (got teacher_bpe_vocab_size="
                f"{teacher_bpe_vocab_size})."
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        if seq_len < 2:
            raise ValueError(
                f"seq_len must be >= 2, got {seq_len}: a sequence of one token has no next token to predict, so a "
                "run would train on nothing; e.g. seq_len=128."
            )
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction={val_fraction} must be in (0, 1), e.g. 0.05 for 5% of the files.")
        for what, limit in (("max_train_tokens", max_train_tokens), ("max_val_tokens", max_val_tokens)):
            if limit is not None and limit < seq_len:
                raise ValueError(f"{what}={limit} is less than one sequence: use at least seq_len={seq_len}.")
        if text_files is not None:
            self.corpus = TextCorpus.from_files(text_files)
        elif text_dir is not None:
            self.corpus = TextCorpus.from_directory(text_dir, pattern)
        else:
            self.corpus = stdlib_corpus()
        self.train_corpus, self.val_corpus = self.corpus.split(val_fraction)
        self.batch_size, self.seq_len, self.bpe_vocab_size = batch_size, seq_len, vocab_size
        self.cache_dir, self.seed, self.num_workers = Path(cache_dir), seed, num_workers
        self.max_train_tokens, self.min_frequency = max_train_tokens, min_frequency
        self.max_val_tokens = max_val_tokens
        self.with_indices, self.rank_shards = with_indices, rank_shards
        # a given tokenizer is loaded now (a path that is not there fails here); the default BPE is trained lazily
        self._tokenizer: Any = load_tokenizer(tokenizer, local_files_only=False) if tokenizer is not None else None
        self._teacher_tokenizer = None if teacher_tokenizer is None else load_tokenizer(teacher_tokenizer, False)
        self.teacher_bpe_vocab_size = teacher_bpe_vocab_size
        self.splits: dict[str, PackedSequences | AlignedSequences] = {}
        self.stats: dict[str, int] = {}
        self._train_key: str | None = None

    @property
    def tokenizer(self) -> Any:
        """The ``transformers`` tokenizer the text is encoded with: the one given, or the BPE of the training files
        (trained, or loaded from ``cache_dir``, on first use)."""
        if self._tokenizer is None:
            bpe = train_bpe_tokenizer(self.train_corpus, self.bpe_vocab_size, self.cache_dir, self.min_frequency)
            self._tokenizer = as_transformers_tokenizer(bpe)
        return self._tokenizer

    def token_stream(self, corpus: TextCorpus) -> np.ndarray:
        """The corpus's documents tokenised as the tokenizer frames a text (its BOS, if any), each followed by
        end-of-text: ``(T,)``; cached under ``cache_dir``, keyed by the corpus, the vocabulary and the framing."""
        dtype = np.uint16 if self.vocab_size <= 2**16 else np.int32
        prefix = special_prefix(self.tokenizer)
        framing = "" if not prefix else "-bos" + "_".join(map(str, prefix))
        path = self.cache_dir / f"tokens-{corpus.sha256[:16]}-{self.vocab_fingerprint[:16]}{framing}.npy"
        if path.is_file():
            return np.load(path)
        texts, parts = corpus.texts(), []
        for start in range(0, len(texts), 64):  # in chunks: encodings hold offsets too, ~100 bytes per token
            parts += [np.asarray(ids, dtype=dtype) for ids in encode_texts(self.tokenizer, texts[start : start + 64])]
        stream = np.concatenate(parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.npy")  # atomic: another rank may read it
        np.save(tmp, stream)
        os.replace(tmp, path)
        return stream

    def prepare_data(self) -> None:
        self.setup()

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        for name, corpus in (("train", self.train_corpus), ("val", self.val_corpus)):
            stream = stream_all = self.token_stream(corpus)
            n = len(stream) // self.seq_len
            if n == 0:
                raise ValueError(
                    f"The {name} split ({len(corpus.files)} files) has {len(stream)} tokens, fewer than "
                    f"seq_len={self.seq_len}: lower seq_len, or add text (or raise val_fraction for val)."
                )
            rows = stream[: n * self.seq_len].reshape(n, self.seq_len)
            kept = np.arange(n)
            limit = self.max_train_tokens if name == "train" else self.max_val_tokens
            if limit is not None:
                kept = spread_rows(kept, limit // self.seq_len)
                rows = rows[kept]
                n, stream = len(rows), rows.reshape(-1)
            indexed = self.with_indices and name == "train"
            if self.cross_tokenizer:
                self.splits[name] = self.aligned_split(corpus, kept, self.seq_len, indexed)
                self.stats.update({f"{name}_{k}": v for k, v in self.splits[name].stats().items()})
            else:
                widths = self.byte_widths(corpus, stream_all, kept) if name == "val" else None
                self.splits[name] = PackedSequences(rows, with_indices=indexed, token_bytes=widths)
            report = corpus.decoding_report()
            if report:
                rank_zero_warn(f"{type(self).__name__}: the {name} split: {report}")
            self.stats.update({f"{name}_files": len(corpus.files), f"{name}_chars": corpus.num_chars})
            self.stats.update({f"{name}_tokens": len(stream), f"{name}_sequences": n})

    def byte_widths(self, corpus: TextCorpus, stream: np.ndarray, kept: np.ndarray) -> np.ndarray | None:
        """``(rows, seq_len)``: the bytes of text each token of the kept rows stands for (end-of-text: 1), the
        denominator of bits per byte — the same placement of tokens on the text as cross-tokenizer data, so the
        figure compares runs of any vocabulary; ``None`` (with a warning) where the tokenizer cannot be placed."""
        try:
            spans = spans_of(self.tokenizer, corpus, self.cache_dir)
        except ValueError as err:
            rank_zero_warn(f"{type(self).__name__}: no bits per byte for the val split: {err}")
            return None
        if not np.array_equal(spans.ids, stream):
            rank_zero_warn(f"{type(self).__name__}: no bits per byte: the val tokens differ from their byte spans.")
            return None
        n = len(stream) // self.seq_len
        return (spans.ends - spans.starts)[: n * self.seq_len].reshape(n, self.seq_len)[kept]

    def train_dataloader(self) -> DataLoader:
        self.setup()
        world, rank = self._world()
        order = (
            RankShardSampler(self.splits["train"], world, rank, self.seed)
            if self.rank_shards and world > 1
            else ReplayShuffleSampler(self.splits["train"], self.seed)
        )
        sampler = self.training_sampler(order)
        return seeded_loader(self.splits["train"], self.batch_size, sampler, self.num_workers, keep_batch)

    def _world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        return (int(trainer.world_size), int(trainer.global_rank)) if trainer is not None else (1, 0)

    def store_rows(self) -> range | None:
        """The training rows this process reads (``rank_shards`` under several processes), ``None``: all."""
        world, rank = self._world()
        if not (self.rank_shards and world > 1):
            return None
        self.setup()
        return rank_rows(len(self.splits["train"]), world, rank)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return seeded_loader(self.splits["val"], self.batch_size, None, self.num_workers, keep_batch)

    def resume_key(self) -> dict[str, Any]:
        self.setup()
        if self._train_key is None:
            self._train_key = tokens_fingerprint(self.splits["train"].ids)
        return {"data": self._train_key, "seed": self.seed}

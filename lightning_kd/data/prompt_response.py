"""Prompt/response pairs for causal-LM distillation: the loss is on the response only.

Batches are dicts like :class:`~lightning_kd.data.text.PackedTextDataModule`'s, right-padded: ``labels`` are
``input_ids`` with ``-100`` on the prompt and on padding, **not shifted** (the model shifts once).
"""

from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import torch
from tokenizers import Tokenizer
from torch import Tensor
from torch.utils.data import DataLoader

from lightning_kd.data.text import IGNORE_INDEX, TokenizerProperties, seeded_loader
from lightning_kd.data.tokenizer import EOS_TOKEN, PAD_TOKEN, stdlib_tokenizer, token_id


def read_prompt_response(path: str | os.PathLike) -> list[tuple[int, str, str]]:
    """``(line_number, prompt, response)`` from a JSONL file of ``{"prompt": str, "response": str}`` lines.

    Blank lines are skipped; other keys are ignored. A malformed line raises ``ValueError`` naming the file,
    the line number and what is wrong.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Prompt/response file {path} does not exist.")
    records = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}, line {number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{where}: not valid JSON ({err.msg}).") from err
            if not isinstance(record, dict):
                raise ValueError(f'{where}: expected an object {{"prompt": ..., "response": ...}}.')
            for key in ("prompt", "response"):
                if key not in record:
                    raise ValueError(f"{where}: missing key {key!r}; each line needs 'prompt' and 'response'.")
                if not isinstance(record[key], str):
                    raise ValueError(f"{where}: {key!r} must be a string, got {type(record[key]).__name__}.")
            records.append((number, record["prompt"], record["response"]))
    if not records:
        raise ValueError(f"{path} holds no examples: write one JSON object per line.")
    return records


def pad_prompt_response(examples: list[tuple[np.ndarray, int]], pad_token_id: int) -> dict[str, Tensor]:
    """Right-pad ``(ids, prompt_len)`` examples to the longest; labels ``-100`` on the prompt and on padding."""
    length = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), length), pad_token_id, dtype=torch.int64)  # (B, L)
    attention_mask = torch.zeros_like(input_ids)
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    for row, (ids, prompt_len) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.from_numpy(ids)
        attention_mask[row, : len(ids)] = 1
        labels[row, prompt_len : len(ids)] = input_ids[row, prompt_len : len(ids)]
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class PromptResponseDataModule(TokenizerProperties, L.LightningDataModule):
    """Prompt/response pairs from JSONL files: loss on the response (and its end-of-text) only.

    Each example is ``prompt + response + <|endoftext|>``, prompt and response tokenised separately (so the
    boundary between them is exact). Batches are right-padded to their longest example. Truncation keeps the
    start: tokens past ``max_length`` are dropped from the end, so the response is cut first (and loses its
    end-of-text); a prompt of ``max_length`` tokens or more leaves no response token and raises, naming the
    file and line. ``stats["train_truncated"]`` / ``stats["val_truncated"]`` count the examples cut.

    Args:
        train_file: JSONL file of ``{"prompt": str, "response": str}`` lines for training.
        val_file: the same for validation.
        tokenizer: a ``tokenizers.Tokenizer`` or the path of its ``tokenizer.json`` (it needs the
            ``<|endoftext|>`` and ``<|pad|>`` tokens). ``None``: the default
            :func:`~lightning_kd.data.tokenizer.stdlib_tokenizer` with ``vocab_size`` and ``cache_dir``, the one a
            default :class:`~lightning_kd.data.text.PackedTextDataModule` with the same two values trains.
        max_length: most tokens per example.
        batch_size: examples per batch (training drops the last incomplete batch).
        seed: seed of the training batch order.
        num_workers: DataLoader workers.
        vocab_size: vocabulary of the default tokenizer (``tokenizer=None`` only).
        cache_dir: folder of the default tokenizer (``tokenizer=None`` only).
    """

    def __init__(
        self,
        train_file: str,
        val_file: str,
        tokenizer: str | os.PathLike | Tokenizer | None = None,
        max_length: int = 256,
        batch_size: int = 16,
        seed: int = 0,
        num_workers: int = 0,
        vocab_size: int = 4096,
        cache_dir: str = "runs/lm/data",
    ) -> None:
        super().__init__()
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2 (one token has no next token to predict), got {max_length}.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        for file in (train_file, val_file):
            if not Path(file).is_file():
                raise FileNotFoundError(f"Prompt/response file {file} does not exist.")
        if isinstance(tokenizer, (str, os.PathLike)):
            if not Path(tokenizer).is_file():
                raise FileNotFoundError(f"Tokenizer file {tokenizer} does not exist.")
            tokenizer = Tokenizer.from_file(str(tokenizer))
        self.tokenizer = tokenizer if tokenizer is not None else stdlib_tokenizer(vocab_size, cache_dir=cache_dir)
        for token in (EOS_TOKEN, PAD_TOKEN):  # fail now, not at the first batch, if the tokenizer lacks one
            token_id(self.tokenizer, token)
        self.files = {"train": Path(train_file), "val": Path(val_file)}
        self.max_length, self.batch_size, self.seed, self.num_workers = max_length, batch_size, seed, num_workers
        self.splits: dict[str, list[tuple[np.ndarray, int]]] = {}
        self.stats: dict[str, int] = {}

    def encode(self, path: Path) -> tuple[list[tuple[np.ndarray, int]], int]:
        """``(ids, prompt_len)`` of every example of ``path``, truncated to ``max_length``; and how many were cut."""
        records = read_prompt_response(path)
        prompts = self.tokenizer.encode_batch([p for _, p, _ in records], add_special_tokens=False)
        responses = self.tokenizer.encode_batch([r for _, _, r in records], add_special_tokens=False)
        examples, truncated, eos = [], 0, self.eos_token_id
        for (line, _, _), prompt, response in zip(records, prompts, responses):
            if len(prompt.ids) >= self.max_length:
                raise ValueError(
                    f"{path}, line {line}: the prompt has {len(prompt.ids)} tokens, max_length={self.max_length} "
                    "leaves no response token: raise max_length or shorten the prompt."
                )
            ids = np.asarray([*prompt.ids, *response.ids, eos], dtype=np.int64)
            truncated += len(ids) > self.max_length
            examples.append((ids[: self.max_length], len(prompt.ids)))
        return examples, truncated

    def setup(self, stage: str | None = None) -> None:
        for name, path in self.files.items():
            if name not in self.splits:
                self.splits[name], self.stats[f"{name}_truncated"] = self.encode(path)

    def _loader(self, split: str, train: bool) -> DataLoader:
        self.setup()
        collate = partial(pad_prompt_response, pad_token_id=self.pad_token_id)
        return seeded_loader(self.splits[split], self.batch_size, train, self.seed, self.num_workers, collate)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

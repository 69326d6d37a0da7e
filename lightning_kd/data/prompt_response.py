"""Prompt/response pairs and chat conversations for causal-LM distillation: the loss is on what the assistant says.

A JSONL file holds one example per line, in either form (they may be mixed):

- ``{"prompt": "...", "response": "..."}``: the prompt framed as the tokenizer frames a text (its BOS, if it
  adds one), the response, then the tokenizer's end-of-text; loss on the response and its end-of-text;
- ``{"messages": [{"role": "system" | "user" | "assistant" | "tool", "content": "..."}, ...]}`` (OpenAI style,
  multi-turn): the tokenizer's chat template renders the conversation; loss on the assistant turns only (each
  turn's text and the template's end-of-turn token), never on system, user or tool text.

Batches are dicts like :class:`~lightning_kd.data.text.PackedTextDataModule`'s, right-padded: ``labels`` are
``input_ids`` with ``-100`` where no loss is taken, **not shifted** (the model shifts once).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from lightning_kd.data.cross_text import TeacherTokenization
from lightning_kd.data.resume import ResumableData
from lightning_kd.data.sampling import ReplayShuffleSampler
from lightning_kd.data.text import IGNORE_INDEX, seeded_loader
from lightning_kd.data.text_tokenizer import TokenizerProperties, TokenizerSource, load_tokenizer, special_suffix
from lightning_kd.data.tokenizer import as_transformers_tokenizer, stdlib_tokenizer

ROLES = ("system", "user", "assistant", "tool", "developer")


@dataclass(frozen=True)
class Example:
    """One line of a JSONL file: a prompt and its response, or a conversation (``messages``)."""

    line: int
    prompt: str | None = None
    response: str | None = None
    messages: tuple[dict[str, str], ...] | None = None


def read_examples(path: str | os.PathLike) -> list[Example]:
    """The examples of a JSONL file (see the module docstring for the two forms); blank lines are skipped, other
    keys ignored. A malformed line — not JSON, neither form, a role that is not one of :data:`ROLES`, a
    conversation without an assistant turn, an empty response or assistant turn — raises ``ValueError`` naming the
    file, the line and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Prompt/response file {path} does not exist.")
    examples = []
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise ValueError(
                    f"{path}, line {number}: not UTF-8 (byte {raw[err.start]:#04x} at column {err.start + 1}); JSONL "
                    "is UTF-8: convert the file (iconv -f latin1 -t utf-8) or fix the line."
                ) from None
            if line.strip():
                examples.append(_example(line, f"{path}, line {number}", number))
    if not examples:
        raise ValueError(f"{path} holds no examples: write one JSON object per line.")
    return examples


def _example(line: str, where: str, number: int) -> Example:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"{where}: not valid JSON ({err.msg}).") from err
    if not isinstance(record, dict):
        raise ValueError(f'{where}: expected an object, {{"prompt": ..., "response": ...}} or {{"messages": [...]}}.')
    if "messages" in record:
        return Example(number, messages=_messages(record["messages"], where))
    for key in ("prompt", "response"):
        if key not in record:
            raise ValueError(
                f"{where}: missing key {key!r}; each line needs 'prompt' and 'response', or 'messages' (a chat)."
            )
        if not isinstance(record[key], str):
            raise ValueError(f"{where}: {key!r} must be a string, got {type(record[key]).__name__}.")
    if not record["response"].strip():
        raise ValueError(f"{where}: the response is empty: there is nothing to learn from it; drop the line.")
    return Example(number, prompt=record["prompt"], response=record["response"])


def _messages(messages: Any, where: str) -> tuple[dict[str, str], ...]:
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"{where}: 'messages' must be a non-empty list of {{'role': ..., 'content': ...}} objects.")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise ValueError(f"{where}: message {i} must be an object with a string 'role' and a string 'content'.")
        if m["role"] not in ROLES:
            raise ValueError(f"{where}: message {i} has role {m['role']!r}; roles are {', '.join(ROLES)}.")
        if m["role"] == "assistant" and not m["content"].strip():
            raise ValueError(f"{where}: message {i} (assistant) is empty: there is nothing to learn from it.")
        out.append({"role": m["role"], "content": m["content"]})
    if not any(m["role"] == "assistant" for m in out):
        raise ValueError(f"{where}: the conversation has no assistant message: there is nothing to learn from it.")
    return tuple(out)


def pad_examples(examples: list[tuple[np.ndarray, np.ndarray]], pad_token_id: int) -> dict[str, Tensor]:
    """Right-pad ``(ids, labels)`` examples to the longest; labels ``-100`` on padding (and where they already are)."""
    length = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), length), pad_token_id, dtype=torch.int64)  # (B, L)
    attention_mask = torch.zeros_like(input_ids)
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    for row, (ids, target) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.from_numpy(ids)
        attention_mask[row, : len(ids)] = 1
        labels[row, : len(ids)] = torch.from_numpy(target)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class ExampleEncoder:
    """Turns examples into ``(ids, labels)`` with one tokenizer: prompt/response concatenated, chats templated."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.suffix = special_suffix(tokenizer)

    def prompt_response(self, example: Example) -> tuple[list[int], list[int]]:
        tok = self.tokenizer
        prompt = tok(example.prompt, add_special_tokens=True)["input_ids"]
        prompt = prompt[: len(prompt) - len(self.suffix)]  # a tokenizer that ends every text: the prompt goes on
        response = tok(example.response, add_special_tokens=False)["input_ids"]
        ids = [*prompt, *response, tok.eos_token_id]
        return ids, [IGNORE_INDEX] * len(prompt) + ids[len(prompt) :]

    def chat(self, example: Example, where: str) -> tuple[list[int], list[int]]:
        tok = self.tokenizer
        if not getattr(tok, "chat_template", None):
            raise ValueError(
                f"{where}: a 'messages' record needs a chat template, and the tokenizer "
                f"{getattr(tok, 'name_or_path', '') or type(tok).__name__!r} has none: use the model's own tokenizer "
                "folder (an instruct model's has one), set tokenizer.chat_template, or write prompt/response records."
            )
        messages = list(example.messages)
        full = self._render(messages, False)
        spans = []
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            before, through = self._render(messages[:i], True), self._render(messages[: i + 1], False)
            if not (full.startswith(before) and full.startswith(through) and through.startswith(before)):
                raise ValueError(
                    f"{where}: the tokenizer's chat template renders the conversation differently once it goes on "
                    f"(assistant turn at message {i}), so the assistant's tokens cannot be told apart; write "
                    "prompt/response records, or use a template that keeps earlier turns as they are."
                )
            spans.append((len(before), len(through)))
        encoding = tok(full, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(encoding["input_ids"])
        labels = [
            token if any(start <= a < end for start, end in spans) else IGNORE_INDEX
            for token, (a, _) in zip(ids, encoding["offset_mapping"])
        ]
        return ids, labels

    def _render(self, messages: list[dict[str, str]], generation_prompt: bool) -> str:
        if not messages:
            return self.tokenizer.apply_chat_template([], tokenize=False, add_generation_prompt=False) or ""
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


class PromptResponseDataModule(ResumableData, TeacherTokenization, TokenizerProperties, L.LightningDataModule):
    """Prompt/response pairs and chat conversations from JSONL files: loss on what the assistant says only.

    Each line is ``{"prompt", "response"}`` (the prompt framed as the tokenizer frames a text — its BOS, if any —,
    the response and the tokenizer's end-of-text; prompt and response tokenised separately, so the boundary is
    exact) or ``{"messages": [...]}`` (rendered by the tokenizer's chat template, loss on the assistant turns,
    found by character offsets). Batches are right-padded to their longest example with the tokenizer's pad token
    (its EOS when it has none: the labels, not the ids, say what is padding).

    Truncation keeps the start: tokens past ``max_length`` are dropped from the end, so the last response is cut
    first (and loses its end-of-text); an example left with no labelled token raises, naming the file and line.
    ``stats["<split>_truncated"]`` counts the examples cut, ``stats["<split>_examples"]`` /
    ``stats["<split>_chats"]`` how many there are and how many are conversations.

    Args:
        train_file: JSONL file of training examples.
        val_file: the same for validation.
        tokenizer: the models' tokenizer: a model folder, a ``tokenizer.json``, a ``transformers`` tokenizer or a
            ``tokenizers.Tokenizer`` (:func:`~lightning_kd.data.text_tokenizer.load_tokenizer`). ``None``: the
            default :func:`~lightning_kd.data.tokenizer.stdlib_tokenizer` with ``vocab_size`` and ``cache_dir``,
            the one a default :class:`~lightning_kd.data.text.PackedTextDataModule` with the same two values
            trains (it has no chat template: prompt/response records only).
        max_length: most tokens per example.
        batch_size: examples per batch (training drops the last incomplete batch).
        seed: seed of the training batch order.
        num_workers: DataLoader workers.
        vocab_size: vocabulary of the default tokenizer (``tokenizer=None`` only).
        cache_dir: folder of the default tokenizer (``tokenizer=None`` only) and of the vocabulary map.
        teacher_tokenizer: a teacher of another vocabulary (:class:`~lightning_kd.modules.CrossTokenizerDistillation`):
            each example is also encoded as the teacher would see it (its BOS, its chat template) and the two are
            aligned on the assistant's text (:mod:`lightning_kd.data.cross_chat`).
    """

    def __init__(
        self,
        train_file: str,
        val_file: str,
        tokenizer: TokenizerSource = None,
        max_length: int = 256,
        batch_size: int = 16,
        seed: int = 0,
        num_workers: int = 0,
        vocab_size: int = 4096,
        cache_dir: str = "runs/lm/data",
        teacher_tokenizer: TokenizerSource = None,
    ) -> None:
        super().__init__()
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2 (one token has no next token to predict), got {max_length}.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        for file in (train_file, val_file):
            if not Path(file).is_file():
                raise FileNotFoundError(f"Prompt/response file {file} does not exist.")
        if tokenizer is None:
            self.tokenizer = as_transformers_tokenizer(stdlib_tokenizer(vocab_size, cache_dir=cache_dir))
        else:
            self.tokenizer = load_tokenizer(tokenizer, local_files_only=False)
        self._teacher_tokenizer = None if teacher_tokenizer is None else load_tokenizer(teacher_tokenizer, False)
        self.teacher_bpe_vocab_size, self.cache_dir = None, Path(cache_dir)
        self.files = {"train": Path(train_file), "val": Path(val_file)}
        self.max_length, self.batch_size, self.seed, self.num_workers = max_length, batch_size, seed, num_workers
        self.splits: dict[str, list[Any]] = {}  # (ids, labels) per example; dicts with the teacher's side too
        self.stats: dict[str, int] = {}

    def encode(self, path: Path) -> tuple[list[tuple[np.ndarray, np.ndarray]], dict[str, int]]:
        """``(ids, labels)`` of every example of ``path``, truncated to ``max_length``; and what was done (the
        counts of examples, conversations and truncated examples)."""
        encoder = ExampleEncoder(self.tokenizer)
        from lightning_kd.data.cross_chat import encode_pair  # it builds on this module

        teacher = ExampleEncoder(self.teacher_tokenizer) if self.cross_tokenizer else None
        out, counts = [], {"examples": 0, "chats": 0, "truncated": 0}
        for example in read_examples(path):
            where = f"{path}, line {example.line}"
            ids, labels = encoder.chat(example, where) if example.messages else encoder.prompt_response(example)
            pair = None if teacher is None else encode_pair(encoder, teacher, example, where, self.max_length)
            counts["examples"] += 1
            counts["chats"] += example.messages is not None
            counts["truncated"] += len(ids) > self.max_length
            first = next((i for i, label in enumerate(labels) if i > 0 and label != IGNORE_INDEX), None)
            if first is None or first >= self.max_length:  # position 0 is never a target: nothing comes before it
                raise ValueError(
                    f"{where}: no response token is left within max_length={self.max_length} (the example has "
                    f"{len(ids)} tokens, the first to learn at position {first}): raise max_length or shorten the "
                    "prompt."
                )
            ids, labels = ids[: self.max_length], labels[: self.max_length]
            out.append(pair or (np.asarray(ids, dtype=np.int64), np.asarray(labels, dtype=np.int64)))
        if teacher is not None:
            taught = sum(int((e["labels"][1:] != IGNORE_INDEX).sum()) for e in out)
            counts["aligned"] = sum(e["align"].shape[1] for e in out) / max(1, taught)
        return out, counts

    def setup(self, stage: str | None = None) -> None:
        for name, path in self.files.items():
            if name not in self.splits:
                self.splits[name], counts = self.encode(path)
                self.stats.update({f"{name}_{key}": value for key, value in counts.items()})

    def _loader(self, split: str, train: bool) -> DataLoader:
        self.setup()
        collate = partial(pad_examples, pad_token_id=self.pad_token_id)
        if self.cross_tokenizer:
            from lightning_kd.data.cross_chat import pad_pairs

            collate = partial(pad_pairs, pad_token_id=self.pad_token_id, teacher_pad_id=self.teacher_pad_token_id)
        sampler = self.training_sampler(ReplayShuffleSampler(self.splits[split], self.seed)) if train else None
        return seeded_loader(self.splits[split], self.batch_size, sampler, self.num_workers, collate)

    def resume_key(self) -> dict[str, Any]:
        self.setup()
        digest = hashlib.sha256()
        for example in self.splits["train"]:
            ids, labels = (example["ids"], example["labels"]) if isinstance(example, dict) else example
            digest.update(ids.tobytes() + b"|" + labels.tobytes() + b";")
        return {"data": f"{len(self.splits['train'])}:{digest.hexdigest()}", "seed": self.seed}

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

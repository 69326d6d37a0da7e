"""Prompt/response pairs and chat conversations for causal-LM distillation: the loss is on what the assistant says.

A JSONL file holds one example per line, in either form (they may be mixed):

- ``{"prompt": "...", "response": "..."}``: the prompt framed as the tokenizer frames a text (its BOS, if it
  adds one), the response, then the tokenizer's end-of-text; loss on the response and its end-of-text;
- ``{"messages": [{"role": "system" | "user" | "assistant" | "tool", "content": "..."}, ...]}`` (OpenAI style,
  multi-turn): the tokenizer's chat template renders the conversation; loss on the assistant turns only (each
  turn's text and the template's end-of-turn token), never on system, user or tool text.

Batches are dicts like :class:`~lightning_kd.data.text.PackedTextDataModule`'s, right-padded: ``labels`` are
``input_ids`` with ``-100`` where no loss is taken, **not shifted** (the model shifts once). Held-out batches also
carry ``token_bytes``, the bytes of the assistant's text each token stands for (a taught end-of-turn or end-of-text
token counts 1, whatever the template spells it), so evaluation reports bits per byte (``val/bpb``).
"""

from __future__ import annotations

import hashlib
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader

from lightning_kd.data.cross_text import TeacherTokenization
from lightning_kd.data.examples import ROLES, Example, read_examples  # noqa: F401 (ROLES: where it was)
from lightning_kd.data.resume import ResumableData
from lightning_kd.data.sampling import ReplayShuffleSampler
from lightning_kd.data.text import IGNORE_INDEX, seeded_loader
from lightning_kd.data.text_tokenizer import TokenizerProperties, TokenizerSource, load_tokenizer, special_suffix
from lightning_kd.data.tokenizer import as_transformers_tokenizer, stdlib_tokenizer


def pad_examples(examples: list[tuple[np.ndarray, ...]], pad_token_id: int) -> dict[str, Tensor]:
    """Right-pad ``(ids, labels)`` examples to the longest; labels ``-100`` on padding (and where they already are).
    ``(ids, labels, token_bytes)`` examples (held-out data) give ``token_bytes`` too (0 on padding)."""
    length = max(len(e[0]) for e in examples)
    input_ids = torch.full((len(examples), length), pad_token_id, dtype=torch.int64)  # (B, L)
    attention_mask, token_bytes = torch.zeros_like(input_ids), torch.zeros_like(input_ids)
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    for row, (ids, target, *widths) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.from_numpy(ids)
        attention_mask[row, : len(ids)] = 1
        labels[row, : len(ids)] = torch.from_numpy(target)
        token_bytes[row, : len(ids)] = torch.from_numpy(widths[0]) if widths else 0
    out = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    return {**out, "token_bytes": token_bytes} if all(len(e) == 3 for e in examples) else out


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

    def encode(self, path: Path, with_bytes: bool = False) -> tuple[list[tuple[np.ndarray, ...]], dict[str, int]]:
        """``(ids, labels)`` of every example of ``path``, truncated to ``max_length`` (``with_bytes``: and the bytes
        of the assistant's text each token stands for, for bits per byte); and what was done (the counts of
        examples, conversations and truncated examples)."""
        encoder = ExampleEncoder(self.tokenizer)
        from lightning_kd.data.cross_chat import encode_pair, response_bytes  # they build on this module

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
            if with_bytes and pair is None:
                try:
                    out[-1] += (response_bytes(encoder, example, where)[: self.max_length],)
                except ValueError as err:
                    rank_zero_warn(f"{type(self).__name__}: no bits per byte for {path}: {err}")
                    out, with_bytes = [e[:2] for e in out], False
        if teacher is not None:
            taught = sum(int((e["labels"][1:] != IGNORE_INDEX).sum()) for e in out)
            counts["aligned"] = sum(e["align"].shape[1] for e in out) / max(1, taught)
        return out, counts

    def setup(self, stage: str | None = None) -> None:
        for name, path in self.files.items():
            if name not in self.splits:
                self.splits[name], counts = self.encode(path, with_bytes=name == "val")
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

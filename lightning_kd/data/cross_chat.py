"""Prompt/response and chat examples tokenized for a student and a teacher of another vocabulary.

Each side encodes an example as it would alone (:class:`~lightning_kd.data.prompt_response.ExampleEncoder`): its
own BOS, its own chat template. The two texts are therefore the same only in what the user wrote and what the
assistant says; the templates' markers differ. Alignment is made on the *content*: every token is placed on the
bytes of its side's rendered text (:func:`~lightning_kd.data.alignment.token_spans`, template markers written
literally), the bytes of each assistant turn (of the response, and its end-of-text, for prompt/response records)
are mapped to one coordinate shared by both sides, and a student prediction and a teacher prediction are aligned
where both sides' next token starts at the same content byte of an assistant turn (where the loss is). Pure
numpy; runs once per example in ``setup``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from lightning_kd.data.alignment import TokenSpans, aligned_pairs, token_spans
from lightning_kd.data.prompt_response import IGNORE_INDEX, Example, ExampleEncoder, pad_examples


def _byte_offsets(text: str) -> np.ndarray:
    return np.concatenate([[0], np.cumsum([len(c.encode("utf-8")) for c in text], dtype=np.int64)]).astype(np.int64)


def _assistant_spans(encoder: ExampleEncoder, rendered: str, messages: list, where: str) -> list[tuple[int, int]]:
    """Byte spans of each assistant turn's content in ``rendered`` (stripped: templates may trim), in order; each
    searched only inside its own turn (what the template adds between the conversation before it with a
    generation prompt and the conversation through it), never in a marker (a reply "a" is in "<|im_start|>")."""
    to_byte, out = _byte_offsets(rendered), []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        lo, hi = len(encoder._render(messages[:i], True)), len(encoder._render(messages[: i + 1], False))
        content = m["content"].strip()
        at = rendered.find(content, lo, hi)
        if at < 0:
            raise ValueError(
                f"{where}: the chat template does not write message content as given ({content[:40]!r}…), so the two "
                "tokenizations cannot be aligned on it; write prompt/response records for cross-tokenizer KD."
            )
        out.append((int(to_byte[at]), int(to_byte[at + len(content)])))
    return out


def _side(encoder: ExampleEncoder, example: Example, where: str) -> tuple[list[int], list[int], TokenSpans, list]:
    """``(ids, labels, spans, content)``: ``content`` lists ``(start, end, base)`` byte ranges of the loss-bearing
    text and their shared coordinate."""
    tok = encoder.tokenizer
    ids, labels = encoder.chat(example, where) if example.messages else encoder.prompt_response(example)
    if example.messages:
        rendered = encoder._render(list(example.messages), False)
        spans = token_spans(tok, [rendered], [ids], prefix=0, closed=False)  # markers are in the text
        content, base = [], 0
        for start, end in _assistant_spans(encoder, rendered, list(example.messages), where):
            content.append((start, end, base))
            base += end - start + 1
        return ids, labels, spans, content
    n_prompt = next(k for k, x in enumerate(labels) if x != IGNORE_INDEX)
    prompt = token_spans(tok, [example.prompt], [ids[:n_prompt]], prefix=_prefix_len(encoder, ids), closed=False)
    response = token_spans(tok, [example.response], [ids[n_prompt:]], prefix=0, closed=True)
    offset = prompt.ends[-1] if len(prompt.ends) else 0
    spans = TokenSpans(
        np.asarray(ids, dtype=np.int64),
        np.concatenate([prompt.starts, response.starts + offset]),
        np.concatenate([prompt.ends, response.ends + offset]),
        unaligned=np.concatenate([prompt.unaligned, response.unaligned]),
    )
    return ids, labels, spans, [(int(offset), int(offset) + len(example.response.encode()) + 1, 0)]


def _prefix_len(encoder: ExampleEncoder, ids: list[int]) -> int:
    from lightning_kd.data.text_tokenizer import special_prefix

    prefix = special_prefix(encoder.tokenizer)
    return len(prefix) if ids[: len(prefix)] == prefix else 0


def _shared(spans: TokenSpans, content: list[tuple[int, int, int]]) -> TokenSpans:
    """``spans`` with starts in the shared content coordinate; tokens starting outside the content get a start no
    other side can have (they never align)."""
    starts = np.full(len(spans.starts), -1, dtype=np.int64) - np.arange(len(spans.starts))
    for lo, hi, base in content:
        inside = (spans.starts >= lo) & (spans.starts < hi)
        starts[inside] = base + spans.starts[inside] - lo
    ends = np.where(starts >= 0, starts + (spans.ends - spans.starts), starts)
    return TokenSpans(spans.ids, starts, ends, unaligned=spans.unaligned)


def _content_bytes(spans: TokenSpans, content: list[tuple[int, int, int]], labels: np.ndarray) -> np.ndarray:
    """Bytes of the assistant's text each token covers. The taught tokens after a turn's text (its end: Llama 3's
    ``<|eot_id|>``, or ChatML's ``<|im_end|>`` and newline) count 1 together, on the first, as end-of-text does in
    packed text, so bits per byte do not depend on how many tokens a chat template spends on an end."""
    out = np.zeros(len(spans.starts), dtype=np.int64)
    for lo, hi, _ in content:
        out += np.clip(np.minimum(spans.ends, hi) - np.maximum(spans.starts, lo), 0, None)
    outside = (out == 0) & (labels[: len(out)] != IGNORE_INDEX)
    out[outside & ~np.concatenate([[False], outside[:-1]])] = 1  # the first of each run of them
    return out


def response_bytes(encoder: ExampleEncoder, example: Example, where: str) -> np.ndarray:
    """The bytes of the assistant's text each token of ``example`` stands for (:func:`_content_bytes`), for data of
    one tokenizer: the denominator of bits per byte. ``ValueError`` where its tokens cannot be placed on the text."""
    _, labels, spans, content = _side(encoder, example, where)
    return _content_bytes(spans, content, np.asarray(labels, dtype=np.int64))


def encode_pair(
    student: ExampleEncoder, teacher: ExampleEncoder, example: Example, where: str, max_length: int
) -> dict[str, Any]:
    """Both sides of one example: ``ids``/``labels`` (student), ``teacher_ids``, ``token_bytes`` (student) and
    ``align`` ``(2, A)`` (student and teacher positions whose predictions are about the same assistant byte)."""
    s_ids, s_labels, s_spans, s_content = _side(student, example, where)
    t_ids, _, t_spans, t_content = _side(teacher, example, where)
    # tokens outside the content get no width there, and aligned_pairs takes tokens with a width only
    i, j = aligned_pairs(_shared(s_spans, s_content), _shared(t_spans, t_content))
    keep = (i > 0) & (j > 0)
    labels = np.asarray(s_labels, dtype=np.int64)
    keep &= labels[np.minimum(i, len(labels) - 1)] != IGNORE_INDEX  # only where the student is taught
    keep &= (i < max_length) & (j < max_length)  # both sides are cut at max_length tokens
    return {
        "ids": np.asarray(s_ids[:max_length], dtype=np.int64),
        "labels": labels[:max_length],
        "teacher_ids": np.asarray(t_ids[:max_length], dtype=np.int64),
        "token_bytes": _content_bytes(s_spans, s_content, labels)[:max_length],
        "align": np.stack([i[keep] - 1, j[keep] - 1]).astype(np.int64),
    }


def pad_pairs(examples: list[dict[str, Any]], pad_token_id: int, teacher_pad_id: int) -> dict[str, Tensor]:
    """Right-pad :func:`encode_pair` examples into a batch (the keys of :mod:`lightning_kd.data.cross_text`)."""
    batch = pad_examples([(e["ids"], e["labels"]) for e in examples], pad_token_id)
    n, width = len(examples), max(len(e["teacher_ids"]) for e in examples)
    t_ids = torch.full((n, width), teacher_pad_id, dtype=torch.int64)
    t_mask = torch.zeros_like(t_ids)
    token_bytes = torch.zeros_like(batch["input_ids"])
    align = torch.full((n, 2, max(1, max(e["align"].shape[1] for e in examples))), -1, dtype=torch.int64)
    for row, e in enumerate(examples):
        t_ids[row, : len(e["teacher_ids"])] = torch.from_numpy(e["teacher_ids"])
        t_mask[row, : len(e["teacher_ids"])] = 1
        token_bytes[row, : len(e["token_bytes"])] = torch.from_numpy(e["token_bytes"])
        align[row, :, : e["align"].shape[1]] = torch.from_numpy(e["align"])
    batch.update(teacher_input_ids=t_ids, teacher_attention_mask=t_mask, align=align, token_bytes=token_bytes)
    return batch

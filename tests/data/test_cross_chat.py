"""Prompt/response and chat examples for a teacher of another vocabulary: each side keeps its own BOS and chat
template, and predictions align only on the assistant's text, at the same byte of it, where the student is taught."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")

from lightning_kd.data.prompt_response import PromptResponseDataModule  # noqa: E402
from lightning_kd.data.token_bytes import token_byte_strings  # noqa: E402
from tests.lm_families import family_tokenizer, metaspace_tokenizer  # noqa: E402
from tests.lm_helpers import write_corpus  # noqa: E402

PAIRS = [
    {"prompt": "def alpha_1(x):", "response": " return x * 2 + 1  # café"},
    {"prompt": "Write beta.", "response": "def beta_3(x, y=3):\n    return x - y"},
]
CHATS = [
    {"messages": [{"role": "user", "content": "Define gamma."},
                  {"role": "assistant", "content": "def gamma_2(x):\n    return x * 2"},
                  {"role": "user", "content": "And delta?"},
                  {"role": "assistant", "content": "def delta_4(y=4):\n    return y - 4"}]},
]  # fmt: skip


def _jsonl(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def _module(tmp_path, student, teacher, records) -> PromptResponseDataModule:
    data = _jsonl(tmp_path / "data.jsonl", records)
    dm = PromptResponseDataModule(data, data, tokenizer=student, teacher_tokenizer=teacher, max_length=96,
                                  batch_size=len(records), cache_dir=str(tmp_path / "cache"))  # fmt: skip
    dm.setup()
    return dm


def _content_bytes_before(decoded: str, content: str) -> int:
    """How much of ``content`` ``decoded`` ends with (the longest prefix of the content it ends with)."""
    return max(x for x in range(len(content) + 1) if decoded.endswith(content[:x]))


@pytest.mark.parametrize("records", [PAIRS, CHATS], ids=["prompt_response", "chat"])
def test_aligned_predictions_are_at_the_same_byte_of_the_assistants_text(tmp_path, records):
    write_corpus(tmp_path / "c")
    student = family_tokenizer("qwen", tmp_path / "c", 300)  # ChatML, byte-level, no BOS
    teacher = (
        family_tokenizer("llama3", tmp_path / "c", 350)
        if records is CHATS
        else metaspace_tokenizer(tmp_path / "c", 400)
    )  # Llama 3 headers for chats; a SentencePiece-style <s> tokenizer for prompt/response
    dm = _module(tmp_path, student, teacher, records)
    batch = next(iter(dm.train_dataloader()))
    assert {"teacher_input_ids", "teacher_attention_mask", "align", "token_bytes"} <= set(batch)
    assert 0.3 < dm.stats["train_aligned"] <= 1.0
    s_bytes, t_bytes = token_byte_strings(student), token_byte_strings(teacher)
    checked = 0
    for row, record in enumerate(records):
        answers = (
            [m["content"] for m in record["messages"] if m["role"] == "assistant"]
            if "messages" in record
            else [record["response"]]
        )
        s_ids = batch["input_ids"][row][batch["attention_mask"][row] == 1].tolist()
        t_ids = batch["teacher_input_ids"][row][batch["teacher_attention_mask"][row] == 1].tolist()
        a = batch["align"][row]
        for sp, tp in zip(a[0][a[0] >= 0].tolist(), a[1][a[1] >= 0].tolist()):
            assert batch["labels"][row, sp + 1] != -100  # the student is taught there
            # both next tokens start at the same byte: their texts start alike ...
            s_next, t_next = s_bytes[s_ids[sp + 1]], t_bytes[t_ids[tp + 1]]
            if s_next is not None and t_next is not None:
                assert s_next[:1] == t_next[:1], (s_next, t_next)
            # ... and the text before them ends with the same part of this row's answer
            s_text, t_text = student.decode(s_ids[: sp + 1]), teacher.decode(t_ids[: tp + 1])
            s_at = [_content_bytes_before(s_text, c) for c in answers]
            assert s_at == [_content_bytes_before(t_text, c) for c in answers], (s_text[-30:], t_text[-30:])
            checked += 1
    assert checked >= 10


def test_a_template_that_rewrites_the_content_is_refused_by_line(tmp_path):
    write_corpus(tmp_path / "c")
    student, teacher = family_tokenizer("qwen", tmp_path / "c", 300), family_tokenizer("qwen", tmp_path / "c", 320)
    teacher.chat_template = "{% for m in messages %}{{ m['content'] | upper }}\n{% endfor %}"
    with pytest.raises(ValueError, match=r"data\.jsonl, line 1: the chat template does not write message content"):
        _module(tmp_path, student, teacher, CHATS)

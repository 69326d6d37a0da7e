"""Bits per byte on prompt/response and chat data of one tokenizer: the held-out batches say the bytes of the
assistant's text each token stands for (a taught end-of-turn or end-of-text token: 1), and the validation reports
``val/bpb`` from them — the figure that compares students of different vocabularies on the same records."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("transformers")

from lightning_kd.data.prompt_response import PromptResponseDataModule  # noqa: E402
from lightning_kd.models.language import llama_lm  # noqa: E402
from lightning_kd.modules import CausalLMModule  # noqa: E402
from tests.lm_families import family_tokenizer  # noqa: E402
from tests.lm_helpers import trainer, write_corpus  # noqa: E402

PAIRS = [
    {"prompt": "def alpha_1(x):", "response": " return x * 2 + 1  # café"},
    {"prompt": "Write beta.", "response": "def beta_3(x, y=3):\n    return x - y  # naïve ∑"},
]
CHAT = {"messages": [{"role": "system", "content": "You write Python."},
                     {"role": "user", "content": "Define gamma."},
                     {"role": "assistant", "content": "def gamma_2(x):\n    return x * 2  # é"},
                     {"role": "user", "content": "And delta?"},
                     {"role": "assistant", "content": "def delta_4(y=4):\n    return y - 4"}]}  # fmt: skip


def _module(tmp_path, tokenizer, records, **kwargs) -> PromptResponseDataModule:
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    dm = PromptResponseDataModule(str(path), str(path), tokenizer=tokenizer, batch_size=len(records), **kwargs)
    dm.setup()
    return dm


def _answers(record) -> list[str]:
    if "messages" in record:
        return [m["content"] for m in record["messages"] if m["role"] == "assistant"]
    return [record["response"]]


@pytest.mark.parametrize("style", ["llama", "qwen", "gemma", "llama3"])
def test_the_taught_tokens_of_a_record_count_its_answers_utf8_bytes_and_one_per_end(tmp_path, style):
    """Per record: the bytes on taught tokens = the UTF-8 size of every answer + 1 per end-of-turn (chat) or
    end-of-text (prompt/response); prompt, system, user text, the template's markers and padding count 0."""
    write_corpus(tmp_path / "c")
    tok = family_tokenizer(style, tmp_path / "c", 320)
    tok.save_pretrained(tmp_path / "model")  # as a model folder looks
    records = PAIRS if style == "llama" else [*PAIRS, CHAT]  # the llama-style folder has no chat template
    dm = _module(tmp_path, str(tmp_path / "model"), records, max_length=256)
    batch = next(iter(dm.val_dataloader()))
    taught = batch["labels"] != -100
    for row, record in enumerate(records):
        answers = _answers(record)
        expected = sum(len(a.encode("utf-8")) for a in answers) + len(answers)
        assert int(batch["token_bytes"][row][taught[row]].sum()) == expected, (style, row)
        assert int(batch["token_bytes"][row][~taught[row]].sum()) == 0
    assert "token_bytes" not in next(iter(dm.train_dataloader()))  # training batches carry nothing extra


def test_truncation_keeps_only_the_bytes_of_the_tokens_kept(tmp_path):
    write_corpus(tmp_path / "c")
    tok = family_tokenizer("qwen", tmp_path / "c", 320)
    whole = _module(tmp_path, tok, PAIRS[1:], max_length=256)
    cut = _module(tmp_path, tok, PAIRS[1:], max_length=12)
    w, c = whole.splits["val"][0][2], cut.splits["val"][0][2]
    assert len(c) == 12 and c.tolist() == w[:12].tolist()


def test_validation_reports_bits_per_byte_on_chat_records(tmp_path):
    write_corpus(tmp_path / "c")
    tok = family_tokenizer("qwen", tmp_path / "c", 320)
    dm = _module(tmp_path, tok, [*PAIRS, CHAT], max_length=256)
    model = llama_lm(len(tok), hidden_size=32, num_layers=1, num_heads=2, max_position=256, seed=0)
    (scores,) = trainer(tmp_path, limit_val_batches=1.0).validate(CausalLMModule(model), datamodule=dm, verbose=False)
    batch = next(iter(dm.val_dataloader()))
    tokens = int((batch["labels"][:, 1:] != -100).sum())  # position 0 is never a target
    scored_bytes = int(batch["token_bytes"][:, 1:][batch["labels"][:, 1:] != -100].sum())
    assert scores["val/bpb"] == pytest.approx(scores["val/loss"] * tokens / (scored_bytes * math.log(2)), rel=1e-5)


def test_a_template_that_rewrites_the_answers_gives_a_warning_and_no_bits_per_byte(tmp_path):
    write_corpus(tmp_path / "c")
    tok = family_tokenizer("qwen", tmp_path / "c", 320)
    tok.chat_template = "{% for m in messages %}{{ m['content'] | upper }}<|im_end|>\n{% endfor %}"
    with pytest.warns(UserWarning, match=r"no bits per byte for .*data\.jsonl: .*line 3: the chat template does not"):
        dm = _module(tmp_path, tok, [*PAIRS, CHAT], max_length=256)
    batch = next(iter(dm.val_dataloader()))
    assert "token_bytes" not in batch and len(dm.splits["val"][0]) == 2  # every example without, not only some
    assert int((batch["labels"] != -100).sum()) > 0  # the data itself is unchanged: it still trains and validates

"""Prompt/response and chat data: labels on what the assistant says only, any tokenizer's special tokens, the
truncation policy, and malformed records named with their file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from lightning_kd.data.prompt_response import PromptResponseDataModule, read_examples  # noqa: E402
from lightning_kd.data.text_corpus import TextCorpus  # noqa: E402
from lightning_kd.data.tokenizer import PAD_TOKEN, train_bpe_tokenizer  # noqa: E402

# --- prompt / response ---------------------------------------------------------------------------------------


@pytest.fixture
def tiny_tokenizer(tmp_path, corpus_dir):
    return train_bpe_tokenizer(TextCorpus.from_directory(corpus_dir, "*.py"), 300)


def _write_jsonl(path: Path, records: list[dict]) -> str:
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n\n", encoding="utf-8")
    return str(path)


PAIRS = [
    {"prompt": "def alpha_1(x", "response": ", y=1):\n    return x"},
    {"prompt": "# café\n", "response": "def beta_2(x, y=2):\n    return x * 3 + y - 2\n", "id": 7},
    {"prompt": "", "response": "x"},
]


def test_prompt_response_labels_mask_prompt_and_padding(tmp_path, tiny_tokenizer):
    train = _write_jsonl(tmp_path / "train.jsonl", PAIRS)
    dm = PromptResponseDataModule(train, train, tokenizer=tiny_tokenizer, batch_size=3, max_length=64)
    batch = next(iter(dm.val_dataloader()))  # in file order
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    assert ids.dtype == mask.dtype == labels.dtype == torch.int64
    for row, pair in enumerate(PAIRS):
        prompt = tiny_tokenizer.encode(pair["prompt"]).ids
        response = tiny_tokenizer.encode(pair["response"]).ids
        n = len(prompt) + len(response) + 1
        assert ids[row, :n].tolist() == prompt + response + [dm.eos_token_id]
        assert mask[row].tolist() == [1] * n + [0] * (ids.shape[1] - n)
        assert labels[row].tolist() == [-100] * len(prompt) + response + [dm.eos_token_id] + [-100] * (ids.shape[1] - n)
        assert bool((ids[row, n:] == dm.pad_token_id).all())
    assert ids.shape[1] == max(
        len(tiny_tokenizer.encode(p["prompt"]).ids) + len(tiny_tokenizer.encode(p["response"]).ids) + 1 for p in PAIRS
    )


def test_prompt_response_truncation_and_tokenizer_file(tmp_path, tiny_tokenizer):
    path = tmp_path / "tokenizer.json"
    tiny_tokenizer.save(str(path))
    train = _write_jsonl(tmp_path / "train.jsonl", PAIRS)
    full = [tiny_tokenizer.encode(p["prompt"]).ids + tiny_tokenizer.encode(p["response"]).ids for p in PAIRS]
    n_prompts = [len(tiny_tokenizer.encode(p["prompt"]).ids) for p in PAIRS]
    max_length = max(n_prompts) + 2
    dm = PromptResponseDataModule(train, train, tokenizer=str(path), max_length=max_length)
    dm.setup()
    eos = dm.eos_token_id
    for (ids, labels, *_), tokens, n in zip(dm.splits["val"], full, n_prompts):  # (and their token bytes)
        assert ids.tolist() == (tokens + [eos])[:max_length]  # the start is kept
        assert labels.tolist() == ([-100] * n + (tokens + [eos])[n:])[:max_length]
    assert dm.stats["val_truncated"] == sum(len(t) + 1 > max_length for t in full) >= 1
    assert dm.stats["val_examples"] == len(PAIRS) and dm.stats["val_chats"] == 0
    long = _write_jsonl(tmp_path / "long.jsonl", [PAIRS[0], {"prompt": "x " * 80, "response": "y"}])
    with pytest.raises(ValueError, match=r"long\.jsonl, line 2: no response token is left within max_length=8"):
        PromptResponseDataModule(long, long, tokenizer=tiny_tokenizer, max_length=8).setup()


def test_prompt_response_errors_name_file_line_and_key(tmp_path, tiny_tokenizer):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "response": "b"}\n\n{"prompt": "a"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.jsonl, line 3: missing key 'response'"):
        read_examples(bad)
    bad.write_text('{"prompt": "a", "response": "b"}\n{"prompt": 1, "response": "b"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="line 2: 'prompt' must be a string, got int"):
        read_examples(bad)
    bad.write_text('{"prompt": "a", "response": "b"\n', encoding="utf-8")
    with pytest.raises(ValueError, match="line 1: not valid JSON"):
        read_examples(bad)
    good = _write_jsonl(tmp_path / "good.jsonl", PAIRS)
    with pytest.raises(FileNotFoundError, match="absent.jsonl"):
        PromptResponseDataModule(good, str(tmp_path / "absent.jsonl"), tokenizer=tiny_tokenizer)
    with pytest.raises(FileNotFoundError, match="tok.json"):
        PromptResponseDataModule(good, good, tokenizer=str(tmp_path / "tok.json"))
    with pytest.raises(ValueError, match="max_length must be >= 2 .* got 1"):
        PromptResponseDataModule(good, good, tokenizer=tiny_tokenizer, max_length=1)
    no_eos = train_bpe_tokenizer(TextCorpus.from_files([good]), 300, special_tokens=[PAD_TOKEN])
    with pytest.raises(ValueError, match="without '<\\|endoftext\\|>': which of its tokens ends a text"):
        no_eos.save(str(tmp_path / "no_eos.json"))
        PromptResponseDataModule(good, good, tokenizer=str(tmp_path / "no_eos.json"))


# --- the models' own tokenizers: their special tokens, their chat templates ------------------------------------


@pytest.fixture(scope="module")
def styles(tmp_path_factory):
    from tests.lm_families import family_tokenizer
    from tests.lm_helpers import write_corpus

    root = tmp_path_factory.mktemp("styles")
    write_corpus(root / "corpus")
    return {style: family_tokenizer(style, root / "corpus") for style in ("llama", "qwen", "gemma", "llama3")}


def test_a_llama_style_tokenizer_gets_its_bos_and_eos_and_pads_with_eos(tmp_path, styles):
    tok = styles["llama"]  # <s> added in front, </s> ends, no pad token
    tok.save_pretrained(tmp_path / "model")
    train = _write_jsonl(tmp_path / "train.jsonl", PAIRS)
    dm = PromptResponseDataModule(train, train, tokenizer=str(tmp_path / "model"), batch_size=3, max_length=64)
    assert (dm.bos_token_id, dm.eos_token_id, dm.pad_token_id) == (tok.bos_token_id, tok.eos_token_id, tok.eos_token_id)
    batch = next(iter(dm.val_dataloader()))
    for row, pair in enumerate(PAIRS):
        prompt = tok(pair["prompt"], add_special_tokens=False)["input_ids"]
        response = tok(pair["response"], add_special_tokens=False)["input_ids"]
        n = 1 + len(prompt) + len(response) + 1
        assert batch["input_ids"][row, :n].tolist() == [tok.bos_token_id, *prompt, *response, tok.eos_token_id]
        assert batch["labels"][row, :n].tolist() == [-100] * (1 + len(prompt)) + [*response, tok.eos_token_id]
        assert (batch["labels"][row, n:] == -100).all() and (batch["attention_mask"][row, n:] == 0).all()


def test_a_qwen_style_tokenizer_whose_pad_is_its_eos_keeps_the_responses_eos_label(tmp_path, styles):
    tok = styles["qwen"]
    train = _write_jsonl(tmp_path / "train.jsonl", PAIRS)
    dm = PromptResponseDataModule(train, train, tokenizer=tok, batch_size=3, max_length=64)  # the object itself
    assert dm.pad_token_id == dm.eos_token_id == tok.eos_token_id and dm.bos_token_id is None
    batch = next(iter(dm.val_dataloader()))
    ends = batch["attention_mask"].sum(1)
    for row in range(3):
        last = int(ends[row]) - 1
        assert batch["input_ids"][row, last] == tok.eos_token_id == batch["labels"][row, last]
        assert (batch["labels"][row, last + 1 :] == -100).all()


CHAT = [
    {"role": "system", "content": "You write Python."},
    {"role": "user", "content": "A function alpha?"},
    {"role": "assistant", "content": "def alpha_1(x):\n    return x"},
    {"role": "user", "content": "And beta?"},
    {"role": "assistant", "content": "def beta_2(x, y=2):\n    return x * 3"},
]


@pytest.mark.parametrize(
    "style, end", [("qwen", "<|im_end|>\n"), ("gemma", "<end_of_turn>\n"), ("llama3", "<|eot_id|>")]
)
def test_chat_records_learn_the_assistant_turns_only(tmp_path, styles, style, end):
    tok = styles[style]
    train = _write_jsonl(tmp_path / "chat.jsonl", [{"messages": CHAT}, PAIRS[0]])  # the two forms may be mixed
    dm = PromptResponseDataModule(train, train, tokenizer=tok, batch_size=2, max_length=256)
    dm.setup()
    assert dm.stats["val_examples"] == 2 and dm.stats["val_chats"] == 1 and dm.stats["val_truncated"] == 0
    ids, labels = dm.splits["val"][0][:2]  # held-out examples carry their token bytes too
    assert tok.decode(ids) == tok.apply_chat_template(CHAT, tokenize=False)  # the template, tokenised once
    learned = tok.decode([t for t, label in zip(ids, labels) if label != -100])
    assert learned == f"{CHAT[2]['content']}{end}{CHAT[4]['content']}{end}"  # each turn and its end marker
    # the labelled tokens are exactly the ids at those positions (labels are not shifted)
    assert all(label in (-100, token) for token, label in zip(ids.tolist(), labels.tolist()))


def test_chat_records_need_a_template_and_bad_ones_are_named(tmp_path, styles, tiny_tokenizer):
    chat = _write_jsonl(tmp_path / "chat.jsonl", [{"messages": CHAT}])
    with pytest.raises(ValueError, match=r"chat\.jsonl, line 1: a 'messages' record needs a chat template"):
        PromptResponseDataModule(chat, chat, tokenizer=tiny_tokenizer).setup()
    bad = tmp_path / "bad.jsonl"
    for record, match in [
        ({"messages": [{"role": "user", "content": "hi"}]}, "line 1: the conversation has no assistant message"),
        ({"messages": [{"role": "bot", "content": "hi"}]}, "line 1: message 0 has role 'bot'; roles are system"),
        ({"messages": [{"role": "user"}]}, "line 1: message 0 must be an object with a string 'role' and"),
        ({"messages": [{"role": "assistant", "content": " "}]}, r"line 1: message 0 \(assistant\) is empty"),
        ({"prompt": "a", "response": ""}, "line 1: the response is empty"),
        ({"messages": "hello"}, "line 1: 'messages' must be a non-empty list"),
    ]:
        bad.write_text(json.dumps(record) + "\n", encoding="utf-8")
        with pytest.raises(ValueError, match=match):
            read_examples(bad)
    long = _write_jsonl(tmp_path / "long.jsonl", [{"messages": [{"role": "user", "content": "x " * 200}, CHAT[2]]}])
    with pytest.raises(ValueError, match=r"long\.jsonl, line 1: no response token is left within max_length=32"):
        PromptResponseDataModule(long, long, tokenizer=styles["qwen"], max_length=32).setup()


def test_a_jsonl_line_that_is_not_utf8_is_named_with_file_line_and_byte(tmp_path):
    bad = tmp_path / "latin.jsonl"
    bad.write_bytes(b'{"prompt": "a", "response": "b"}\n{"prompt": "caf\xe9", "response": "b"}\n')
    with pytest.raises(ValueError, match=r"latin\.jsonl, line 2: not UTF-8 \(byte 0xe9 at column 16\); JSONL is UTF-8"):
        read_examples(bad)

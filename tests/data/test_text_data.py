"""Text data for causal-LM distillation: stdlib corpus rule, split by file, BPE cache, fingerprints, batches."""

from __future__ import annotations

import json
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_kd.data import tokenizer as tokenizer_module
from lightning_kd.data.text import PackedTextDataModule
from lightning_kd.data.text_corpus import STDLIB_EXCLUDED_DIRS, TextCorpus, path_fraction, stdlib_corpus
from lightning_kd.data.tokenizer import (
    EOS_TOKEN,
    PAD_TOKEN,
    as_transformers_tokenizer,
    train_bpe_tokenizer,
    vocab_fingerprint,
)
from tests.lm_helpers import WORDS, write_unicode_corpus  # noqa: E402


def _tiny_module(corpus_dir: Path, cache: Path, **kwargs) -> PackedTextDataModule:
    args = dict(text_dir=str(corpus_dir), pattern="*.py", vocab_size=300, val_fraction=0.3, cache_dir=str(cache))
    return PackedTextDataModule(**{**args, "seq_len": 16, "batch_size": 4, **kwargs})


# --- corpus --------------------------------------------------------------------------------------------------


def test_stdlib_corpus_follows_the_pinned_rule():
    corpus = stdlib_corpus()
    root = Path(sysconfig.get_paths()["stdlib"]).resolve()
    # the rule, computed independently: every .py below root minus excluded directories and test_*.py files
    expected = set()
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if not set(rel.parts[:-1]) & STDLIB_EXCLUDED_DIRS and not rel.name.startswith("test_"):
            expected.add(rel.as_posix())
    assert set(corpus.files) == expected and list(corpus.files) == sorted(expected)
    assert {"os.py", "json/__init__.py", "unittest/case.py", "turtledemo/__main__.py"} <= set(corpus.files)
    for excluded in ("site-packages", "test", "unittest/test", "idlelib/idle_test", "lib2to3/tests"):
        if (root / excluded).is_dir():  # present in this installation: then it must be left out
            assert not [f for f in corpus.files if f.startswith(f"{excluded}/")], excluded
    assert corpus.label.endswith(f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro} stdlib")
    if sys.version_info[:3] == (3, 11, 7) and sys.platform == "linux":
        assert len(corpus.files) == 734 and corpus.num_chars == 12_117_233
    train, val = corpus.split(0.05)
    assert 0.02 < len(val.files) / len(corpus.files) < 0.09


def test_stdlib_rule_on_a_fake_tree(tmp_path, monkeypatch):
    kept = ["a.py", "pkg/__init__.py", "pkg/testing.py", "turtledemo/demo.py", "pkg/sub/b.py"]
    left_out = [
        "test_a.py",
        "pkg/test_b.py",
        "test/regrtest.py",
        "pkg/tests/t.py",
        "idlelib/idle_test/t.py",
        "site-packages/numpy/core.py",
        "dist-packages/x.py",
        "__pycache__/a.py",
        "pkg/test/deep/x.py",
        "notes.txt",
    ]
    for rel in kept + left_out:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x = 1\n")
    monkeypatch.setattr(sysconfig, "get_paths", lambda: {"stdlib": str(tmp_path)})
    assert stdlib_corpus().files == tuple(sorted(kept))


def test_split_by_file_is_deterministic_disjoint_and_stable(tmp_path):
    folder = write_unicode_corpus(tmp_path / "c", n=40, suffix=".txt")
    corpus = TextCorpus.from_directory(folder)
    train, val = corpus.split(0.25)
    assert (train.files, val.files) == tuple(f.files for f in TextCorpus.from_directory(folder).split(0.25))
    assert not set(train.files) & set(val.files) and set(train.files) | set(val.files) == set(corpus.files)
    assert set(val.files) == {f for f in corpus.files if path_fraction(f) < 0.25} and 4 <= len(val.files) <= 16
    # a new file does not move the others
    write_unicode_corpus(folder, n=1, suffix=".txt", offset=40)
    train2, val2 = TextCorpus.from_directory(folder).split(0.25)
    assert set(val.files) <= set(val2.files) and set(train.files) <= set(train2.files)
    # each side keeps at least one file whatever the fraction
    small = TextCorpus.from_files(sorted(folder.glob("*.txt"))[:3])
    assert [len(s.files) for s in small.split(1e-9)] == [2, 1]
    assert [len(s.files) for s in small.split(1 - 1e-9)] == [1, 2]


def test_corpus_hashes_and_reading(tmp_path, corpus_dir):
    corpus = TextCorpus.from_directory(corpus_dir, "*.py")
    sha, paths_sha = corpus.sha256, corpus.paths_sha256
    (corpus_dir / "mod_00.py").write_text("changed", encoding="utf-8")
    again = TextCorpus.from_directory(corpus_dir, "*.py")
    assert again.paths_sha256 == paths_sha and again.sha256 != sha  # edits change the content hash only
    (corpus_dir / "bad.py").write_bytes(b"ok \xff\xfe end")
    assert TextCorpus.from_directory(corpus_dir, "*.py").read("bad.py") == "ok \ufffd\ufffd end"


def test_corpus_errors_name_the_path(tmp_path, corpus_dir):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        TextCorpus.from_directory(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"\*\.md"):
        TextCorpus.from_directory(corpus_dir, "*.md")
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        TextCorpus.from_files([corpus_dir / "mod_00.py", corpus_dir / "missing.txt"])
    with pytest.raises(ValueError, match="at least two"):
        TextCorpus.from_files([corpus_dir / "mod_00.py"]).split(0.1)
    with pytest.raises(ValueError, match="val_fraction=1.5"):
        TextCorpus.from_directory(corpus_dir, "*.py").split(1.5)


# --- tokenizer -----------------------------------------------------------------------------------------------


def test_tokenizer_is_reused_not_retrained(tmp_path, corpus_dir, monkeypatch):
    corpus = TextCorpus.from_directory(corpus_dir, "*.py")
    first = train_bpe_tokenizer(corpus, 300, tmp_path / "cache")
    (saved,) = (tmp_path / "cache").glob("bpe-300-*/tokenizer.json")
    assert first.get_vocab_size() == 300
    assert json.loads((saved.parent / "settings.json").read_text())["vocab_size"] == 300
    mtime = saved.stat().st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("retrained")

    monkeypatch.setattr(tokenizer_module, "_train_bpe", fail)
    second = train_bpe_tokenizer(corpus, 300, tmp_path / "cache")
    assert saved.stat().st_mtime_ns == mtime and vocab_fingerprint(second) == vocab_fingerprint(first)
    with pytest.raises(AssertionError, match="retrained"):  # other settings: a new tokenizer, in its own folder
        train_bpe_tokenizer(corpus, 320, tmp_path / "cache")


def test_tokenizer_refuses_a_file_it_did_not_write(tmp_path, corpus_dir):
    corpus = TextCorpus.from_directory(corpus_dir, "*.py")
    train_bpe_tokenizer(corpus, 300, tmp_path / "cache")
    (saved,) = (tmp_path / "cache").glob("bpe-300-*/tokenizer.json")
    meta_path = saved.parent / "settings.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "min_frequency": 5}))
    with pytest.raises(FileExistsError, match=r"tokenizer\.json.*min_frequency: 5 there, 2 wanted"):
        train_bpe_tokenizer(corpus, 300, tmp_path / "cache")
    meta_path.write_text(json.dumps({**meta, "vocab_fingerprint": "0" * 64}))
    with pytest.raises(FileExistsError, match="modified"):
        train_bpe_tokenizer(corpus, 300, tmp_path / "cache")
    meta_path.unlink()
    user_file = saved.read_text()
    with pytest.raises(FileExistsError, match=f"{saved}.*settings.json"):
        train_bpe_tokenizer(corpus, 300, tmp_path / "cache")
    assert saved.read_text() == user_file and not meta_path.exists()
    with pytest.raises(ValueError, match="vocab_size=100"):
        train_bpe_tokenizer(corpus, 100)


def test_vocab_fingerprint_is_identity_not_size(tmp_path, corpus_dir):
    from transformers import AutoTokenizer

    tok = train_bpe_tokenizer(TextCorpus.from_directory(corpus_dir, "*.py"), 300)
    fast = as_transformers_tokenizer(tok, model_max_length=64)
    fast.save_pretrained(tmp_path / "hf")
    loaded = AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert loaded.eos_token_id == tok.token_to_id(EOS_TOKEN) and loaded.pad_token_id == tok.token_to_id(PAD_TOKEN)
    vocab = tok.get_vocab(with_added_tokens=True)
    fp = vocab_fingerprint(tok)
    assert fp == vocab_fingerprint(fast) == vocab_fingerprint(loaded)
    assert fp == vocab_fingerprint(vocab, [EOS_TOKEN, PAD_TOKEN])
    assert vocab_fingerprint(vocab) != fp  # which tokens are special is part of it
    other_text = tmp_path / "other"
    for i, word in enumerate(WORDS):
        (other_text / f"{i}.txt").parent.mkdir(exist_ok=True)
        (other_text / f"{i}.txt").write_text(f"{word} loves {word[::-1]}; " * (20 + i), encoding="utf-8")
    other = train_bpe_tokenizer(TextCorpus.from_directory(other_text), 300)
    assert other.get_vocab_size() == tok.get_vocab_size() and vocab_fingerprint(other) != fp
    a, b = sorted(vocab)[100:102]
    swapped = {**vocab, a: vocab[b], b: vocab[a]}  # same tokens, same size, other ids
    assert vocab_fingerprint(swapped, [EOS_TOKEN, PAD_TOKEN]) != fp
    with pytest.raises(TypeError, match="got list"):
        vocab_fingerprint(["a"])


# --- packed corpus -------------------------------------------------------------------------------------------


def test_packed_sequences_concatenate_back_to_the_token_stream(tmp_path, corpus_dir):
    dm = _tiny_module(corpus_dir, tmp_path / "cache")
    dm.setup()
    assert dm.vocab_size == 300 and (dm.eos_token_id, dm.pad_token_id) == (0, 1)
    for name, corpus in (("train", dm.train_corpus), ("val", dm.val_corpus)):
        rows = dm.splits[name].ids  # (N, 16)
        # decoding the packed rows gives back the documents, each ended by end-of-text, up to the dropped tail
        text = "".join(f"{t}{EOS_TOKEN}" for t in corpus.texts())
        n_tokens = len(dm.token_stream(corpus))
        assert rows.shape == (n_tokens // 16, 16) and rows.dtype == np.uint16
        decoded = dm.tokenizer.decode(rows.reshape(-1).tolist(), skip_special_tokens=False)
        assert text.startswith(decoded) and len(decoded) > 0.8 * len(text)
        assert dm.stats[f"{name}_files"] == len(corpus.files) and dm.stats[f"{name}_sequences"] == len(rows)
    assert dm.stats["train_files"] + dm.stats["val_files"] == 12 and dm.stats["val_files"] >= 1
    batch = next(iter(dm.train_dataloader()))
    assert {k: (tuple(v.shape), v.dtype) for k, v in batch.items()} == {
        k: ((4, 16), torch.int64) for k in ("input_ids", "attention_mask", "labels")
    }
    assert bool((batch["attention_mask"] == 1).all()) and torch.equal(batch["labels"], batch["input_ids"])


def test_the_default_stream_is_the_raw_bpe_encoding_each_document_ended_by_eos(tmp_path, corpus_dir):
    """The library's BPE, now used through transformers, encodes exactly as the tokenizers library does."""
    dm = _tiny_module(corpus_dir, tmp_path / "cache")
    raw = train_bpe_tokenizer(dm.train_corpus, 300, tmp_path / "cache")
    expected = [i for text in dm.train_corpus.texts() for i in [*raw.encode(text).ids, raw.token_to_id(EOS_TOKEN)]]
    assert dm.token_stream(dm.train_corpus).tolist() == expected
    assert dm.vocab_fingerprint == vocab_fingerprint(raw)


@pytest.mark.parametrize("style", ["llama", "opt", "gpt2", "qwen"])
def test_a_models_tokenizer_encodes_the_text_with_its_own_bos_and_eos(tmp_path, corpus_dir, style):
    """A model folder's tokenizer: every document framed as the tokenizer frames a text (Llama's <s>, OPT's </s>
    in front; nothing for GPT-2 and Qwen) and ended by its EOS; the vocabulary is the folder's."""
    from transformers import AutoTokenizer

    from tests.lm_families import family_tokenizer

    family_tokenizer(style, corpus_dir).save_pretrained(tmp_path / "model")
    tok = AutoTokenizer.from_pretrained(tmp_path / "model")
    for given in (str(tmp_path / "model"), str(tmp_path / "model" / "tokenizer.json"), tok):
        dm = _tiny_module(corpus_dir, tmp_path / f"cache-{style}", tokenizer=given)
        assert dm.vocab_fingerprint == vocab_fingerprint(tok) and dm.vocab_size == len(tok)
        expected = []
        for text in dm.train_corpus.texts():
            ids = tok(text)["input_ids"]  # the tokenizer's own framing
            expected += [*ids, tok.eos_token_id]
        assert dm.token_stream(dm.train_corpus).tolist() == expected
    bos = {"llama": "<s>", "opt": "</s>", "gpt2": None, "qwen": None}[style]
    assert dm.bos_token_id == (tok.convert_tokens_to_ids(bos) if bos else None)


def test_a_tokenizer_that_is_not_there_is_named(tmp_path, corpus_dir):
    with pytest.raises(FileNotFoundError, match=r"tokenizer '.*absent' does not exist: give a model folder"):
        _tiny_module(corpus_dir, tmp_path / "cache", tokenizer=str(tmp_path / "absent"))
    from lightning_kd.data.text_tokenizer import load_tokenizer

    with pytest.raises(FileNotFoundError, match="'nobody/no-such-model' does not exist: .* looked up in the local hub"):
        load_tokenizer("nobody/no-such-model")  # a hub id not in the local cache (and no download asked)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty holds no tokenizer \(no tokenizer.json"):
        _tiny_module(corpus_dir, tmp_path / "cache", tokenizer=str(tmp_path / "empty"))


def test_packed_token_cache_is_reused_and_train_tokens_capped(tmp_path, corpus_dir):
    dm = _tiny_module(corpus_dir, tmp_path / "cache")
    dm.setup()
    caches = sorted((tmp_path / "cache").glob("tokens-*.npy"))
    assert len(caches) == 2 and all(np.load(c).dtype == np.uint16 for c in caches)
    mtimes = [c.stat().st_mtime_ns for c in caches]
    capped = _tiny_module(corpus_dir, tmp_path / "cache", max_train_tokens=50)
    capped.setup()
    assert [c.stat().st_mtime_ns for c in caches] == mtimes
    # 50 tokens = 3 whole sequences of 16, the first, the middle and the last: the whole corpus, not its first files
    n = len(dm.splits["train"])
    assert n > 6 and capped.stats["train_tokens"] == 48 and len(capped.splits["train"]) == 3
    middle = round((n - 1) / 2)
    assert np.array_equal(capped.splits["train"].ids, dm.splits["train"].ids[[0, middle, n - 1]])
    assert capped.vocab_fingerprint == dm.vocab_fingerprint
    # the held-out split the same way: a fixed sample spread over all held-out files, not the first batches' files
    v = len(dm.splits["val"])
    sampled = _tiny_module(corpus_dir, tmp_path / "cache", max_val_tokens=40)
    sampled.setup()
    assert v > 4 and len(sampled.splits["val"]) == 2 and sampled.stats["val_tokens"] == 32
    assert np.array_equal(sampled.splits["val"].ids, dm.splits["val"].ids[[0, v - 1]])
    assert np.array_equal(sampled.splits["train"].ids, dm.splits["train"].ids)  # training untouched


def test_same_seed_same_batch_order(tmp_path, corpus_dir):
    global_seeds = iter([11, 22, 33])

    def order(seed: int) -> list[torch.Tensor]:
        dm = _tiny_module(corpus_dir, tmp_path / "cache", seed=seed)
        torch.manual_seed(next(global_seeds))  # the global RNG must not matter
        loader = dm.train_dataloader()
        return [b["input_ids"] for _ in range(2) for b in loader]  # two epochs

    a, b, c = order(0), order(0), order(1)
    assert len(a) >= 4 and all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    half = len(a) // 2
    assert not all(torch.equal(x, y) for x, y in zip(a[:half], a[half:]))  # epochs differ from each other


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(seq_len=0), "seq_len must be >= 2, got 0"),
        (dict(batch_size=-2), "batch_size must be >= 1, got -2"),
        (dict(val_fraction=1.0), r"val_fraction=1.0 must be in \(0, 1\)"),
        (dict(max_train_tokens=8), "max_train_tokens=8 .* seq_len=16"),
        (dict(max_val_tokens=15), "max_val_tokens=15 is less than one sequence: use at least seq_len=16"),
        (dict(text_files=["a.txt"]), "text_files or text_dir"),
    ],
)
def test_packed_arguments_are_validated(tmp_path, corpus_dir, kwargs, match):
    with pytest.raises(ValueError, match=match):
        _tiny_module(corpus_dir, tmp_path / "cache", **kwargs)


def test_packed_errors_name_the_file_and_the_fix(tmp_path, corpus_dir):
    with pytest.raises(FileNotFoundError, match="no_such.txt"):
        PackedTextDataModule(text_files=[str(corpus_dir / "mod_00.py"), str(tmp_path / "no_such.txt")])
    dm = _tiny_module(corpus_dir, tmp_path / "cache", seq_len=100_000)
    with pytest.raises(ValueError, match="seq_len=100000: lower seq_len"):
        dm.setup()


def test_bytes_that_are_not_utf8_are_named_with_file_and_count(tmp_path, corpus_dir):
    (corpus_dir / "mod_03.py").write_bytes((corpus_dir / "mod_03.py").read_bytes() + b"# caf\xe9 \xff\xfe\n")
    dm = _tiny_module(corpus_dir, tmp_path / "cache", val_fraction=0.3)
    with pytest.warns(UserWarning, match=r"1 file\(s\) under .* hold bytes that are not UTF-8; 3 were replaced .*"
                                         r"mod_03\.py \(3\)\. Convert them to UTF-8"):  # fmt: skip
        dm.setup()


def test_sequences_without_a_next_token_and_a_text_dir_that_is_a_file_are_refused(tmp_path, corpus_dir):
    with pytest.raises(ValueError, match="seq_len must be >= 2, got 1: a sequence of one token has no next token"):
        _tiny_module(corpus_dir, tmp_path / "cache", seq_len=1)
    file = corpus_dir / "mod_00.py"
    with pytest.raises(NotADirectoryError, match=r"text_dir='.*mod_00\.py' is a file, not a folder: pass it as text"):
        PackedTextDataModule(text_dir=str(file))

"""Bits per byte on packed text: the held-out batches say the bytes of text each token stands for, and the
validation reports ``val/bpb`` from them (issue 23: LM figures in nats/token, perplexity and bits per byte)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lightning_kd.data.text import PackedTextDataModule
from lightning_kd.models.language import llama_lm
from lightning_kd.modules import CausalLMModule
from tests.lm_helpers import trainer, write_corpus


def _module(corpus, cache, **kwargs) -> PackedTextDataModule:
    args = dict(text_dir=str(corpus), pattern="*.py", vocab_size=300, val_fraction=0.3, cache_dir=str(cache))
    return PackedTextDataModule(**{**args, "seq_len": 16, "batch_size": 4, **kwargs})


def test_each_token_of_ascii_text_stands_for_its_decoded_bytes(tmp_path):
    """ASCII text: a token's bytes are its decoded text's length (end-of-text 1), row by row, also for a sample of
    rows (``max_val_tokens``) — the widths follow the rows kept."""
    corpus = write_corpus(tmp_path / "corpus")
    for limit in (None, 160):
        dm = _module(corpus, tmp_path / "cache", max_val_tokens=limit)
        dm.setup()
        val, tok = dm.splits["val"], dm.tokenizer
        expected = [[1 if i == tok.eos_token_id else len(tok.decode([int(i)])) for i in row] for row in val.ids]
        assert val.token_bytes.tolist() == expected
        assert len(val) == (10 if limit else len(val))
    batch = next(iter(dm.val_dataloader()))
    assert torch.equal(batch["token_bytes"], torch.as_tensor(np.asarray(expected[:4])))
    assert "token_bytes" not in next(iter(dm.train_dataloader()))  # training batches carry nothing extra


@pytest.mark.parametrize("style", ["gpt2", "llama", "qwen"])
def test_a_whole_document_counts_its_utf8_bytes_and_one_for_its_end(tmp_path, corpus_dir, style):
    """Non-ASCII text and a model folder's tokenizer (Llama's <s> in front: 0 bytes): every document wholly inside
    the packed rows sums to its UTF-8 size + 1."""
    from tests.lm_families import family_tokenizer

    family_tokenizer(style, corpus_dir).save_pretrained(tmp_path / "model")
    dm = _module(corpus_dir, tmp_path / "cache", tokenizer=str(tmp_path / "model"))
    dm.setup()
    val, eos = dm.splits["val"], dm.tokenizer.eos_token_id
    ids, widths = val.ids.reshape(-1), val.token_bytes.reshape(-1)
    ends = np.flatnonzero(ids == eos)
    texts = dm.val_corpus.texts()
    assert len(ends) >= 2
    for k, (lo, hi) in enumerate(zip(ends[:-1] + 1, ends[1:] + 1)):  # documents 1, 2, …: wholly inside the rows
        assert int(widths[lo:hi].sum()) == len(texts[k + 1].encode("utf-8")) + 1
    if style == "llama":
        assert widths[ids == dm.tokenizer.bos_token_id].tolist() == [0] * int((ids == dm.tokenizer.bos_token_id).sum())


def test_validation_reports_bits_per_byte_from_the_scored_tokens(tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    dm = _module(corpus, tmp_path / "cache")
    dm.setup()
    model = llama_lm(dm.vocab_size, hidden_size=32, num_layers=1, num_heads=2, max_position=64, seed=0)
    (scores,) = trainer(tmp_path, limit_val_batches=1.0).validate(CausalLMModule(model), datamodule=dm, verbose=False)
    val = dm.splits["val"]
    tokens = len(val) * (dm.seq_len - 1)  # position t predicts token t + 1: the first token of a row is not scored
    scored_bytes = int(val.token_bytes[:, 1:].sum())
    assert scores["val/bpb"] == pytest.approx(scores["val/loss"] * tokens / (scored_bytes * math.log(2)), rel=1e-5)
    assert scores["val/ppl"] == pytest.approx(math.exp(scores["val/loss"]), rel=1e-5)


def test_shape_mismatch_is_refused():
    from lightning_kd.data.packed import PackedSequences

    with pytest.raises(ValueError, match=r"token_bytes has shape \(2, 3\), the token rows \(2, 4\)"):
        PackedSequences(np.zeros((2, 4), np.int64), token_bytes=np.zeros((2, 3), np.int64))

"""Fixtures of the LightningModule tests: a small packed-text data module on a generated Python corpus."""

from __future__ import annotations

import pytest

from tests.lm_helpers import V, write_corpus


@pytest.fixture
def text_dm(tmp_path):
    from lightning_kd.data.text import PackedTextDataModule

    corpus = write_corpus(tmp_path / "corpus")
    return PackedTextDataModule(
        text_dir=str(corpus), pattern="*.py", vocab_size=V, val_fraction=0.3, cache_dir=str(tmp_path / "cache"),
        seq_len=16, batch_size=4,
    )  # fmt: skip

"""Fixtures of the data tests: a small corpus of Python files with non-ASCII text."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.lm_helpers import write_unicode_corpus


@pytest.fixture
def corpus_dir(tmp_path) -> Path:
    return write_unicode_corpus(tmp_path / "corpus")

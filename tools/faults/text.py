"""Faults of text data for language models: encodings, empty responses, sequences with nothing to predict, paths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tools.faults.harness import Case, captured, fault
from tools.faults.setups import Trigger


def _corpus(folder: str = "corpus", n: int = 8) -> Path:
    root = Path(folder)
    root.mkdir()
    for i in range(n):
        (root / f"m{i}.py").write_text("".join(f"def f_{i}_{j}(x):\n    return x + {j}\n" for j in range(30)))
    return root


def _packed(**kwargs: Any) -> Any:
    from lightning_kd.data import PackedTextDataModule

    args = dict(pattern="*.py", vocab_size=300, seq_len=16, batch_size=4, val_fraction=0.3, cache_dir="cache")
    return PackedTextDataModule(**{**args, **kwargs})


@fault(
    "text data",
    r"1 file\(s\) under .*corpus hold bytes that are not UTF-8; 2 were replaced by U\+FFFD: m3\.py \(2\)\. Convert",
    bad=("UTF-8", "m3.py"),
)
def text_file_not_utf8(c: Case) -> Trigger:
    """a text file with Latin-1 bytes in the corpus (they were replaced silently)"""
    root = _corpus()
    (root / "m3.py").write_bytes((root / "m3.py").read_bytes() + b"# caf\xe9 \xe0\n")

    def trigger() -> Any:
        with captured() as out:
            _packed(text_dir=str(root)).setup()
        return c.said(out.getvalue(), r"not UTF-8")

    return trigger


@fault("text data", r"data\.jsonl, line 2: not UTF-8 \(byte 0xe9 at column 16\)", bad=("UTF-8", "line 2"))
def jsonl_not_utf8(c: Case) -> Trigger:
    """a JSONL line with a Latin-1 byte (a bare UnicodeDecodeError before)"""
    from lightning_kd.data import read_examples

    Path("data.jsonl").write_bytes(b'{"prompt": "a", "response": "b"}\n{"prompt": "caf\xe9", "response": "b"}\n')
    return lambda: read_examples("data.jsonl")


@fault("text data", r"data\.jsonl, line 1: the response is empty: there is nothing to learn", bad=("empty", "line 1"))
def jsonl_empty_responses(c: Case) -> Trigger:
    """a JSONL whose responses are all empty (it trained on the end-of-text token alone)"""
    from lightning_kd.data import read_examples

    Path("data.jsonl").write_text('{"prompt": "a", "response": ""}\n{"prompt": "b", "response": ""}\n')
    return lambda: read_examples("data.jsonl")


@fault("text data", r"seq_len must be >= 2, got 1: a sequence of one token has no next token", bad=("seq_len", "1"))
def seq_len_one(c: Case) -> Trigger:
    """`seq_len: 1` (it trained on zero tokens, logged val/loss 0.0 and published a model)"""
    root = _corpus()
    return lambda: _packed(text_dir=str(root), seq_len=1)


@fault("text data", r"text_dir='.*m0\.py' is a file, not a folder: pass it as text_files", bad=("text_dir", "m0.py"))
def text_dir_is_a_file(c: Case) -> Trigger:
    """`text_dir:` naming a file (reported as a missing directory)"""
    root = _corpus()
    return lambda: _packed(text_dir=str(root / "m0.py"))

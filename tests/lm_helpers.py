"""What the causal-LM tests share: tiny Llama models, a small Python corpus, dict batches, a quiet Trainer."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from lightning_kd.models.language import llama_lm

V = 300
WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "theta", "kappa", "sigma", "omega"]


def tiny(seed: int, hidden: int = 32, layers: int = 1, vocab: int = V) -> torch.nn.Module:
    return llama_lm(vocab, hidden_size=hidden, num_layers=layers, num_heads=2, max_position=64, seed=seed)


def write_corpus(folder: Path, n: int = 14, offset: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(offset, offset + n):
        name = WORDS[i % len(WORDS)]
        body = "".join(f"def {name}_{j}(x, y={j}):\n    return x * {i} + y - {j}\n" for j in range(20))
        (folder / f"mod_{i:02d}.py").write_text(f'"""Module {i}."""\n\n{body}', encoding="utf-8")
    return folder


def trainer(tmp_path, **kwargs) -> L.Trainer:
    args = dict(
        accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0, limit_val_batches=2,
    )  # fmt: skip
    return L.Trainer(**{**args, **kwargs})


def dict_batch(ids: list[list[int]], valid_from: list[int]) -> dict[str, torch.Tensor]:
    """A batch whose labels are -100 before ``valid_from[i]`` in row i (a masked prompt)."""
    input_ids = torch.tensor(ids)
    labels = input_ids.clone()
    for row, start in enumerate(valid_from):
        labels[row, :start] = -100
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}


class Batches(L.LightningDataModule):
    def __init__(self, batches: list[dict], vocab_fingerprint: str | None = None) -> None:
        super().__init__()
        self.batches = batches
        self.vocab_size = V
        if vocab_fingerprint is not None:
            self.vocab_fingerprint = vocab_fingerprint

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.batches, batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.batches, batch_size=None)


def write_unicode_corpus(folder: Path, n: int = 12, suffix: str = ".py", offset: int = 0) -> Path:
    """Like :func:`write_corpus`, with non-ASCII text in every line (byte-level BPE must round-trip it)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(offset, offset + n):
        name = WORDS[i % len(WORDS)]
        body = "".join(f"def {name}_{j}(x, y={j}):\n    return x * {i} + y - {j}  # café ✓\n" for j in range(15))
        (folder / f"mod_{i:02d}{suffix}").write_text(f'"""Module {i}."""\n\n{body}', encoding="utf-8")
    return folder

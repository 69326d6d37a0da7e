"""What an LM teacher store is keyed on: the training rows of a packed-text data module."""

from __future__ import annotations

from typing import Any


def training_tokens(datamodule: Any) -> Any:
    """The ``(N, L)`` token rows of ``datamodule``'s training split (set up for ``fit`` if needed): the store's keys."""
    datamodule.setup("fit")
    split = getattr(datamodule, "splits", {}).get("train")
    if split is None or not hasattr(split, "ids"):
        raise ValueError(
            f"an LM teacher store needs a data module of packed sequences (PackedTextDataModule), got "
            f"{type(datamodule).__name__}: its training rows are the store's keys."
        )
    return split.ids

"""What an offline teacher cache is keyed on: a data module whose training views can be replayed exactly (its
augmentation, its training split), checked when the cache is built and again when a run opens it."""

from __future__ import annotations

from typing import Any

from lightning_kd.data.base import InMemoryDataModule
from lightning_kd.data.fingerprint import dataset_fingerprint


def check_replayable(datamodule: Any) -> InMemoryDataModule:
    """Raise ``ValueError`` unless ``datamodule`` gives every training sample a view a cache can replay."""
    if not isinstance(datamodule, InMemoryDataModule):
        raise ValueError(
            f"a teacher cache needs an InMemoryDataModule (replayable augmentation, sample indices), got "
            f"{type(datamodule).__name__}; pass it as trainer.fit(model, datamodule=...)."
        )
    if datamodule.augment and datamodule.augment_seed is None:
        raise ValueError(
            f"{type(datamodule).__name__} has augment=True but no augment_seed: the cache would be wrong under "
            "random augmentation: set augment_seed, or augment: false."
        )
    if not datamodule.with_indices:
        raise ValueError(
            f"{type(datamodule).__name__} has with_indices=False: cache lookups need each sample's index; "
            "set with_indices: true."
        )
    return datamodule


def datamodule_key(datamodule: InMemoryDataModule) -> dict[str, Any]:
    """What a cache must match in the data module: the augmentation (``None`` fields when it is off) and the
    training split (size and a fingerprint). Sets the data module up if needed."""
    if "train" not in datamodule.splits:
        datamodule.setup("fit")
    train = datamodule.splits["train"]
    augment = bool(datamodule.augment)
    return {
        "augment": augment,
        "augment_seed": datamodule.augment_seed if augment else None,
        "padding": datamodule.crop_padding if augment else None,
        "flip": datamodule.flip if augment else None,
        "num_samples": len(train),
        "dataset": dataset_fingerprint(train.images, train.labels),
    }

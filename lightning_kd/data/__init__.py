"""LightningDataModules: digits (embedded default), Fashion-MNIST, CIFAR-10/100, and text for language models.

The text modules need the ``llm`` extra (``tokenizers``; ``transformers`` to save a tokenizer with a model);
they are imported on first use, so the image modules work without it.
"""

import importlib
from types import ModuleType as _ModuleType
from typing import Any as _Any

from lightning_kd.data.augment import random_crop_flip
from lightning_kd.data.base import InMemoryDataModule, TensorClassificationDataset
from lightning_kd.data.cifar import CIFAR10DataModule, CIFAR100DataModule
from lightning_kd.data.data_free import DataFreeDataModule
from lightning_kd.data.digits import DigitsDataModule
from lightning_kd.data.fashion_mnist import FashionMNISTDataModule
from lightning_kd.data.idx_files import read_idx

_TEXT = {
    "PackedTextDataModule": "lightning_kd.data.text",
    "PromptResponseDataModule": "lightning_kd.data.prompt_response",
    "TextCorpus": "lightning_kd.data.text_corpus",
    "stdlib_corpus": "lightning_kd.data.text_corpus",
    "load_tokenizer": "lightning_kd.data.text_tokenizer",
    "read_examples": "lightning_kd.data.prompt_response",
    "train_bpe_tokenizer": "lightning_kd.data.tokenizer",
    "vocab_fingerprint": "lightning_kd.data.tokenizer",
}

__all__ = sorted(
    [*(n for n, v in globals().items() if not n.startswith("_") and not isinstance(v, _ModuleType)), *_TEXT]
)


def __getattr__(name: str) -> _Any:
    module = _TEXT.get(name)
    if module is None:
        raise AttributeError(f"module 'lightning_kd.data' has no attribute {name!r}")
    try:
        value = getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            f"{name} needs the package {err.name!r}: pip install 'lightning-kd[llm]'", name=err.name
        ) from err
    globals()[name] = value
    return value

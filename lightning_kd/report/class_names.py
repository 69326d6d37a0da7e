"""What a report and ``deploy.json`` say about the data: class names and the input normalisation.

The data modules carry ``mean``/``std`` but no class names; the names of the built-in data sets live here, so
the report can label its tables and figures and ``deploy.json`` can say what each output means. A data module
that defines its own ``class_names`` attribute is read first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

DIGITS = tuple(str(i) for i in range(10))
FASHION_MNIST = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)  # Xiao, Rasul & Vollgraf 2017, arXiv:1708.07747, Table 1 (labels 0..9)
CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _known_names() -> dict[type, tuple[str, ...] | None]:
    # imported here, not at module level: `import lightning_kd.report` loads no Lightning
    from lightning_kd.data import CIFAR10DataModule, CIFAR100DataModule, DigitsDataModule, FashionMNISTDataModule

    # CIFAR-100 subclasses CIFAR-10: listed (without names) so that its MRO stops there
    return {
        DigitsDataModule: DIGITS,
        FashionMNISTDataModule: FASHION_MNIST,
        CIFAR10DataModule: CIFAR10,
        CIFAR100DataModule: None,
    }


def class_names_for(datamodule: Any) -> list[str] | None:
    """One name per class for ``datamodule``: its own ``class_names``, else the built-in data set's.

    A subclass of a built-in data module gets its parent's names. ``None`` when the names are unknown (the
    report then numbers the classes).

    Example:
        >>> from lightning_kd.data import DigitsDataModule
        >>> class_names_for(DigitsDataModule())[:3]
        ['0', '1', '2']
    """
    own = getattr(datamodule, "class_names", None)
    if own is not None:
        return [str(c) for c in own]
    known = _known_names()
    for cls in type(datamodule).__mro__:
        if cls in known:
            names = known[cls]
            return None if names is None else list(names)
    return None


def normalization_of(datamodule: Any) -> tuple[float | Sequence[float] | None, float | Sequence[float] | None]:
    """``(mean, std)`` the data module standardises its inputs with (``None`` each when it has none)."""
    return getattr(datamodule, "mean", None), getattr(datamodule, "std", None)

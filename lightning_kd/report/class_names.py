"""What a report and ``deploy.json`` say about the data: class names and the input normalisation, read off the data
module (``class_names``, ``mean``, ``std``: the built-in data modules define them) — any object with those
attributes will do, so the report needs none of the data modules' code."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def class_names_for(datamodule: Any) -> list[str] | None:
    """One name per class for ``datamodule`` (its ``class_names``); ``None`` when it has none (the report then
    numbers the classes).

    Example:
        >>> class Data:
        ...     class_names = ("cat", "dog")
        >>> class_names_for(Data())
        ['cat', 'dog']
    """
    own = getattr(datamodule, "class_names", None)
    return None if own is None else [str(c) for c in own]


def normalization_of(datamodule: Any) -> tuple[float | Sequence[float] | None, float | Sequence[float] | None]:
    """``(mean, std)`` the data module standardises its inputs with (``None`` each when it has none)."""
    return getattr(datamodule, "mean", None), getattr(datamodule, "std", None)

"""Optional dependencies: imported when a function needs them, with a message naming the extra to install.

``report`` itself needs only torch, numpy and torchmetrics; ONNX export and ONNX Runtime come with
``lightning-kd[export]``, the PNG figures with ``lightning-kd[plots]``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

EXPORT = "export"  # onnx, onnxscript, onnxruntime
PLOTS = "plots"  # matplotlib


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the ``pip install`` that adds it."""


def install_hint(extra: str) -> str:
    """The command that installs ``extra``, e.g. ``pip install "lightning-kd[export]"``."""
    return f'pip install "lightning-kd[{extra}]"'


def import_extra(module: str, extra: str, needed_for: str) -> ModuleType:
    """Import ``module``, or raise :class:`MissingExtraError` naming ``extra``.

    Args:
        module: dotted module name, e.g. ``"onnxruntime"``.
        extra: the lightning-kd extra that provides it (:data:`EXPORT` or :data:`PLOTS`).
        needed_for: what the caller was doing, for the message (e.g. ``"ONNX export"``).
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingExtraError(
            f"{needed_for} needs the optional package '{module.split('.')[0]}', which is not installed "
            f"({err}). Install it with: {install_hint(extra)}"
        ) from err

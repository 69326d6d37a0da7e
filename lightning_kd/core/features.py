"""Capture intermediate features by dotted module path with forward hooks, so models need no change.

Paths are the names of ``model.named_modules()``: ``"layer1.0.conv1"`` on a ResNet, ``"block2"`` on
SmallCNN, ``""`` for the model itself (its output is the logits, its input the raw batch). Captured tensors
keep their autograd graph: the student's features must be differentiable, and the teacher is run under
``torch.no_grad()`` by the caller anyway. Pure torch.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from functools import partial
from types import TracebackType
from typing import Any, Literal

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle


def _describe(path: str) -> str:
    return f"{path!r} (the model itself)" if path == "" else repr(path)


def resolve_module(model: nn.Module, path: str) -> nn.Module:
    """The submodule of ``model`` at dotted ``path``; ``""`` is ``model`` itself.

    Args:
        model: the root module.
        path: a name from ``model.named_modules()``, e.g. ``"layer1.0.conv1"``.

    Raises:
        ValueError: ``path`` names no submodule; the message lists the closest valid names (or, when none
            is close, the top-level children).

    Example:
        >>> from lightning_kd.models import SmallCNN
        >>> resolve_module(SmallCNN(), "block2.0")
        Conv2d(16, 32, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)
    """
    if path == "":
        return model
    try:
        return model.get_submodule(path)
    except AttributeError:
        pass
    names = [name for name, _ in model.named_modules() if name]
    close = difflib.get_close_matches(path, names, n=5)
    if close:
        hint = f"closest: {close}"
    else:
        children = [name for name, _ in model.named_children()]
        hint = f"no close match; top-level children are {children[:8]}" + (" …" if len(children) > 8 else "")
    raise ValueError(
        f"{type(model).__name__} has no submodule {path!r}; {hint}. Layer paths are dotted names from "
        'model.named_modules() ("" is the model itself).'
    )


def _first_tensor(name: str, value: Any) -> Tensor:
    """``value`` itself, or the first tensor of a tuple/list (or of a mapping's values)."""
    if isinstance(value, Tensor):
        return value
    items = value.values() if isinstance(value, Mapping) else value if isinstance(value, (tuple, list)) else ()
    for item in items:
        if isinstance(item, Tensor):
            return item
    raise TypeError(f"layer {_describe(name)} produced no tensor to capture (got {type(value).__name__}).")


class FeatureCapture:
    """Forward hooks that store the output (or first positional input) of named submodules.

    After a forward pass, ``features[path]`` holds the tensor of each hooked layer; a layer called several
    times in one forward keeps its last call. Tensors are not detached. By default they are cloned, so a
    later in-place op (``ReLU(inplace=True)`` right after a BatchNorm) cannot overwrite what was captured;
    ``clone=False`` saves that copy when nothing downstream works in place.

    Input capture uses a forward *pre*-hook, so the input is stored before the module runs: hooking the
    input of an in-place ReLU gives the pre-activation feature.

    Paths are checked at construction; modules are looked up again in :meth:`register`, so hooks land on
    the modules in place at that time (e.g. after a strategy swapped BatchNorm for SyncBatchNorm).

    Args:
        model: the network to hook.
        layers: dotted module paths (see :func:`resolve_module`); ``""`` is the model itself.
        capture: ``"output"`` stores what the module returns, ``"input"`` its first positional argument.
        clone: store a copy (graph kept) rather than the tensor the model goes on using.

    Attributes:
        enabled: the hooks store features only while this is ``True`` (registered hooks stay cheap no-ops
            otherwise, e.g. during validation when no loss reads the features).

    Example:
        >>> from lightning_kd.models import ResNet
        >>> model = ResNet(8, num_classes=10)
        >>> with FeatureCapture(model, ["layer1.0.conv1", ""]) as cap:
        ...     logits = model(torch.randn(2, 3, 32, 32))
        >>> cap.features["layer1.0.conv1"].shape, cap.active
        (torch.Size([2, 16, 32, 32]), False)
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[str],
        capture: Literal["output", "input"] = "output",
        clone: bool = True,
    ) -> None:
        if isinstance(layers, str):
            raise ValueError(f"layers must be a list of paths, got the string {layers!r}; use [{layers!r}].")
        if not layers:
            raise ValueError("layers is empty; give at least one module path, e.g. ['layer3'] ('' = the model).")
        if capture not in ("output", "input"):
            raise ValueError(f"capture must be 'output' or 'input', got {capture!r}.")
        for path in layers:
            resolve_module(model, path)
        self.model = model
        self.layers = list(dict.fromkeys(layers))  # duplicates would only register a second, identical hook
        self.capture = capture
        self.clone = clone
        self.features: dict[str, Tensor] = {}
        self.enabled = True
        self._handles: list[RemovableHandle] = []

    @property
    def active(self) -> bool:
        """Whether the hooks are registered."""
        return bool(self._handles)

    def register(self) -> FeatureCapture:
        """Add one hook per layer; a no-op when already registered. Returns ``self``."""
        if self.active:
            return self
        for path in self.layers:
            module = resolve_module(self.model, path)
            # partial of a bound method rather than a closure: a hooked model stays picklable (ddp_spawn)
            if self.capture == "output":
                handle = module.register_forward_hook(partial(self._store_output, path))
            else:
                handle = module.register_forward_pre_hook(partial(self._store_input, path))
            self._handles.append(handle)
        return self

    def remove(self) -> None:
        """Remove every hook (safe to call again). Captured features are kept until :meth:`clear`."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def clear(self) -> None:
        """Forget the captured features (e.g. before the next batch)."""
        self.features.clear()

    def _store(self, path: str, value: Any) -> None:
        if not self.enabled:
            return
        tensor = _first_tensor(path, value)
        self.features[path] = tensor.clone() if self.clone else tensor

    def _store_output(self, path: str, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        self._store(path, output)

    def _store_input(self, path: str, module: nn.Module, args: tuple[Any, ...]) -> None:
        if not args:
            raise TypeError(
                f"layer {_describe(path)} was called without positional arguments, so capture='input' has "
                "nothing to store; capture the output of the layer before it instead."
            )
        self._store(path, args[0])

    def __enter__(self) -> FeatureCapture:
        return self.register()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.remove()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model={type(self.model).__name__}, layers={self.layers}, "
            f"capture={self.capture!r}, active={self.active})"
        )

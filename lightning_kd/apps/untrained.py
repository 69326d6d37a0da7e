"""Which networks of a recipe would be scored as freshly built: ``validate``/``test``/``predict`` without
``--ckpt_path`` refuse them (``--allow_untrained true`` to score them on purpose)."""

from __future__ import annotations

from typing import Any

from jsonargparse import Namespace

# constructor arguments that are the networks a module trains
_TRAINED_ARGS = ("student", "students", "model")
# network builders that load trained weights: evaluating what they build needs no checkpoint
_LOADERS = ("pretrained_lm",)


def untrained_networks(model: Any) -> list[str]:
    """The trained networks of a model config (``student``, ``model``, …) that are built from scratch — not
    loaded (``pretrained_lm``, a LoRA around one, torchvision ``weights``, timm ``pretrained``)."""
    init = _get(model, "init_args") or {}
    names = []
    for key in _TRAINED_ARGS:
        value = _get(init, key)
        networks = value if isinstance(value, list) else [value] if value is not None else []
        if networks and not all(_loaded(n) for n in networks):
            names.append(key)
    return names


def _get(config: Any, key: str) -> Any:
    return config.get(key) if isinstance(config, (dict, Namespace)) else getattr(config, key, None)


def _loaded(network: Any) -> bool:
    path = str(_get(network, "class_path") or "")
    args = _get(network, "init_args") or {}
    if path.endswith(_LOADERS):
        return True
    if path.endswith("lora"):
        return _loaded(_get(args, "model"))
    return bool(_get(args, "weights")) or bool(_get(args, "pretrained"))

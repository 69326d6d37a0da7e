"""What a lightning-kd module checks about a checkpoint before it loads it: that its module class fits, and which
hyper-parameters a resumed run changes (said, with how to keep the checkpoint's value)."""

from __future__ import annotations

import importlib
import json
import os
from typing import Any

import torch
from torch import nn

CHECKPOINT_VERSION_KEY = "lightning_kd_version"
CHECKPOINT_CLASS_KEY = "lightning_kd_module"


def is_plain(value: Any) -> bool:
    """Numbers, strings, ``None`` and containers of them: what a hyper-parameter file and a ``weights_only``
    checkpoint load can hold."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_plain(v) for k, v in value.items())
    return False


def check_module_class(module: nn.Module | type, checkpoint: dict[str, Any], source: str = "this checkpoint") -> None:
    """Refuse a checkpoint written by a module class unrelated to ``module``'s (an instance or the class itself),
    naming both and the class to load it with; ``source`` names the checkpoint in the message."""
    saved = checkpoint.get(CHECKPOINT_CLASS_KEY) or (checkpoint.get("hyper_parameters") or {}).get("_class_path")
    if not isinstance(saved, str):
        return
    module_path, _, name = saved.rpartition(".")
    try:
        saved_cls = getattr(importlib.import_module(module_path), name)
    except (ImportError, AttributeError, ValueError):
        return
    mine = module if isinstance(module, type) else type(module)
    if isinstance(saved_cls, type) and not (issubclass(mine, saved_cls) or issubclass(saved_cls, mine)):
        raise ValueError(
            f"{source} was written by {saved_cls.__name__} ({saved}) and cannot be loaded into "
            f"{mine.__name__}: load it with {saved_cls.__name__}.load_from_checkpoint, or start a new "
            f"{mine.__name__} run from its weights (a teacher checkpoint: teacher_ckpt; a student's: "
            "lightning_kd.core.weights.load_weights)."
        )


def peek_checkpoint(path: Any) -> dict[str, Any] | None:
    """The checkpoint at ``path`` without reading its tensors (memory-mapped), or ``None`` when it cannot be peeked
    at (not a local file, an older format, unreadable: Lightning's own load then says what is wrong)."""
    if not isinstance(path, (str, os.PathLike)) or not os.path.isfile(path):
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - only a peek: the real load reports the problem
        return None
    return ckpt if isinstance(ckpt, dict) else None


def resumed_differences(current: Any, saved: dict[str, Any]) -> list[str]:
    """Lines saying which hyper-parameters a resumed run changes (plain values, and ``class_path`` configs such as
    the optimizer's): the run uses the new values, and says so."""
    lines = []
    for key, value in saved.items():
        if key.startswith("_") or key not in current:
            continue
        now, was = _canonical(current[key]), _canonical(value)
        if now == was or not (is_plain(now) and is_plain(was)):
            continue
        if key in _RESTORED_ON_RESUME:
            lines.append(
                f"resuming restores the checkpoint's {key} state ({_brief(was)}), so the config's {key}="
                f"{_brief(now)} is not used; to train with it, start a new run from the checkpoint's weights"
            )
        else:
            lines.append(
                f"resuming with {key}={_brief(now)}; the checkpoint was trained with {key}={_brief(was)}: to keep "
                f"that, pass --model.init_args.{key}={_brief(was)} (from Python: {key}={_brief(was)})"
            )
    return lines


# what Lightning restores from the checkpoint itself when resuming, whatever the module was built with
_RESTORED_ON_RESUME = {"optimizer", "lr_scheduler", "disc_optimizer"}


def _canonical(value: Any) -> Any:
    """Plain JSON data for comparing: tuples become lists (YAML and Python disagree on them)."""
    return json.loads(json.dumps(value, default=repr)) if is_plain(value) else value


def _brief(value: Any) -> str:
    if isinstance(value, dict) and "class_path" in value:
        args = ", ".join(f"{k}={v!r}" for k, v in (value.get("init_args") or {}).items())
        return f"{value['class_path'].rsplit('.', 1)[-1]}({args})"
    return repr(value)

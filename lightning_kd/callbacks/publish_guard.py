"""What a run reads and who published a model: a run publishes over neither (see
:meth:`~lightning_kd.callbacks.RunCheckpoint.check_publish_target`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch

from lightning_kd.core.teacher import TeacherBase


def run_inputs(pl_module: L.LightningModule) -> list[tuple[str, str]]:
    """``(what, path)`` of what a module's teacher components read (duplicates of nested components removed)."""
    seen, out = set(), []
    for module in pl_module.modules():
        if isinstance(module, TeacherBase):
            for item in module.inputs():
                if item[1] not in seen:
                    seen.add(item[1])
                    out.append(item)
    return out


_NETWORKS = ("student", "students", "model")


def other_recipe(path: Path, pl_module: L.LightningModule) -> str | None:
    """What differs between the run that published ``path`` and ``pl_module`` — its module class, or its
    student network's config — or ``None`` when it is the same recipe's model (a rerun replaces it) or the file
    says nothing readable."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - not ours to judge here; the file is reported when something reads it
        return None
    mine = f"{type(pl_module).__module__}.{type(pl_module).__qualname__}"
    theirs = saved.get("lightning_kd_module")
    if isinstance(theirs, str) and theirs.rsplit(".", 1)[-1] != mine.rsplit(".", 1)[-1]:
        return f"a {theirs.rsplit('.', 1)[-1]}, this run is a {type(pl_module).__name__}"
    saved_hp, hp = saved.get("hyper_parameters") or {}, dict(getattr(pl_module, "hparams", {}) or {})
    for key in _NETWORKS:
        if key in saved_hp and key in hp and _network(saved_hp[key]) != _network(hp[key]):
            return f"its {key} was {_brief(saved_hp[key])}, this run's is {_brief(hp[key])}"
    return None


def _network(config: Any) -> Any:
    """A network's config without its initialisation seed: another seed of one recipe is the same recipe."""
    if isinstance(config, dict) and isinstance(config.get("init_args"), dict):
        return {**config, "init_args": {k: v for k, v in config["init_args"].items() if k != "seed"}}
    return config


def _brief(value: Any) -> str:
    if isinstance(value, dict) and "class_path" in value:
        args = ", ".join(f"{k}={v}" for k, v in (value.get("init_args") or {}).items())
        text = f"{str(value['class_path']).rsplit('.', 1)[-1]}({args})"
    else:
        text = repr(value)
    return text if len(text) <= 100 else text[:97] + "..."

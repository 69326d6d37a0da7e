"""Read checkpoints written by lightning-kd 0.1.0 into the 0.2 layout, or say how to migrate them.

0.1.0 differs from 0.2 in three places:

- a teacher's tensors sat at ``teacher.*`` (0.2: the component's ``teacher.model.*``; a cached teacher's
  model ``teacher.live.model.*``) and a multi-teacher module's at ``teachers.<k>.*`` (0.2:
  ``teacher.members.<k>.model.*``); they are only present with ``save_teacher`` or ``teacher_eval=False``;
- connector shapes sat under a custom checkpoint key ``lightning_kd_connector_shapes`` (0.2: each feature
  term's ``_extra_state``, torch's own mechanism);
- there was no ``lightning_kd_version`` key.

:func:`migrate_checkpoint` rewrites such a checkpoint in place while Lightning loads it (``on_load_checkpoint``
runs before ``load_state_dict``); a checkpoint that still does not fit fails with the keys and the fix.
"""

from __future__ import annotations

import re
from typing import Any

from torch import nn

from lightning_kd.core.feature_terms import FeatureTerms
from lightning_kd.core.teacher import Teacher, TeacherBase

_OLD_CONNECTOR_KEY = "lightning_kd_connector_shapes"
_VERSION_KEY = "lightning_kd_version"


def _old_prefix(name: str) -> str | None:
    """Where a 0.2 teacher component's network sat in 0.1.0."""
    if name in ("teacher", "teacher.live"):
        return "teacher."
    m = re.fullmatch(r"teacher\.members\.(\d+)", name)
    return f"teachers.{m.group(1)}." if m else None


def migrate_checkpoint(module: nn.Module, checkpoint: dict[str, Any]) -> None:
    """Bring a 0.1.0 checkpoint into this version's layout (in place); a no-op for 0.2+ checkpoints.

    Raises:
        ValueError: a 0.1.0 checkpoint that still does not fit ``module``; the message names the keys and says
            how to carry the weights over.
    """
    if _VERSION_KEY in checkpoint:
        return
    state = checkpoint.get("state_dict", {})
    new_layout = ("teacher.model.", "teacher.live.", "teacher.members.")
    for name in [n for n, m in module.named_modules() if isinstance(m, Teacher)]:
        old = _old_prefix(name)
        if old is None:
            continue
        for key in [k for k in state if k.startswith(old) and not k.startswith(new_layout)]:
            state[f"{name}.model.{key[len(old) :]}"] = state.pop(key)
    shapes = checkpoint.pop(_OLD_CONNECTOR_KEY, {}) or {}
    for prefix, terms in [(n, m) for n, m in module.named_modules() if isinstance(m, FeatureTerms)]:
        for i, term in enumerate(terms):
            key = f"{prefix}.{i}._extra_state"
            recorded = shapes.get(term.name) or []
            state.setdefault(key, {"connector_shapes": [[list(s), list(t)] for s, t in recorded]})
    expected = set(module.state_dict())
    teacher_keys = {
        k for n, t in module.named_modules() if isinstance(t, TeacherBase) for k in t.state_dict(prefix=f"{n}.")
    }
    # connectors are rebuilt from their recorded shapes during the load itself, before their weights load
    rebuilt = tuple(
        f"{prefix}.{i}.connectors."
        for prefix, terms in module.named_modules()
        if isinstance(terms, FeatureTerms)
        for i, term in enumerate(terms)
        if term.use_connector
    )
    missing = sorted(k for k in expected - set(state) - teacher_keys if not k.startswith(rebuilt))
    unexpected = sorted(k for k in set(state) - expected if not k.startswith(rebuilt))
    if missing or unexpected:
        raise ValueError(
            f"this checkpoint was written by lightning-kd 0.1.0 and does not fit {type(module).__name__} of this "
            f"version: missing {missing[:5]}, unexpected {unexpected[:5]}. Check that the module is built with the "
            "same models and feature terms as the 0.1.0 run; to carry the student over, load its weights with "
            "lightning_kd.core.weights.load_weights(student, path) (it reads 0.1.0 checkpoints) and start a new run."
        )

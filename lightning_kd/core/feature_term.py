"""FeatureTerm: one feature/relation loss applied to named student/teacher layer pairs. Pure torch.

The module captures the layers' features with hooks (see :mod:`lightning_kd.core.features`); a term only maps
them to a loss value, so the loss functions stay callable on plain tensors.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from torch import Tensor, nn

from lightning_kd.core.connectors import build_connector
from lightning_kd.losses.contrastive import CRDLoss


class FeatureTerm(nn.Module):
    """A named, weighted loss on intermediate features: ``weight · Σ_pairs loss(s_i, t_i)``.

    Each pair ``(student_layers[i], teacher_layers[i])`` gets its own copy of ``loss`` (so trainable
    parts such as VID's regressor are per pair) and, with ``connector=True``, its own trainable adapter
    mapping the student feature to the teacher feature's shape (1×1 conv + BN for maps, linear for
    vectors, built from one dry forward pass before the optimizer exists, so it is trained with the
    student and saved in checkpoints). Summing over pairs follows AT/FitNets (arXiv:1612.03928, §3).

    With ``mode="group"`` the loss is called once on all features, ``loss(*student_feats,
    *teacher_feats)`` — for FSP, which relates two layers of each network (connectors, if on, still map
    ``student_layers[i]`` to ``teacher_layers[i]`` first).

    Losses that need the batch's sample indices (CRD's memory bank) get them as ``index``; the data module
    must then yield ``(inputs, targets, indices)`` (``with_indices: true``).

    Layer paths are dotted names from ``model.named_modules()`` (``""`` = the model itself, i.e. logits).
    With several teachers (:class:`~lightning_kd.MultiTeacherDistillation`) ``teacher`` says whose layers
    ``teacher_layers`` are.

    Connectors are restored from checkpoints through torch's own ``get_extra_state``/``set_extra_state``:
    the term records the feature shapes it built them for, and rebuilds them before their weights load.

    Args:
        name: key of the term in logs (``train/loss_<name>``) and in ``loss_weights``.
        loss: a loss module taking ``(student, teacher)`` tensors (e.g. ``lightning_kd.losses.ATLoss()``).
        student_layers: module paths in the student.
        teacher_layers: module paths in the teacher, paired by position with ``student_layers``.
        weight: the term's weight in the total loss.
        connector: put a trainable adapter between each student feature and its loss.
        capture: hook a module's ``output`` or its ``input``.
        mode: ``pairs`` (one loss per pair, summed) or ``group`` (one call on all features).
        teacher: index of the teacher whose layers ``teacher_layers`` names (0 with one teacher).

    Example (YAML, inside ``DistillationModule``'s ``init_args``)::

        feature_terms:
          - class_path: lightning_kd.FeatureTerm
            init_args:
              name: at
              loss: {class_path: lightning_kd.losses.ATLoss}
              student_layers: [block1, block2, block3]
              teacher_layers: [layer1, layer2, layer3]
              weight: 1000.0
    """

    def __init__(
        self,
        name: str,
        loss: nn.Module,
        student_layers: Sequence[str],
        teacher_layers: Sequence[str],
        weight: float = 1.0,
        connector: bool = False,
        capture: Literal["output", "input"] = "output",
        mode: Literal["pairs", "group"] = "pairs",
        teacher: int = 0,
    ) -> None:
        super().__init__()
        if not name.isidentifier() or name in ("ce", "kd"):
            raise ValueError(f"term name {name!r} must be a Python identifier other than 'ce'/'kd', e.g. 'at'.")
        if isinstance(student_layers, str) or isinstance(teacher_layers, str):
            raise ValueError(f"term {name!r}: layers are lists of paths, e.g. student_layers: [block2].")
        if not student_layers or not teacher_layers:
            raise ValueError(f"term {name!r}: student_layers and teacher_layers must not be empty.")
        if mode == "pairs" and len(student_layers) != len(teacher_layers):
            raise ValueError(
                f"term {name!r}: {len(student_layers)} student layers but {len(teacher_layers)} teacher layers; "
                "pairs are matched by position, so give as many of each (or use mode='group')."
            )
        if mode not in ("pairs", "group"):
            raise ValueError(f"term {name!r}: mode must be 'pairs' or 'group', got {mode!r}.")
        if connector and len(student_layers) != len(teacher_layers):
            raise ValueError(
                f"term {name!r}: connectors map student_layers[i] to teacher_layers[i]; give as many of each."
            )
        if not (math.isfinite(weight) and weight >= 0):
            raise ValueError(f"term {name!r}: weight must be a finite number >= 0, got {weight}; e.g. 1.0.")
        if not isinstance(teacher, int) or teacher < 0:
            raise ValueError(f"term {name!r}: teacher must be a teacher's index >= 0, got {teacher!r}.")
        self.name = name
        self.student_layers = list(student_layers)
        self.teacher_layers = list(teacher_layers)
        self.weight = float(weight)
        self.use_connector = connector
        self.capture = capture
        self.mode = mode
        self.teacher = teacher
        self._connector_shapes: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
        copies = len(self.student_layers) if mode == "pairs" else 1
        self.losses = nn.ModuleList([loss] + [copy.deepcopy(loss) for _ in range(copies - 1)])
        self.connectors = nn.ModuleList()

    @property
    def connector_shapes(self) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
        """(student, teacher) feature shapes the connectors were built for; saved in checkpoints."""
        return self._connector_shapes

    def build_connectors(self, shapes: Sequence[tuple[Sequence[int], Sequence[int]]]) -> None:
        """Create one connector per pair for these (student, teacher) shapes (idempotent)."""
        if not self.use_connector or len(self.connectors):
            return
        self._connector_shapes = [(tuple(s), tuple(t)) for s, t in shapes]
        for s, t in self._connector_shapes:
            self.connectors.append(build_connector(s, t))

    def get_extra_state(self) -> dict[str, Any]:
        """The connector shapes, saved in the state dict (plain lists: ``weights_only`` loads read them)."""
        return {"connector_shapes": [[list(s), list(t)] for s, t in self._connector_shapes]}

    def set_extra_state(self, state: Any) -> None:
        """Rebuild the connectors recorded in a state dict; torch loads their weights right after."""
        shapes = state.get("connector_shapes") if isinstance(state, dict) else None
        if shapes:
            self.build_connectors(shapes)

    @property
    def needs_connectors(self) -> bool:
        """Whether connectors are on but not yet built (they need one dry forward pass)."""
        return self.use_connector and not len(self.connectors)

    @property
    def needs_index(self) -> bool:
        """Whether the loss takes the batch's sample indices (CRD)."""
        return isinstance(self.losses[0], CRDLoss)

    def forward(
        self, student_feats: Mapping[str, Tensor], teacher_feats: Mapping[str, Tensor], index: Tensor | None = None
    ) -> Tensor:
        """Unweighted term value from captured features (keyed by layer path)."""
        s = [student_feats[p] for p in self.student_layers]
        t = [teacher_feats[p].float() for p in self.teacher_layers]
        if self.use_connector:
            s = [conn(x) for conn, x in zip(self.connectors, s, strict=True)]
        extra: dict[str, Tensor] = {}
        if self.needs_index:
            if index is None:
                raise ValueError(
                    f"term {self.name!r} ({type(self.losses[0]).__name__}) needs each sample's dataset index: "
                    "set with_indices: true on the data module (batches become (inputs, targets, indices))."
                )
            extra["index"] = index
        if self.mode == "group":
            return self.losses[0](*s, *t, **extra)
        total = self.losses[0](s[0], t[0], **extra)
        for loss, si, ti in zip(self.losses[1:], s[1:], t[1:], strict=True):
            total = total + loss(si, ti, **extra)
        return total

    def explain(self, err: Exception, student_feats: Mapping[str, Tensor], teacher_feats: Mapping[str, Tensor]) -> None:
        """Re-raise ``err`` (raised by this term on these features) as a message naming layers, shapes and fix."""
        pairs = ", ".join(
            f"student {sp!r} {tuple(student_feats[sp].shape[1:]) if sp in student_feats else '(not captured)'} ↔ "
            f"teacher {tp!r} {tuple(teacher_feats[tp].shape[1:]) if tp in teacher_feats else '(not captured)'}"
            for sp, tp in zip(self.student_layers, self.teacher_layers)
        )
        fix = "" if self.use_connector else " Set connector: true on this term to learn an adapter, or"
        raise ValueError(
            f"feature term {self.name!r} cannot run on these features ({pairs}; batch dim left out): {err}."
            f"{fix} pick layers whose shapes the loss accepts."
        ) from err

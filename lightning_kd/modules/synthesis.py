"""The settings of a data-free synthesiser (:class:`Synthesis`) and where DAFL reads the teacher's features."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from torch import nn

KINDS = ("dafl", "adversarial", "inversion")


@dataclass(frozen=True)
class Synthesis:
    """How the synthetic inputs are made (one frozen settings object; stored as a dict in hyper-parameters).

    Args:
        kind: ``dafl``, ``adversarial`` (ZSKT) or ``inversion`` (DeepInversion).
        oh_weight, act_weight, ie_weight: DAFL's one-hot, activation and information-entropy weights.
        adv_weight: weight of the disagreement the ``adversarial`` generator maximises.
        bn_weight: BatchNorm-statistics weight; ``None``: 0 for a generator, 1 for ``inversion``.
        tv_weight, l2_weight: ``inversion``'s smoothness and L2 image priors.
        steps: ``inversion``: Adam steps on the pixels of each batch.
        lr: ``inversion``: the pixels' Adam learning rate.
        image_shape: ``inversion``: ``[C, H, W]`` of the images the teacher reads.
        student_steps: student updates per batch (each on a fresh generator sample; ZSKT uses 10).
    """

    kind: Literal["dafl", "adversarial", "inversion"] = "dafl"
    oh_weight: float = 1.0
    act_weight: float = 0.1
    ie_weight: float = 5.0
    adv_weight: float = 1.0
    bn_weight: float | None = None
    tv_weight: float = 1e-3
    l2_weight: float = 0.0
    steps: int = 20
    lr: float = 0.1
    image_shape: tuple[int, ...] | None = None
    student_steps: int = 1

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Synthesis.kind must be one of {list(KINDS)}, got {self.kind!r}.")
        for name in ("oh_weight", "act_weight", "ie_weight", "adv_weight", "tv_weight", "l2_weight", "lr"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"Synthesis.{name} must be a finite number >= 0, got {value!r}.")
        if self.bn_weight is not None and not (math.isfinite(self.bn_weight) and self.bn_weight >= 0):
            raise ValueError(f"Synthesis.bn_weight must be a finite number >= 0 or null, got {self.bn_weight!r}.")
        for name in ("steps", "student_steps"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"Synthesis.{name} must be an int >= 1, got {getattr(self, name)!r}.")
        if self.image_shape is not None:
            object.__setattr__(self, "image_shape", tuple(int(s) for s in self.image_shape))
        if self.kind == "inversion" and not self.image_shape:
            raise ValueError(
                "Synthesis(kind='inversion') optimises images directly: give image_shape [C, H, W] of what the "
                "teacher reads, e.g. [1, 28, 28] for Fashion-MNIST, [1, 8, 8] for digits."
            )

    @property
    def bn(self) -> float:
        """The BatchNorm-statistics weight in effect."""
        return self.bn_weight if self.bn_weight is not None else (1.0 if self.kind == "inversion" else 0.0)


def feature_layer(network: nn.Module, path: str | None) -> nn.Module:
    """The module whose input is DAFL's feature vector: ``path``, or the network's last ``nn.Linear``."""
    if path is not None:
        try:
            return network.get_submodule(path)
        except AttributeError:
            names = [n for n, _ in network.named_modules() if n]
            raise ValueError(
                f"teacher_features={path!r} is not a module of the teacher ({type(network).__name__}); its "
                f"modules include {names[-6:]}."
            ) from None
    linears = [m for m in network.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(
            f"DAFL reads the features entering the teacher's classifier, but {type(network).__name__} has no "
            "nn.Linear; name the classifier module with teacher_features."
        )
    return linears[-1]

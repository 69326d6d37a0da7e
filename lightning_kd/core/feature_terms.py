"""FeatureTerms: the feature/relation terms of a distillation module and the hooks that feed them. Pure torch.

One component owns everything feature distillation needs, so every distillation module (one teacher,
several, adversarial) gets it by holding one attribute:

- the terms (:class:`~lightning_kd.FeatureTerm`, an ``nn.ModuleList`` of them: their trainable parts and
  connectors are ordinary submodules, saved and restored with the module);
- the captures (:class:`~lightning_kd.core.features.FeatureCapture`) on the student's and each teacher's
  layers, attached by :meth:`attach` and removed by :meth:`detach`. Attached hooks store features only
  inside :meth:`capturing`, so validation and test forwards clone nothing;
- the dry run (:meth:`build`) that sizes connectors from one forward pass, before the optimizer exists;
- connectors restored on load by each term's ``get_extra_state``/``set_extra_state`` (torch's own
  mechanism: no custom checkpoint key, no Lightning internals).

Example:
    >>> from lightning_kd import FeatureTerm
    >>> from lightning_kd.losses import ATLoss
    >>> from lightning_kd.models import ResNet
    >>> student, teacher = ResNet(8), ResNet(14)
    >>> terms = FeatureTerms([FeatureTerm("at", ATLoss(), ["layer3"], ["layer3"], weight=1000.0)])
    >>> terms.bind(student, [teacher])
    >>> terms.attach()
    >>> with terms.capturing():
    ...     _ = student(torch.randn(2, 3, 32, 32)), teacher(torch.randn(2, 3, 32, 32))
    >>> sorted(terms.compute())
    ['at']
    >>> terms.detach()
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from torch import Tensor, nn

from lightning_kd.core.feature_term import FeatureTerm
from lightning_kd.core.features import FeatureCapture

#: ``(side, capture, teacher) -> {layer path: feature}``: where :meth:`FeatureTerms.compute` reads the features
FeatureSource = Callable[[str, str, int], dict[str, Tensor]]

# (side, teacher index, capture mode); the student's index is always 0
_NOTHING = nullcontext()
_Key = tuple[str, int, str]


class FeatureTerms(nn.ModuleList):
    """The feature terms of a module (an ``nn.ModuleList`` of :class:`FeatureTerm`) plus their hooks.

    Args:
        terms: the terms; their names must be unique.
    """

    def __init__(self, terms: Iterable[FeatureTerm] = ()) -> None:
        super().__init__(terms)
        for term in self:
            if not isinstance(term, FeatureTerm):
                raise TypeError(f"feature_terms takes FeatureTerm objects, got {type(term).__name__}.")
        names = [t.name for t in self]
        if len(set(names)) != len(names):
            raise ValueError(f"feature term names must be unique, got {names}.")
        self._captures: dict[_Key, FeatureCapture] = {}

    # -- binding and hooks --------------------------------------------------------------------------
    def bind(self, student: nn.Module, teachers: Sequence[nn.Module]) -> None:
        """Point the captures at the models (their layer paths are checked here: an unknown path fails now,
        listing the closest names). ``teachers`` are indexed by each term's ``teacher``."""
        self.detach()
        layers: dict[_Key, list[str]] = {}
        for term in self:
            if term.teacher >= len(teachers):
                raise ValueError(
                    f"feature term {term.name!r} names teacher {term.teacher}, but the module has "
                    f"{len(teachers)} teacher network(s) whose layers can be hooked (indices 0..{len(teachers) - 1})."
                )
            layers.setdefault(("student", 0, term.capture), []).extend(term.student_layers)
            layers.setdefault(("teacher", term.teacher, term.capture), []).extend(term.teacher_layers)
        self._captures = {
            key: FeatureCapture(student if key[0] == "student" else teachers[key[1]], paths, capture=key[2])
            for key, paths in layers.items()
        }
        for capture in self._captures.values():
            capture.enabled = False

    @property
    def attached(self) -> bool:
        """Whether the hooks are registered."""
        return any(c.active for c in self._captures.values())

    def attach(self) -> None:
        """Register the hooks on the layers now in place (call after a strategy swapped modules, e.g.
        BatchNorm for SyncBatchNorm, and before ``torch.compile``). A no-op when already attached."""
        for capture in self._captures.values():
            capture.register()

    def detach(self) -> None:
        """Remove every hook and forget captured features (safe to call again)."""
        for capture in self._captures.values():
            capture.remove()
            capture.clear()
            capture.enabled = False

    def capturing(self) -> AbstractContextManager[None]:
        """Within this block the attached hooks store features (cleared on entry); outside they do nothing."""
        return self._capturing() if self._captures else _NOTHING  # no terms: no generator on every step

    @contextmanager
    def _capturing(self) -> Iterator[None]:
        for capture in self._captures.values():
            capture.clear()
            capture.enabled = True
        try:
            yield
        finally:
            for capture in self._captures.values():
                capture.enabled = False

    def features(self, side: str, capture: str = "output", teacher: int = 0) -> dict[str, Tensor]:
        """Features captured in the last :meth:`capturing` block, by layer path."""
        cap = self._captures.get((side, teacher if side == "teacher" else 0, capture))
        return cap.features if cap is not None else {}

    # -- values ---------------------------------------------------------------------------------------
    @property
    def weights(self) -> dict[str, float]:
        """Each term's weight, by name."""
        return {t.name: t.weight for t in self}

    def compute(self, index: Tensor | None = None) -> dict[str, Tensor]:
        """Unweighted value of every term on the features captured in the last :meth:`capturing` block.

        Raises:
            ValueError: a term cannot run on its features; the message names the layers, their shapes and the
                fix (a connector, other layers).
        """
        return self._compute(self.feature_source(), index)

    def feature_source(self) -> FeatureSource:
        """Where :meth:`compute` and :meth:`build` read each side's features: the captured ones as they are."""
        return self.features

    def _compute(self, features: FeatureSource, index: Tensor | None) -> dict[str, Tensor]:
        values: dict[str, Tensor] = {}
        for term in self:
            s = features("student", term.capture, 0)
            t = features("teacher", term.capture, term.teacher)
            try:
                values[term.name] = term(s, t, index)
            except (ValueError, RuntimeError, KeyError) as err:
                term.explain(err, s, t)
        return values

    # -- the dry run ------------------------------------------------------------------------------------
    @property
    def needs_dry_run(self) -> bool:
        """Whether some term still needs connectors sized from one forward pass."""
        return any(t.needs_connectors for t in self)

    def build(self, run_forward: Callable[[], Any], index: Tensor | None = None) -> None:
        """Size every connector from one forward pass and check every term runs.

        Args:
            run_forward: runs the student and the teachers on an example batch (the caller puts the models in
                eval mode and disables gradients, so nothing is learned or recorded).
            index: the example batch's sample indices, for terms that need them (CRD).
        """
        was_attached = self.attached
        self.attach()
        try:
            with self.capturing():
                run_forward()
            source = self.feature_source()
            for term in self:
                s = source("student", term.capture, 0)
                t = source("teacher", term.capture, term.teacher)
                missing = [p for p in term.student_layers if p not in s] + [
                    p for p in term.teacher_layers if p not in t
                ]
                if missing:
                    raise ValueError(
                        f"feature term {term.name!r}: layers {missing} produced no output in a forward pass; pick "
                        "layers that run in the model's forward."
                    )
                shapes = [(s[a].shape, t[b].shape) for a, b in zip(term.student_layers, term.teacher_layers)]
                term.build_connectors(shapes)
            self._compute(source, index)
        finally:
            if was_attached:
                for capture in self._captures.values():
                    capture.clear()
            else:
                self.detach()

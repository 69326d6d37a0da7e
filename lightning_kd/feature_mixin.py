"""FeatureTermsMixin: what a distillation LightningModule needs to run :class:`FeatureTerm` s.

Hooks by layer path (registered by the :class:`FeatureHooks` callback the module adds itself), one dry
forward pass in ``setup`` that builds connectors before the optimizer exists, and connector shapes
recorded in checkpoints so ``load_from_checkpoint`` can rebuild them.
"""

from __future__ import annotations

from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.utilities import move_data_to_device
from torch import Tensor, nn

from lightning_kd.callbacks.feature_hooks import FeatureHooks
from lightning_kd.features import FeatureCapture


class FeatureTermsMixin:
    """Mixed into a LightningModule that has ``student``, ``teacher`` and ``feature_terms`` (a ModuleList),
    and defines ``forward_student``, ``forward_teacher`` and ``unpack_batch``."""

    feature_terms: nn.ModuleList
    student: nn.Module
    teacher: nn.Module

    def _make_captures(self) -> dict[tuple[str, str], FeatureCapture]:
        """One hook set per (network, capture mode) over the layers the feature terms name."""
        layers: dict[tuple[str, str], list[str]] = {}
        for term in self.feature_terms:
            layers.setdefault(("student", term.capture), []).extend(term.student_layers)
            layers.setdefault(("teacher", term.capture), []).extend(term.teacher_layers)
        models = {"student": self.student, "teacher": self.teacher}
        return {
            (side, mode): FeatureCapture(models[side], paths, capture=mode) for (side, mode), paths in layers.items()
        }

    def features(self, side: Literal["student", "teacher"], capture: str = "output") -> dict[str, Tensor]:
        """Features captured in the last forward pass, keyed by layer path."""
        cap = self.feature_captures.get((side, capture))
        return cap.features if cap is not None else {}

    def configure_callbacks(self) -> list[L.Callback]:
        return [FeatureHooks()] if self.feature_terms else []

    def _example_batch(self) -> Any:
        datamodule = self.trainer.datamodule
        if datamodule is not None:
            loader = datamodule.train_dataloader()
        else:  # dataloaders passed to fit() directly
            loader = self.trainer.fit_loop._data_source.dataloader()
        # a resident data module's batches are already on the accelerator; the model is not yet (setup runs
        # before the strategy moves it)
        return move_data_to_device(next(iter(loader)), self.device)

    def setup(self, stage: str) -> None:
        """Build connectors and check every feature term with one dry forward pass (before the optimizer)."""
        if stage != "fit" or not self.feature_terms:
            return
        batch = self._example_batch()
        inputs, indices = self.unpack_batch(batch)[0], self.batch_indices(batch)
        if isinstance(inputs, Tensor) and len(inputs) > 2:  # shapes need two samples, not an ImageNet batch on CPU
            inputs = inputs[:2]
            indices = indices[:2] if isinstance(indices, Tensor) else indices
        modes = {m: m.training for m in self.modules()}
        self.eval()  # student BN statistics, CRD memory banks: the dry run changes nothing
        try:
            with torch.no_grad():
                for cap in self.feature_captures.values():
                    cap.register()
                self.forward_student(inputs)
                self.forward_teacher(inputs)
                for term in self.feature_terms:
                    s, t = self.features("student", term.capture), self.features("teacher", term.capture)
                    shapes = [(s[a].shape, t[b].shape) for a, b in zip(term.student_layers, term.teacher_layers)]
                    term.build_connectors(shapes)
                    term.check(s, t, indices)
        finally:
            for cap in self.feature_captures.values():
                cap.remove()
                cap.clear()
            for module, mode in modes.items():  # per submodule: a user's frozen BN stays frozen
                module.training = mode

    def batch_indices(self, batch: Any) -> Tensor | None:
        """Sample indices in the batch, if the data module sends them (``with_indices``): for CRD."""
        if isinstance(batch, dict):
            return batch.get("index")
        return batch[2] if isinstance(batch, (tuple, list)) and len(batch) > 2 else None

    def _save_connector_shapes(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["lightning_kd_connector_shapes"] = {t.name: t.connector_shapes for t in self.feature_terms}

    def _rebuild_connectors(self, checkpoint: dict[str, Any]) -> None:
        # connectors are built from a dry forward in setup(); load_from_checkpoint runs no setup, so rebuild
        # them from the shapes the checkpoint recorded before Lightning loads the state dict
        shapes = checkpoint.get("lightning_kd_connector_shapes", {})
        for term in self.feature_terms:
            if shapes.get(term.name):
                term.build_connectors(shapes[term.name])

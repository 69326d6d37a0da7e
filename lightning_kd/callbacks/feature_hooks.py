"""FeatureHooks: register the module's feature-capture hooks for a run and always remove them."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from typing_extensions import override


class FeatureHooks(Callback):
    """Registers ``pl_module.feature_captures`` hooks at the start of fit/validate/test/predict and removes
    them in ``teardown`` and ``on_exception`` (``teardown`` is skipped when a run fails).

    ``DistillationModule`` adds this callback itself (``configure_callbacks``) whenever a loss term needs
    features, so users never list it. Hooks are registered in ``on_fit_start``, after the strategy set up
    the models (e.g. swapped BatchNorm for SyncBatchNorm), so they sit on the modules that actually run.
    """

    @staticmethod
    def _register(pl_module: L.LightningModule) -> None:
        for capture in getattr(pl_module, "feature_captures", {}).values():
            capture.register()

    @staticmethod
    def _remove(pl_module: L.LightningModule) -> None:
        for capture in getattr(pl_module, "feature_captures", {}).values():
            capture.remove()
            capture.clear()

    @override
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._register(pl_module)

    @override
    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._register(pl_module)

    @override
    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._register(pl_module)

    @override
    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._register(pl_module)

    @override
    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._remove(pl_module)

    @override
    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._remove(pl_module)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {}

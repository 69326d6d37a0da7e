"""FeatureHooks: attach the module's feature-capture hooks for a fit and always remove them."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from lightning_kd.core.feature_terms import FeatureTerms


def _components(pl_module: L.LightningModule) -> list[FeatureTerms]:
    return [m for m in pl_module.modules() if isinstance(m, FeatureTerms)]


class FeatureHooks(Callback):
    """Attaches every :class:`~lightning_kd.FeatureTerms` component's hooks at the start of ``fit`` and
    removes them in ``teardown`` and ``on_exception`` (``teardown`` is skipped when a run fails).

    Distillation modules add this callback themselves (``configure_callbacks``) whenever they have feature
    terms, so users never list it. Hooks are attached in ``on_fit_start``, after the strategy set up the
    models (e.g. swapped BatchNorm for SyncBatchNorm), so they sit on the modules that actually run. Only
    ``fit`` needs them: validation, test and predict compute no feature term, and attached hooks store
    nothing outside a training step anyway.
    """

    @override
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for terms in _components(pl_module):
            terms.attach()

    @override
    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            for terms in _components(pl_module):
                terms.detach()

    @override
    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        for terms in _components(pl_module):
            terms.detach()

    @override
    def state_dict(self) -> dict[str, Any]:
        return {}

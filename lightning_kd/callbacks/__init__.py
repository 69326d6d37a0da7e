"""Callbacks: temperature and loss-weight schedules, feature hooks, a progress bar that costs no step,
the causal-LM export."""

from types import ModuleType as _ModuleType

from lightning_kd.callbacks.checkpoint_io import AtomicCheckpointIO
from lightning_kd.callbacks.feature_hooks import FeatureHooks
from lightning_kd.callbacks.lm_export import SaveLanguageModel
from lightning_kd.callbacks.loss_weight import LossWeightScheduler
from lightning_kd.callbacks.prediction_writer import PredictionWriter
from lightning_kd.callbacks.progress_bar import KDProgressBar
from lightning_kd.callbacks.report import ReportCallback
from lightning_kd.callbacks.run_checkpoint import RunCheckpoint
from lightning_kd.callbacks.run_checks import RunChecks
from lightning_kd.callbacks.temperature import TemperatureScheduler

__all__ = sorted(n for n, v in globals().items() if not n.startswith("_") and not isinstance(v, _ModuleType))

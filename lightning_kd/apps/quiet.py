"""What a clean run prints that is not about the user's run, filtered narrowly — here, at the entry points, never
in library code (a library that changes process-wide warning filters hides its users' own warnings)."""

from __future__ import annotations

import logging
import warnings

import lightning as L

from lightning_kd.core.teacher import TeacherBase


def expect_frozen_teachers(model: L.LightningModule) -> None:
    """Lightning >= 2.5.5 warns about modules in eval mode at fit start (#21146); a frozen teacher always is.
    Silence exactly that count for this model (here, in the entry points: library code changes no warning
    filter), so any other module left in eval mode still warns."""
    teachers = [m for m in model.modules() if isinstance(m, TeacherBase)]
    frozen = len({id(sub) for m in teachers for sub in m.modules() if not sub.training})
    if frozen:
        warnings.filterwarnings("ignore", message=rf"Found {frozen} module\(s\) in eval mode at the start of training")


def quiet_third_party_noise() -> None:
    """Filter, narrowly, what a clean run prints that is not about the user's run: Lightning's own deprecation
    use on newer torch, its advertising tip, and the worker hint for in-memory data (tensors need no workers)."""
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    warnings.filterwarnings("ignore", message=r"The '\w+_dataloader' does not have many workers")

    class _NoTips(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "litlogger" not in record.getMessage()

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_NoTips())

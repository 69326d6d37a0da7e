"""RunCheckpoint: every run keeps its own checkpoints; only a healthy run publishes its model to the stable path.

Layout of a run under ``trainer.default_root_dir`` (what recipes and the CLI produce)::

    runs/digits/kd/
      model.ckpt               <- published by the last run that ended healthy (what other recipes read)
      version_0/
        metrics.csv, hparams.yaml, config.yaml
        checkpoints/best.ckpt  <- the best epoch by `monitor` (val/acc)
        checkpoints/last.ckpt  <- the latest state, rewritten every epoch: resume from it (also on Ctrl-C)
      version_1/ ...

Every checkpoint write is atomic (a temporary file renamed into place: a killed run leaves the previous file
whole) and refused when the weights hold NaN or infinity (:class:`AtomicCheckpointIO`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException
from typing_extensions import override

from lightning_kd.callbacks.checkpoint_io import AtomicCheckpointIO, NonFiniteCheckpointError
from lightning_kd.callbacks.publish_guard import other_recipe, run_inputs
from lightning_kd.core.digest import write_sidecar
from lightning_kd.core.errors import NonFiniteLossError

# the signal that stopped the last fit in this process ("SIGINT", "SIGTERM"): Lightning exits 1 after Ctrl-C
# without saying why, so an entry point reads it here to exit as a shell reports an interrupt (130)
_INTERRUPTS: list[str] = []


def take_interrupt() -> tuple[str, str | None] | None:
    """``(signal, where the run's state was saved and how to resume, or None)`` of the last fit stopped since the
    previous call (``None``: none), and forget it."""
    last = _INTERRUPTS[-1] if _INTERRUPTS else None
    _INTERRUPTS.clear()
    return last


def _next_version(root: Path) -> int:
    taken = [int(m.group(1)) for p in root.glob("version_*") if (m := re.fullmatch(r"version_(\d+)", p.name))]
    return max(taken, default=-1) + 1


class RunCheckpoint(ModelCheckpoint):
    """The checkpointing of a lightning-kd run (the ``checkpoint:`` key of the CLI).

    - Checkpoints go to the run's own folder — the logger's ``version_<n>/checkpoints`` (a fresh ``version_<n>``
      under ``default_root_dir`` when there is no logger) — so no run overwrites another's files: ``best.ckpt``
      (the best by ``monitor``) and ``last.ckpt`` (the state at the end of the latest epoch, whatever ``monitor``
      says).
    - When training ends normally and the loss never became non-finite, the final model (``publish="last"``)
      or the best one (``publish="best"``) is published to ``publish_to`` (default
      ``<default_root_dir>/model.ckpt``) by an atomic rename. A failed or interrupted run never replaces it.
    - On Ctrl-C (``KeyboardInterrupt``) and on SIGTERM (what SLURM and cloud schedulers send before they stop a
      job; Lightning stops at the next step) ``last.ckpt`` is written, the run says how to resume from it
      (``--ckpt_path …/last.ckpt``), and the process exits non-zero (130 for Ctrl-C, 143 for SIGTERM: a preempted
      job is not a finished one).
    - Writes go through :class:`AtomicCheckpointIO`: atomic, and never with non-finite weights.

    Args:
        monitor: the metric that picks ``best.ckpt``; ``None``: keep only ``last.ckpt``.
        mode: ``max`` or ``min`` for ``monitor``.
        publish: which model to publish when the run ends healthy: ``last`` (the final state, what the reference
            protocols report) or ``best``.
        publish_to: the stable path; ``None``: publish nothing.
        dirpath: where the run's checkpoints go (default: the run's own folder, see above).
        replace_other: publish over a model another recipe published there (another module class or other
            networks). Off by default: the run is refused before it trains, naming the file. A file the run reads
            (its teacher's checkpoint, a cache or store it uses) is never written over.
        **kwargs: other ``ModelCheckpoint`` arguments (``every_n_epochs``, …).

    Example::

        trainer = L.Trainer(default_root_dir="runs/digits/kd", callbacks=[RunCheckpoint()])
    """

    def __init__(
        self,
        monitor: str | None = "val/acc",
        mode: Literal["min", "max"] = "max",
        publish: Literal["last", "best"] = "last",
        publish_to: str | None = "auto",
        dirpath: str | None = None,
        replace_other: bool = False,
        **kwargs: Any,
    ) -> None:
        if publish not in ("last", "best"):
            raise ValueError(f"publish must be 'last' or 'best', got {publish!r}.")
        # the CLI passes ModelCheckpoint's own defaults (None) along: unset means ours
        for key, value in (("filename", "best"), ("save_last", True), ("enable_version_counter", False)):
            if kwargs.get(key) is None:
                kwargs[key] = value
        super().__init__(dirpath=dirpath, monitor=monitor, mode=mode, **kwargs)
        self.publish = publish
        self.publish_to = publish_to
        self.replace_other = replace_other
        self.published: str | None = None

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        strategy = trainer.strategy
        if not isinstance(strategy.checkpoint_io, AtomicCheckpointIO):
            strategy.checkpoint_io = AtomicCheckpointIO(strategy.checkpoint_io)
        if self.dirpath is None and not trainer.loggers:
            root = Path(trainer.default_root_dir)
            self.dirpath = str(root / f"version_{_next_version(root)}" / "checkpoints")
        if stage == "fit" and not trainer.fast_dev_run:
            self.check_publish_target(trainer, pl_module)
        super().setup(trainer, pl_module, stage)

    def check_publish_target(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Refuse, before any step, a run whose published model would replace a file it reads (the teacher's
        checkpoint, a cache or store: a KD run in its teacher's folder) or a model another recipe published."""
        target = self.publish_path(trainer)
        if target is None:
            return
        resolved = Path(target).resolve()
        fix = (
            "give this run its own folder (trainer.default_root_dir, e.g. runs/<dataset>/<method>) or another "
            "checkpoint.publish_to"
        )
        for what, path in run_inputs(pl_module):
            source = Path(path).resolve()
            if resolved == source or source in resolved.parents:
                raise ValueError(
                    f"this run would publish its model to {target}, which is {what} ({path}) that it reads: the "
                    f"input would be replaced by the run's own model. {fix[0].upper()}{fix[1:]}."
                )
        if resolved.is_file() and not self.replace_other:
            other = other_recipe(resolved, pl_module)
            if other:
                raise ValueError(
                    f"{target} holds a model another recipe published ({other}); this run would replace it when it "
                    f"ends. {fix[0].upper()}{fix[1:]}, or set checkpoint.replace_other: true to replace it."
                )

    def publish_path(self, trainer: L.Trainer) -> str | None:
        """Where a healthy run publishes its model (``None``: nowhere)."""
        if self.publish_to is None:
            return None
        if self.publish_to == "auto":
            return os.path.join(trainer.default_root_dir, "model.ckpt")
        return os.fspath(self.publish_to)

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        target = self.publish_path(trainer)
        if target is None or trainer.fast_dev_run or trainer.sanity_checking:
            return
        check = getattr(pl_module, "check_finite", None)
        if callable(check):
            check("at the end of training")  # raises: a diverged run publishes nothing
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        if self.publish == "best" and self.best_model_path:
            checkpoint = trainer.strategy.checkpoint_io.load_checkpoint(self.best_model_path, weights_only=False)
            if trainer.is_global_zero:
                trainer.strategy.checkpoint_io.save_checkpoint(checkpoint, target)
        else:
            trainer.save_checkpoint(target, weights_only=True)  # the final model; atomic through AtomicCheckpointIO
        if trainer.is_global_zero and "://" not in target:
            write_sidecar(target)  # model.ckpt.sha256: every later read checks the bytes against it
        self.published = target

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        # ModelCheckpoint rewrites last.ckpt only at a step where it wrote a top-k checkpoint (when `monitor`
        # improved): a run whose metric stalls would resume from its last improvement. Write it every epoch.
        if (
            self.save_last is True
            and not trainer.fast_dev_run
            and not trainer.sanity_checking
            and self._last_global_step_saved != trainer.global_step
        ):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    @override
    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        sigterm = isinstance(exception, SIGTERMException)
        if not (sigterm or isinstance(exception, KeyboardInterrupt)):
            return
        what = "stopped by SIGTERM" if sigterm else "interrupted"
        _INTERRUPTS.append(("SIGTERM" if sigterm else "SIGINT", None))
        if sigterm:
            exception.code = 143  # Lightning's SIGTERMException exits 0: a preempted job must not look finished
        if self.dirpath is None or trainer.state.fn != "fit":
            return
        path = os.path.join(self.dirpath, "last.ckpt")
        try:
            trainer.save_checkpoint(path, weights_only=False)  # resumable: optimizer and loops included
        except (NonFiniteCheckpointError, NonFiniteLossError) as err:
            rank_zero_info(f"lightning-kd: {what}; no last.ckpt written: {err}")
            return
        self.last_model_path = path
        relative = os.path.relpath(path)
        shown = path if relative.startswith("..") else relative  # as the user would type it, when it is near
        where = (
            f"at step {trainer.global_step} (epoch {trainer.current_epoch}); the run's state is saved in {shown}: "
            f"resume with the same command and --ckpt_path {shown}"
        )
        _INTERRUPTS[-1] = (_INTERRUPTS[-1][0], where)
        rank_zero_info(f"lightning-kd: {what} {where} (from Python: trainer.fit(..., ckpt_path={shown!r})).")

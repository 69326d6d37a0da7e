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
import torch
from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException
from typing_extensions import override

from lightning_kd.core.digest import write_sidecar
from lightning_kd.core.errors import NonFiniteLossError
from lightning_kd.core.teacher import TeacherBase

# the signal that stopped the last fit in this process ("SIGINT", "SIGTERM"): Lightning exits 1 after Ctrl-C
# without saying why, so an entry point reads it here to exit as a shell reports an interrupt (130)
_INTERRUPTS: list[str] = []


def take_interrupt() -> tuple[str, str | None] | None:
    """``(signal, where the run's state was saved and how to resume, or None)`` of the last fit stopped since the
    previous call (``None``: none), and forget it."""
    last = _INTERRUPTS[-1] if _INTERRUPTS else None
    _INTERRUPTS.clear()
    return last


class NonFiniteCheckpointError(RuntimeError):
    """A checkpoint was about to be written with NaN or infinite weights."""


def nonfinite_tensors(state: dict[str, Any], limit: int = 5) -> list[str]:
    """Names of (up to ``limit``) floating-point tensors in ``state`` holding NaN or infinity."""
    bad = []
    for name, value in state.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad.append(name)
            if len(bad) >= limit:
                break
    return bad


class AtomicCheckpointIO(CheckpointIO):
    """Wraps the strategy's checkpoint writer: each local file is written to ``<name>.tmp`` and renamed into place
    (``os.replace``, atomic on one file system), and a checkpoint whose ``state_dict`` holds NaN or infinity is
    refused before anything is written. Remote paths (``s3://…``) go straight to the wrapped writer.

    Args:
        inner: the writer that serialises (the strategy's own ``checkpoint_io``).
    """

    def __init__(self, inner: CheckpointIO) -> None:
        self.inner = inner

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = os.fspath(path)
        bad = nonfinite_tensors(checkpoint.get("state_dict", {}))
        if bad:
            raise NonFiniteCheckpointError(
                f"refused to write {path}: the weights hold NaN or infinity ({', '.join(bad)}); the run diverged. "
                "The previous checkpoints are untouched. Lower the learning rate, clip gradients "
                "(trainer.gradient_clip_val: 1.0) or train in 32-true/bf16-mixed precision, then resume from an "
                "earlier checkpoint."
            )
        if "://" in path:
            self.inner.save_checkpoint(checkpoint, path, storage_options=storage_options)
            return
        tmp = f"{path}.tmp"
        try:
            self.inner.save_checkpoint(checkpoint, tmp, storage_options=storage_options)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: Any = None) -> dict[str, Any]:
        kwargs = {} if weights_only is None else {"weights_only": weights_only}
        return self.inner.load_checkpoint(path, map_location=map_location, **kwargs)

    def remove_checkpoint(self, path: Any) -> None:
        self.inner.remove_checkpoint(path)

    def teardown(self) -> None:
        self.inner.teardown()


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


def run_inputs(pl_module: L.LightningModule) -> list[tuple[str, str]]:
    """``(what, path)`` of what a module's teacher components read (duplicates of nested components removed)."""
    seen, out = set(), []
    for module in pl_module.modules():
        if isinstance(module, TeacherBase):
            for item in module.inputs():
                if item[1] not in seen:
                    seen.add(item[1])
                    out.append(item)
    return out


_NETWORKS = ("student", "students", "model")


def other_recipe(path: Path, pl_module: L.LightningModule) -> str | None:
    """What differs between the run that published ``path`` and ``pl_module`` — its module class, or its
    student network's config — or ``None`` when it is the same recipe's model (a rerun replaces it) or the file
    says nothing readable."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - not ours to judge here; the file is reported when something reads it
        return None
    mine = f"{type(pl_module).__module__}.{type(pl_module).__qualname__}"
    theirs = saved.get("lightning_kd_module")
    if isinstance(theirs, str) and theirs.rsplit(".", 1)[-1] != mine.rsplit(".", 1)[-1]:
        return f"a {theirs.rsplit('.', 1)[-1]}, this run is a {type(pl_module).__name__}"
    saved_hp, hp = saved.get("hyper_parameters") or {}, dict(getattr(pl_module, "hparams", {}) or {})
    for key in _NETWORKS:
        if key in saved_hp and key in hp and _network(saved_hp[key]) != _network(hp[key]):
            return f"its {key} was {_brief(saved_hp[key])}, this run's is {_brief(hp[key])}"
    return None


def _network(config: Any) -> Any:
    """A network's config without its initialisation seed: another seed of one recipe is the same recipe."""
    if isinstance(config, dict) and isinstance(config.get("init_args"), dict):
        return {**config, "init_args": {k: v for k, v in config["init_args"].items() if k != "seed"}}
    return config


def _brief(value: Any) -> str:
    if isinstance(value, dict) and "class_path" in value:
        args = ", ".join(f"{k}={v}" for k, v in (value.get("init_args") or {}).items())
        text = f"{str(value['class_path']).rsplit('.', 1)[-1]}({args})"
    else:
        text = repr(value)
    return text if len(text) <= 100 else text[:97] + "..."

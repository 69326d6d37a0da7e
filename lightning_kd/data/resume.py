"""Where a run is in its training data, and the random generators, kept in checkpoints, so a resumed run continues
at the next batch with the draws an uninterrupted run would have made.

Lightning writes a data module's ``state_dict`` into every checkpoint and hands it back to ``load_state_dict`` when
a run resumes. :class:`ResumableData` puts there the epoch the training order is in and how many samples of it
the run had processed (Lightning's own count of processed batches × the batch size), with what that position
means something for: the batch size, the shuffle seed, a fingerprint of the training data. On resume the training
sampler (:class:`~lightning_kd.data.sampling.EpochShuffleSampler`) starts that epoch's order at that sample, so a
run resumed mid-epoch sees the batches an uninterrupted run would have. Other training data is refused (the
position would mean nothing); another batch size, seed or gradient accumulation is said (the run goes on, no
longer exactly as the interrupted one would have).

The global random generators (torch's CPU and CUDA ones, numpy's, Python's: dropout, a random-crop augmentation
without ``augment_seed``) go in the same state: as they are when the checkpoint is written, or — when a batch is in
progress, a run stopped by Ctrl-C or SIGTERM — torch's as it was before that batch was moved and augmented
(noted before every training batch: a host copy of a few KB), so the resumed run redoes that batch with the same
draws. They are put back just before the resumed run's first batch is moved. This is the data module's
``on_before_batch_transfer`` hook: a LightningModule that overrides it too is passed over by Lightning (which
says so).

Single process only: under DDP Lightning replaces the sampler by its ``DistributedSampler``, which restarts the
epoch — unless the data module shards the rows by rank (``rank_shards``, :mod:`lightning_kd.data.rank_shards`),
whose sampler Lightning keeps and which starts at the rank's position (not yet tested under DDP).
"""

from __future__ import annotations

from typing import Any, TypeVar

from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Sampler

from lightning_kd.core.rng import rng_state, set_rng_state, torch_rng_state
from lightning_kd.data.host_batch import HostBatch
from lightning_kd.data.sampling import EpochShuffleSampler

_Order = TypeVar("_Order", bound=Sampler)  # EpochShuffleSampler, RankShardSampler: an epoch and a start


class PositionedLoader(DataLoader):
    """A training DataLoader whose position in the epoch a checkpoint keeps — in its data module's state, with the
    generators (see the module docstring). Lightning asks the loader itself whether a mid-epoch resume can hold
    (``state_dict``/``load_state_dict``) and warns "your dataloader is not resumable" when it has neither."""

    def state_dict(self) -> dict[str, Any]:
        return {"position": "in the checkpoint's datamodule state"}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to do: the data module's ``load_state_dict`` put the sampler at the position."""


class ResumableData(HostBatch):
    """Mixin of a LightningDataModule whose training loader uses :meth:`training_sampler`; see the module docstring.

    The data module provides ``batch_size`` and :meth:`resume_key` (what must match for the position to hold).
    """

    batch_size: int
    _resume_from: tuple[int, int] | None = None
    _train_sampler: EpochShuffleSampler | None = None
    _rng_at_batch: tuple[int, dict[str, Any]] | None = None
    _rng_to_restore: dict[str, Any] | None = None

    def resume_key(self) -> dict[str, Any]:
        """``{"data": fingerprint of the training split, "seed": the shuffle seed}``; override in subclasses."""
        raise NotImplementedError

    def training_sampler(self, sampler: _Order) -> _Order:
        """``sampler`` (the training order), started where a resumed run left off; remembered for :meth:`state_dict`."""
        sampler.start = self.samples_to_skip
        self._train_sampler = sampler
        return sampler

    def samples_to_skip(self, epoch: int) -> int:
        """Samples of ``epoch``'s order the run resumed from had already processed (0 for any other epoch)."""
        if self._resume_from is None or self._resume_from[0] != epoch:
            return 0
        return self._resume_from[1]

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Before a training batch is moved (and augmented): a resumed fit puts the generators back, once; every
        batch notes torch's generator state for a checkpoint written while the batch is in progress."""
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.training and not trainer.sanity_checking:
            if self._rng_to_restore is not None:
                set_rng_state(self._rng_to_restore)
                self._rng_to_restore = None
            self._rng_at_batch = (_processed(trainer), torch_rng_state())
        return super().on_before_batch_transfer(batch, dataloader_idx)  # type: ignore[misc]

    def state_dict(self) -> dict[str, Any]:
        trainer = getattr(self, "trainer", None)
        sampler = self._train_sampler
        if trainer is None or sampler is None or trainer.state.fn != "fit":
            return {}
        # Lightning's count of the epoch's processed batches (a resumed epoch's count includes the batches skipped)
        processed = _processed(trainer)
        snapshot = self._rng_at_batch
        in_progress = snapshot is not None and snapshot[0] == processed  # moved, not yet trained on
        return {
            "epoch": sampler.epoch,
            "samples": processed * self.batch_size,
            "batch_size": self.batch_size,
            "accumulate_grad_batches": trainer.accumulate_grad_batches,
            "rng": rng_state(snapshot[1] if in_progress else None),
            **self.resume_key(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        mine = {**self.resume_key(), "batch_size": self.batch_size}
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            mine["accumulate_grad_batches"] = trainer.accumulate_grad_batches
        if state.get("data") is not None and state["data"] != mine["data"]:
            raise ValueError(
                f"the checkpoint was trained on other training data than {type(self).__name__} gives now (fingerprint "
                f"{str(state['data'])[:16]}…, now {str(mine['data'])[:16]}…): its position in the data means nothing "
                "here. Resume with the data it was trained on, or start a new run from its weights (teacher_ckpt, "
                "or lightning_kd.core.weights.load_weights)."
            )
        for key in ("batch_size", "seed", "accumulate_grad_batches"):
            if key in state and key in mine and state[key] != mine[key]:
                rank_zero_info(
                    f"lightning-kd: resuming with {key}={mine[key]}; the checkpoint was trained with "
                    f"{key}={state[key]}: the run goes on from sample {state['samples']} of epoch {state['epoch']}, "
                    f"but not with the batches an uninterrupted run would have seen. To keep them, pass "
                    f"{key}={state[key]} again."
                )
        self._resume_from = (int(state["epoch"]), int(state["samples"]))
        self._rng_to_restore = state.get("rng")


def _processed(trainer: Any) -> int:
    """Lightning's count of the current epoch's processed training batches."""
    return trainer.fit_loop.epoch_loop.batch_progress.current.processed

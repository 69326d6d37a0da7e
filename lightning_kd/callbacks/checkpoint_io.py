"""How a run writes its checkpoint files: atomically (a temporary, then a rename), never with NaN or infinite
weights, and a full disk said as a full disk — where, how much is free, what to do — not as whatever failed first."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from typing import Any

import torch
from lightning.fabric.plugins import CheckpointIO


class DiskFullError(OSError):
    """A checkpoint could not be written: no space left on a disk it goes through."""

    def __str__(self) -> str:
        return str(self.strerror)


def disk_full(err: BaseException) -> OSError | None:
    """The "no space left" (or quota) error in ``err``'s chain — a rename across disks that failed first (``[Errno
    18] Invalid cross-device link``) and torch's "file write failed" are only how it showed."""
    seen: list[BaseException] = []
    while err is not None and all(err is not e for e in seen):
        seen.append(err)
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return err
        err = err.__cause__ or err.__context__
    return None


def disk_full_message(path: str, err: OSError) -> str:
    """Where the disk is full, how much is free there, and the fix; the previous files are untouched."""
    full = os.path.dirname(os.path.abspath(err.filename)) if isinstance(err.filename, str) else None
    target = os.path.dirname(os.path.abspath(path))
    where = full or target
    existing = where
    while not os.path.isdir(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)  # the disk of the nearest folder that exists
    try:
        free = f"{shutil.disk_usage(existing).free / 2**20:.0f} MB free"
    except OSError:
        free = "free space unknown"
    tmp = tempfile.gettempdir()
    temp = full is not None and full != target and os.path.commonpath([full, tmp]) == tmp  # fsspec's temporary
    through = f" (through the temporary folder {where}: set TMPDIR to a disk with room)" if temp else ""
    return (
        f"could not write {path}: no space left on the disk of {where}{through} ({free}). Free space there or point "
        "trainer.default_root_dir (checkpoint.dirpath) at a disk with room, then resume from the last checkpoint; "
        "the checkpoints already written are untouched."
    )


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
        except (OSError, RuntimeError) as err:
            full = disk_full(err)
            if full is None:
                raise
            raise DiskFullError(full.errno, disk_full_message(path, full)) from err
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

"""An offline teacher cache keyed by (epoch, sample index): teacher logits of the exact augmented view. Pure
torch + numpy.

Running a frozen teacher is about half the cost of an online KD step (BENCHMARKS.md). Storing its logits
once removes that cost, but only if the stored logits belong to the image the student sees: torchdistill's
cache is keyed by sample index alone (its issue #165), so with random augmentation the student is taught
the teacher's answer for another crop. Here the augmentation is replayable
(:func:`~lightning_kd.data.augment.crop_flip_params`: the view of sample ``i`` in epoch ``e`` is a pure
function of ``(seed, e, i)``), and the cache holds one row per ``(epoch, index)``; without augmentation one
epoch serves every epoch.

On disk, a folder:

- ``meta.json``: the key (augmentation seed, padding, flip, number of samples and classes, fingerprints of
  the teacher's weights and of the data set) and the storage format. Written last: a folder without it is
  an unfinished build and is refused. A finished cache is only replaced by a build with the same key, or
  when asked (``overwrite=True``).
- ``storage="fp16"`` / ``"fp32"``: ``logits.npy``, ``(E, N, C)``.
- ``storage="topk"``: ``topk_values.npy`` ``(E, N, k + 1)`` fp16 (the ``k`` largest logits, then one fill
  logit) and ``topk_indices.npy`` ``(E, N, k)`` (their classes). See :func:`lightning_kd.cache.topk.encode_topk`.

Finishing records each array's sha256 in ``meta.json``. Opening checks every file against ``meta.json`` (shape,
dtype) and its bytes against that sha256; a file whose bytes differ (or a cache with no record) has its values
scanned once for NaN/inf (and top-k classes out of range): a damaged cache is refused by name, never read as
logits.

Example:
    >>> import tempfile, torch
    >>> path = tempfile.mkdtemp()
    >>> w = TeacherCache.create(path, num_samples=4, num_classes=3, epochs=1, key={"augment": False})
    >>> w.write(0, torch.arange(4), torch.eye(4, 3)); w.finish()
    >>> TeacherCache.open(path).lookup(5, torch.tensor([1]))  # no augmentation: epoch 0 serves every epoch
    tensor([[0., 1., 0.]])
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from lightning_kd.cache.checks import (
    BUILD_HINT,
    FIELDS,
    FORMAT_VERSION,
    REBUILD_HINT,
    expected_shapes,
    open_array,
    read_meta,
    refuse_bad_values,
    refuse_replacing,
)
from lightning_kd.cache.topk import decode_topk, encode_topk
from lightning_kd.core.digest import file_sha256

Storage = Literal["fp16", "fp32", "topk"]
_FILES = ("meta.json", "logits.npy", "topk_values.npy", "topk_indices.npy")


class TeacherCache:
    """Teacher logits per ``(epoch, sample index)``, memory-mapped from a folder (see the module docstring).

    Use :meth:`open` to read (``lookup``) and :meth:`create` + :meth:`write` + :meth:`finish` to build
    (:func:`lightning_kd.cache.build.build_teacher_cache` does that for a data module).
    """

    def __init__(self, path: str | os.PathLike, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.path = Path(path)
        self.meta = meta
        self.arrays = arrays
        self._tensors: dict[str, Tensor] | None = None  # set by to(device)

    # -- building -----------------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        num_samples: int,
        num_classes: int,
        epochs: int,
        key: Mapping[str, Any],
        storage: Storage = "fp16",
        k: int | None = None,
        temperature: float = 4.0,
        overwrite: bool = False,
    ) -> TeacherCache:
        """An empty, writable cache in folder ``path`` (created if needed).

        An unfinished build there (no ``meta.json``) is replaced, and so is a finished cache whose
        ``meta.json`` holds the same ``key`` (a rebuild: more epochs, another storage). A finished cache built
        for anything else is replaced only with ``overwrite=True``. Other files in the folder are left alone.

        Args:
            path: the folder.
            num_samples: training samples ``N``.
            num_classes: logits per sample ``C``.
            epochs: epochs stored ``E`` (1 without augmentation: it then serves every epoch).
            key: what the cache must match to be used: ``augment``, ``augment_seed``, ``padding``, ``flip``,
                ``dataset``, ``teacher``, … (stored in ``meta.json``).
            storage: ``fp16`` (default: half the bytes, ~1e-3 relative error), ``fp32``, or ``topk``.
            k: classes kept per sample with ``storage="topk"``.
            temperature: the temperature at which ``topk`` keeps the remaining mass exact.
            overwrite: replace a finished cache built for another key.

        Raises:
            FileExistsError: ``path`` holds a finished cache for another key (or an unreadable ``meta.json``)
                and ``overwrite`` is off; or ``path`` is a file.
        """
        if storage not in ("fp16", "fp32", "topk"):
            raise ValueError(f"storage must be 'fp16', 'fp32' or 'topk', got {storage!r}.")
        if storage == "topk" and (k is None or not 1 <= k < num_classes):
            raise ValueError(f"storage='topk' needs 1 <= k < num_classes={num_classes}, got k={k}.")
        if epochs < 1 or num_samples < 1:
            raise ValueError(f"epochs and num_samples must be >= 1, got {epochs} and {num_samples}.")
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise FileExistsError(f"teacher cache path {str(path)!r} is a file, not a folder; pass a folder path.")
        if not overwrite:
            refuse_replacing(path, key)
        path.mkdir(parents=True, exist_ok=True)
        for old in _FILES:
            (path / old).unlink(missing_ok=True)
        meta = dict(key)
        meta.update(
            format=FORMAT_VERSION,
            storage=storage,
            epochs=epochs,
            num_samples=num_samples,
            num_classes=num_classes,
            k=k if storage == "topk" else None,
            topk_temperature=temperature if storage == "topk" else None,
        )
        shape = (epochs, num_samples)
        if storage == "topk":
            index_dtype = np.int16 if num_classes <= np.iinfo(np.int16).max else np.int32
            arrays = {
                "topk_values": _new_array(path / "topk_values.npy", np.float16, (*shape, k + 1)),
                "topk_indices": _new_array(path / "topk_indices.npy", index_dtype, (*shape, k)),
            }
        else:
            dtype = np.float16 if storage == "fp16" else np.float32
            arrays = {"logits": _new_array(path / "logits.npy", dtype, (*shape, num_classes))}
        meta["dtype"] = {name: str(a.dtype) for name, a in arrays.items()}
        return cls(path, meta, arrays)

    def write(self, epoch: int, indices: Tensor, logits: Tensor) -> None:
        """Store the teacher's ``logits`` ``(B, C)`` of samples ``indices`` ``(B,)`` in ``epoch``."""
        idx = indices.detach().cpu().numpy()
        logits = logits.detach().float().cpu()
        finite = torch.isfinite(logits).all(dim=-1)  # (B,)
        if not finite.all():
            bad = idx[~finite.numpy()]
            raise ValueError(
                f"the teacher's logits of {len(bad)} sample(s) in epoch {epoch} (indices {bad[:5].tolist()}) are "
                f"NaN or inf, so teacher cache {str(self.path)!r} was not finished: the teacher diverged or its "
                "weights are broken; check teacher_ckpt (or the precision it runs in) and rebuild."
            )
        if self.meta["storage"] == "topk":
            values, classes = encode_topk(logits, self.meta["k"], self.meta["topk_temperature"])
            self.arrays["topk_values"][epoch, idx] = _checked_fp16(values)
            self.arrays["topk_indices"][epoch, idx] = classes.numpy()
        elif self.meta["storage"] == "fp16":
            self.arrays["logits"][epoch, idx] = _checked_fp16(logits)
        else:
            self.arrays["logits"][epoch, idx] = logits.numpy()

    def finish(self) -> None:
        """Flush the arrays and write ``meta.json`` (atomically: its presence marks a complete build)."""
        for a in self.arrays.values():
            a.flush()
        self.meta["sha256"] = {name: file_sha256(self.path / f"{name}.npy") for name in self.arrays}
        tmp = self.path / "meta.json.tmp"
        tmp.write_text(json.dumps(self.meta, indent=2, sort_keys=True))
        os.replace(tmp, self.path / "meta.json")

    # -- reading ------------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike) -> TeacherCache:
        """Memory-map the cache in folder ``path`` and check it: each array's shape and dtype against
        ``meta.json``, and its values, scanned once in chunks (logits finite, top-k classes in range). Nothing
        else is read until :meth:`lookup` or :meth:`to`.

        Raises:
            FileNotFoundError: no folder, no ``meta.json`` (an unfinished build) or an array file missing.
            ValueError: ``meta.json`` unreadable or of another format; an array truncated, corrupted, of
                another shape or dtype, or holding NaN/inf logits. Each message names the file and the fix.
        """
        path = Path(path)
        meta_file = path / "meta.json"
        if not meta_file.is_file():
            what = "is an unfinished build" if path.is_dir() else "does not exist"
            raise FileNotFoundError(f"teacher cache {str(path)!r} {what} (no meta.json); {BUILD_HINT}.")
        meta = read_meta(meta_file)
        arrays = {name: open_array(path / f"{name}.npy", shape, meta) for name, shape in expected_shapes(meta).items()}
        recorded = meta.get("sha256") if isinstance(meta.get("sha256"), dict) else {}
        changed = [name for name in arrays if recorded.get(name) != file_sha256(path / f"{name}.npy")]
        for name in changed:  # bytes other than those recorded at build, or no record: what is in them is checked
            refuse_bad_values(path / f"{name}.npy", arrays[name], meta)
        if recorded and changed:
            raise ValueError(
                f"teacher cache {str(path)!r}: {', '.join(f'{n}.npy' for n in changed)} changed since the build "
                f"finished (sha256 differs from the one in meta.json): edited or damaged (a copy cut short, a disk "
                f"error); {REBUILD_HINT}."
            )
        return cls(path, meta, arrays)

    @property
    def epochs(self) -> int:
        """Epochs stored (without augmentation 1, and it serves every epoch)."""
        return self.meta["epochs"]

    @property
    def per_epoch(self) -> bool:
        """Whether each epoch has its own views (the cache was built with augmentation)."""
        return bool(self.meta.get("augment"))

    @property
    def nbytes(self) -> int:
        """Bytes of the stored arrays."""
        return sum(a.nbytes for a in self.arrays.values())

    @property
    def preloaded(self) -> bool:
        """Whether :meth:`to` loaded the whole cache onto a device."""
        return self._tensors is not None

    def to(self, device: torch.device | str) -> TeacherCache:
        """Load the whole cache onto ``device`` (kept in its stored dtype): lookups become one gather there,
        with no host round trip. Returns ``self``."""
        self._tensors = {n: torch.from_numpy(np.array(a)).to(device) for n, a in self.arrays.items()}
        return self

    def check(self, expected: Mapping[str, Any], against: str = "the current run") -> None:
        """Raise ``ValueError`` naming every field of ``expected`` whose cached value differs."""
        diffs = [
            f"{FIELDS.get(name, name)}: cache {self.meta.get(name)!r}, {against} {value!r}"
            for name, value in expected.items()
            if self.meta.get(name) != value
        ]
        if diffs:
            raise ValueError(
                f"teacher cache {str(self.path)!r} was built for something else: "
                + "; ".join(diffs)
                + f". For this run, {REBUILD_HINT} (it replaces the cache), or restore those settings."
            )

    def lookup(self, epoch: int, indices: Tensor, device: torch.device | str | None = None) -> Tensor:
        """Teacher logits of samples ``indices`` ``(B,)`` as seen in ``epoch``: ``(B, C)`` fp32 on ``device``
        (default: ``indices.device``). Host ``indices`` read a memory-mapped cache without a device wait."""
        device = indices.device if device is None else torch.device(device)
        e = epoch if self.per_epoch else 0
        if not 0 <= e < self.epochs:
            raise ValueError(
                f"epoch {epoch} is not in teacher cache {str(self.path)!r}, which holds epochs 0..{self.epochs - 1}"
                f"; rebuild it with more epochs ({BUILD_HINT} --epochs N)."
            )
        rows = {n: self._rows(n, e, indices, device) for n in self.arrays}
        if self.meta["storage"] == "topk":
            return decode_topk(rows["topk_values"], rows["topk_indices"], self.meta["num_classes"])
        return rows["logits"].float()

    def _rows(self, name: str, epoch: int, indices: Tensor, device: torch.device) -> Tensor:
        if self._tensors is not None:
            table = self._tensors[name]  # host → device index copies do not wait for the device
            return table[epoch][indices.to(table.device, non_blocking=True)].to(device, non_blocking=True)
        rows = self.arrays[name][epoch, indices.detach().cpu().numpy()]  # fancy indexing copies just these rows
        return torch.from_numpy(rows).to(device, non_blocking=True)


def _new_array(path: Path, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
    return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)


def _checked_fp16(values: Tensor) -> np.ndarray:
    out = values.half()
    if not torch.isfinite(out).all():
        raise ValueError(
            "teacher logits overflow fp16 (|logit| > 65504); build the cache with storage='fp32' (--storage fp32)."
        )
    return out.numpy()

"""An offline causal-LM teacher: per token, ``k`` of the teacher's tokens and their log-probabilities — its top
``k`` (``kind: topk``), or ``k`` tokens drawn from its distribution (``kind: sampled``).

Built once by ``lightning-kd cache-lm`` (:mod:`lightning_kd.cache.lm_teacher`), read by
:class:`~lightning_kd.cache.lm_teacher.CachedLMTeacher` in place of a live teacher forward pass. A folder::

    meta.json       format, k, temperature, vocab size, sequence shape, dtype, what it was built from
    logprobs.npy    (N, L, k) fp16 (or fp32): log softmax(z / T) of the k most likely next tokens, descending
                    (topk), or of k tokens drawn with replacement from softmax(z / T) (sampled)
    ids.npy         (N, L, k) int32: their token ids
    done.npy        (N,) bool: sequences written (a build stopped half-way is refused, and resumable)

Keyed by sequence index (the row of :class:`~lightning_kd.data.PackedTextDataModule`'s training split); the
teacher's weights fingerprint, the tokenizer's vocabulary fingerprint and the training tokens' fingerprint are
recorded and checked when the store is used, so a store built for another teacher, tokenizer or data is refused
naming what differs.

**The tail.** The store says nothing about the ``V − k`` tokens outside the top ``k`` but their total mass
``r = 1 − Σ_topk p``. Training compares the student with it over ``k + 1`` buckets (the stored tokens and "the
rest"), or over the full vocabulary after spreading ``r`` uniformly
(:func:`~lightning_kd.losses.token.decode_lm_topk`): the
``CachedLMTeacher``'s ``tail`` (:mod:`lightning_kd.losses.token.sparse`). With ``k = V`` both are the live
teacher's loss (tested). The temperature is fixed at build time: a run at another temperature is refused
(softening a truncated distribution is not the truncated softened one).

**Sampled.** The draws of a ``sampled`` store give an unbiased estimate of every divergence and of its gradient
(:mod:`lightning_kd.losses.token.sampled`); each sequence's draws come from a generator seeded by the store's
``seed`` and the sequence's index, so a resumed or re-run build draws the same tokens. ``meta.json`` also holds
the store's fidelity (:mod:`lightning_kd.cache.lm_fidelity`) and, for a store filled from an inference server
(:mod:`lightning_kd.cache.lm_server`), the server's address and model name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from lightning_kd.cache.lm_checks import (
    ARRAYS as _ARRAYS,
)
from lightning_kd.cache.lm_checks import (
    REBUILD,
    changed_files,
    expected_arrays,
    open_lm_array,
    open_lm_rows,
    read_lm_meta,
    refuse_bad_lm_values,
)
from lightning_kd.cache.lm_forms import draw_seed, sampled_logprobs, topk_logprobs
from lightning_kd.core.digest import file_sha256

FORMAT = "lightning-kd-lm-topk"
VERSION = 1
__all__ = ["LMTeacherStore", "draw_seed", "sampled_logprobs", "topk_logprobs"]
StoreDtype = Literal["fp16", "fp32"]
StoreKind = Literal["topk", "sampled"]
KINDS = ("topk", "sampled")
# what a run compares against the store, and what to do when one differs
_FIXES = {
    "teacher_fingerprint": "the teacher's weights changed: rebuild the store with lightning-kd cache-lm",
    "vocab_fingerprint": "the data's tokenizer is not the one the store was built with: use that tokenizer",
    "data_fingerprint": "the training sequences differ (files, seq_len, max_train_tokens): rebuild the store",
    "temperature": "set the run's temperature to the store's, or rebuild the store at the run's temperature",
    "vocab_size": "the tokenizer's size differs from the store's: rebuild the store",
    "kind": "set the CachedLMTeacher's kind to the store's, or build a store of the recipe's kind",
}


class LMTeacherStore:
    """The on-disk top-k store (see the module docstring): create, write, finish, open, check, lookup."""

    def __init__(
        self, path: str | os.PathLike, meta: dict[str, Any], arrays: dict[str, np.ndarray], rows: range | None = None
    ) -> None:
        self.path, self.meta, self.arrays = Path(path), meta, arrays
        self.rows = rows if rows is not None else range(int(meta["num_sequences"]))

    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        *,
        num_sequences: int,
        seq_len: int,
        k: int,
        temperature: float,
        vocab_size: int,
        dtype: StoreDtype = "fp16",
        overwrite: bool = False,
        kind: StoreKind = "topk",
        **record: Any,
    ) -> LMTeacherStore:
        """A new store (or the unfinished one already in ``path``, for the same settings, to resume).

        A finished store in ``path``, or any other files there, are kept: the call is refused unless
        ``overwrite``. ``record`` (fingerprints of the teacher, vocabulary and data) goes into ``meta.json``."""
        if dtype not in ("fp16", "fp32"):
            raise ValueError(f"dtype must be 'fp16' or 'fp32', got {dtype!r}.")
        if kind not in KINDS:
            raise ValueError(f"kind must be 'topk' or 'sampled', got {kind!r}.")
        if kind == "sampled" and k < 1:
            raise ValueError(f"a sampled store needs k >= 1 draws per token, got {k}; 32 costs what top-32 does.")
        if kind == "topk" and not 1 <= k <= vocab_size:
            raise ValueError(f"k must be in [1, vocab size {vocab_size}], got {k}; 16 to 64 is usual.")
        path = Path(path)
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "num_sequences": num_sequences,
            "seq_len": seq_len,
            "k": k,
            "temperature": float(temperature),
            "vocab_size": vocab_size,
            "dtype": dtype,
            "kind": kind,
            "complete": False,
            **record,
        }
        if path.exists() and any(path.iterdir()):
            old = read_lm_meta(path) if (path / "meta.json").is_file() else None
            same = old is not None and {x: old.get(x) for x in meta if x != "complete"} == {
                x: v for x, v in meta.items() if x != "complete"
            }
            if same and not old["complete"] and not overwrite:
                return cls(path, old, _open_arrays(path, old, "r+"))  # resume an interrupted build
            if not overwrite:
                what = "a finished store" if old and old.get("complete") else "other files"
                raise FileExistsError(
                    f"{path} already holds {what}; it is kept. Pass --overwrite (overwrite=True) to replace it, "
                    "or choose another --out."
                )
            for name in ("meta.json", *(f"{a}.npy" for a in _ARRAYS)):
                (path / name).unlink(missing_ok=True)
        path.mkdir(parents=True, exist_ok=True)
        value_dtype = np.float16 if dtype == "fp16" else np.float32
        shape = (num_sequences, seq_len, k)
        arrays = {
            "logprobs": np.lib.format.open_memmap(path / "logprobs.npy", "w+", value_dtype, shape),
            "ids": np.lib.format.open_memmap(path / "ids.npy", "w+", np.int32, shape),
            "done": np.lib.format.open_memmap(path / "done.npy", "w+", np.bool_, (num_sequences,)),
        }
        _write_meta(path, meta)
        return cls(path, meta, arrays)

    def write(self, indices: Tensor, logprobs: Tensor, ids: Tensor) -> None:
        """Rows ``indices`` ``(B,)`` get ``logprobs``/``ids`` ``(B, L, k)``."""
        rows = indices.cpu().numpy()
        finite = torch.isfinite(logprobs).flatten(1).all(1).cpu().numpy()
        if not finite.all():
            raise ValueError(
                f"the teacher's log-probabilities of {int((~finite).sum())} sequence(s) (e.g. {rows[~finite][:3]}) "
                f"are NaN or inf, so LM teacher store {str(self.path)!r} was not finished: the teacher diverged or "
                "its weights are broken; check teacher_ckpt (or the precision it runs in) and rebuild."
            )
        self.arrays["logprobs"][rows] = logprobs.detach().cpu().numpy().astype(self.arrays["logprobs"].dtype)
        self.arrays["ids"][rows] = ids.detach().cpu().numpy().astype(np.int32)
        self.arrays["done"][rows] = True

    @property
    def remaining(self) -> np.ndarray:
        """Sequence indices not written yet."""
        return np.flatnonzero(~np.asarray(self.arrays["done"]))

    def finish(self, **record: Any) -> None:
        """Flush and mark complete (refused while sequences are missing); ``record`` (the fidelity report, the build
        time) goes into ``meta.json``."""
        missing = self.remaining
        if len(missing):
            raise RuntimeError(f"{self.path}: {len(missing)} sequences not written (e.g. {missing[:3].tolist()}).")
        for array in self.arrays.values():
            array.flush()
        self.meta.update(record)
        self.meta["sha256"] = {name: file_sha256(self.path / f"{name}.npy") for name in _ARRAYS}
        self.meta["complete"] = True
        _write_meta(self.path, self.meta)

    @classmethod
    def open(cls, path: str | os.PathLike, rows: range | None = None) -> LMTeacherStore:
        """A finished store, memory-mapped read-only, checked (:mod:`lightning_kd.cache.lm_checks`): its files
        against ``meta.json`` and the sha256 recorded at build; the values scanned when the bytes differ from that
        record or there is none. Each refusal names the file and the fix.

        ``rows``: map only these sequences (a DDP rank's block, :mod:`lightning_kd.data.rank_shards`); their values
        are scanned instead of the files' sha256 (which would read every row), and other sequences are refused."""
        path = Path(path)
        if not (path / "meta.json").is_file():
            what = "is not a folder" if path.is_file() else "has no meta.json"
            raise FileNotFoundError(
                f"no LM teacher store at {path} (it {what}); build it first: lightning-kd cache-lm --config "
                "<the recipe's configs>."
            )
        meta = read_lm_meta(path)
        meta.setdefault("kind", "topk")  # stores written before sampled ones existed
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path} holds a {meta.get('format')!r} store, not an LM top-k store ({FORMAT!r}).")
        if not meta.get("complete"):
            raise ValueError(
                f"{path}: the build stopped before the end (meta.json complete: false); run the same lightning-kd "
                "cache-lm command again to finish it."
            )
        expected = expected_arrays(meta)
        if rows is not None:
            arrays = {name: open_lm_rows(path / f"{name}.npy", *expected[name], rows) for name in ("logprobs", "ids")}
            arrays["done"] = open_lm_array(path / "done.npy", *expected["done"], "r")
            refuse_bad_lm_values(path, arrays, meta)
            return cls(path, meta, arrays, rows)
        arrays = {
            name: open_lm_array(path / f"{name}.npy", shape, dtype, "r") for name, (shape, dtype) in expected.items()
        }
        changed = changed_files(path, meta)
        if changed != []:  # bytes other than those recorded at build, or no record: what is in them is checked
            refuse_bad_lm_values(path, arrays, meta)
        if changed:
            raise ValueError(
                f"LM teacher store {str(path)!r}: {', '.join(f'{n}.npy' for n in changed)} changed since the build "
                f"finished (sha256 differs from the one in meta.json): edited or damaged (a copy cut short, a disk "
                f"error); {REBUILD}."
            )
        return cls(path, meta, arrays)

    @property
    def bytes_per_token(self) -> float:
        k = self.meta["k"]
        return k * (2 if self.meta["dtype"] == "fp16" else 4) + k * 4

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())

    def check(self, expected: dict[str, Any], against: str = "the current run") -> None:
        """Refuse, naming each difference and its fix, when ``expected``'s values (None: not checked) differ."""
        diffs = [
            f"{key}: store {self.meta.get(key)!r}, {against} {value!r} ({_FIXES.get(key, 'rebuild the store')})"
            for key, value in expected.items()
            if value is not None and self.meta.get(key) != value
        ]
        if diffs:
            raise ValueError(f"the LM teacher store {self.path} does not match {against}:\n  " + "\n  ".join(diffs))

    def lookup(self, indices: Tensor, device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
        """``(logprobs fp32, ids int64)`` ``(B, L, k)`` of sequences ``indices`` on ``device``. ``indices`` on the
        host (the loader's copy) are read without waiting for the device; device ones are copied back first."""
        rows = indices.cpu().numpy()
        n, mine = self.meta["num_sequences"], self.rows
        bad = rows[(rows < mine.start) | (rows >= mine.stop)]
        if len(bad):
            raise IndexError(
                f"sequence index {int(bad[0])} is outside the store's {n} sequences: the training data is not the "
                "one the store was built on."
                if len(mine) == n or not 0 <= int(bad[0]) < n
                else f"sequence index {int(bad[0])} is outside this process's rows {mine.start}..{mine.stop - 1} of "
                "the store (opened for its rank's block): the data module's sampler gave another rank's sequence; use "
                "rank_shards: true on the data module, whose sampler keeps each rank on its block."
            )
        rows = rows - mine.start
        logprobs = torch.from_numpy(np.asarray(self.arrays["logprobs"][rows]))
        ids = torch.from_numpy(np.asarray(self.arrays["ids"][rows]))
        if device is not None and torch.device(device).type == "cuda":
            # page-locked: the copy to the GPU runs asynchronously (a pageable source is staged synchronously)
            logprobs, ids = logprobs.pin_memory(), ids.pin_memory()
        # host → device copies that do not wait for the device; widened there
        return logprobs.to(device, non_blocking=True).float(), ids.to(device, non_blocking=True).long()


def _open_arrays(path: Path, meta: dict[str, Any], mode: str) -> dict[str, np.ndarray]:
    return {
        name: open_lm_array(path / f"{name}.npy", shape, dtype, mode)
        for name, (shape, dtype) in expected_arrays(meta).items()
    }


def _write_meta(path: Path, meta: dict[str, Any]) -> None:
    tmp = path / f".meta.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, path / "meta.json")

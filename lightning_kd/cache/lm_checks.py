"""What an LM teacher store (:mod:`lightning_kd.cache.lm_store`) is checked for when it is opened: a readable
``meta.json`` with the fields a reader needs; every array present, whole, of the recorded shape and dtype; its
bytes equal to the sha256 recorded when the build finished. A store whose bytes differ from the record (or that
has none: built by an older version, or by hand) has its values scanned, a few MB at a time: log-probabilities
finite and ``<= 0`` (probabilities stored where log-probabilities belong are named as such), token ids in
``[0, vocab_size)``, every sequence written. Each refusal names the file, what is wrong, where, and the fix.
Pure numpy."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from lightning_kd.core.digest import file_sha256

REBUILD = "rebuild it: lightning-kd cache-lm --config <the recipe's configs> --overwrite"
ARRAYS = ("logprobs", "ids", "done")
_NEEDED = ("num_sequences", "seq_len", "k", "temperature", "vocab_size", "dtype")
_SCAN_VALUES = 1 << 22  # values per chunk of the scan: a few MB of memory, whatever the store's size
_LOGPROB_SLACK = 1e-3  # fp16 rounds log-probabilities near 0 up to +0.0005 at most


def read_lm_meta(path: Path) -> dict[str, Any]:
    """``path/meta.json`` as a dict with the fields a reader needs; ``ValueError`` naming the file otherwise."""
    file = path / "meta.json"
    damaged = f"it was edited or damaged; {REBUILD}"
    try:
        meta = json.loads(file.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"LM teacher store file {str(file)!r} is not valid JSON ({err}): {damaged}.") from err
    if not isinstance(meta, dict):
        raise ValueError(
            f"LM teacher store file {str(file)!r} holds a {type(meta).__name__}, not an object: {damaged}."
        )
    missing = [key for key in _NEEDED if key not in meta]
    if missing or meta.get("dtype") not in ("fp16", "fp32"):
        raise ValueError(
            f"LM teacher store file {str(file)!r} lacks {', '.join(missing) or 'a valid dtype (fp16 or fp32)'} "
            f"(fields {', '.join(_NEEDED)} were expected): {damaged}."
        )
    return meta


def expected_arrays(meta: dict[str, Any]) -> dict[str, tuple[tuple[int, ...], str]]:
    """Every array ``meta.json`` announces: shape and dtype."""
    shape = (int(meta["num_sequences"]), int(meta["seq_len"]), int(meta["k"]))
    value = "float16" if meta["dtype"] == "fp16" else "float32"
    return {"logprobs": (shape, value), "ids": (shape, "int32"), "done": (shape[:1], "bool")}


def open_lm_array(file: Path, shape: tuple[int, ...], dtype: str, mode: str) -> np.ndarray:
    """Memory-map ``file`` and check it holds ``shape`` of ``dtype``."""
    expected = f"shape {shape} of {dtype} (from meta.json)"
    if not file.is_file():
        raise FileNotFoundError(f"LM teacher store file {str(file)!r} is missing ({expected} was expected); {REBUILD}.")
    try:
        a = np.load(file, mmap_mode=mode)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(
            f"LM teacher store file {str(file)!r} is truncated or corrupted ({err or type(err).__name__}); "
            f"{expected} was expected; {REBUILD}."
        ) from err
    if a.shape != shape or str(a.dtype) != dtype:
        raise ValueError(
            f"LM teacher store file {str(file)!r} holds shape {a.shape} of {a.dtype}, but {expected} was expected: "
            f"it was replaced or belongs to another build; {REBUILD}."
        )
    return a


def changed_files(path: Path, meta: dict[str, Any]) -> list[str] | None:
    """The array files whose sha256 differs from the one recorded at build (``None``: nothing recorded)."""
    recorded = meta.get("sha256")
    if not isinstance(recorded, dict):
        return None
    return [name for name in ARRAYS if recorded.get(name) != file_sha256(path / f"{name}.npy")]


def refuse_bad_lm_values(path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Scan the store's values once, a few MB at a time (see the module docstring)."""
    done = np.asarray(arrays["done"])
    if not done.all():
        missing = np.flatnonzero(~done)
        raise ValueError(
            f"LM teacher store {str(path)!r}: {len(missing)} of {len(done)} sequences were never written (e.g. "
            f"{missing[:3].tolist()}) although meta.json says complete: it was damaged; {REBUILD}."
        )
    vocab = int(meta["vocab_size"])
    logprobs, ids = arrays["logprobs"], arrays["ids"]
    rows = max(1, _SCAN_VALUES // max(1, math.prod(logprobs.shape[1:])))
    problems: dict[str, list[int]] = {}  # what → [count, first sequence]
    in_unit_interval = True
    for start in range(0, len(logprobs), rows):
        lp = np.asarray(logprobs[start : start + rows], dtype=np.float32)
        ix = np.asarray(ids[start : start + rows])
        finite = np.isfinite(lp)
        in_unit_interval &= bool(((lp >= 0) & (lp <= 1) | ~finite).all())
        for what, bad in (
            ("NaN or inf log-probabilities", ~finite),
            ("log-probabilities above 0 (a log-probability is <= 0)", finite & (lp > _LOGPROB_SLACK)),
            (f"token ids outside 0..{vocab - 1}", (ix < 0) | (ix >= vocab)),
        ):
            per_row = bad.reshape(len(bad), -1).sum(axis=1)
            if per_row.any():
                entry = problems.setdefault(what, [0, start + int(np.argmax(per_row > 0))])
                entry[0] += int(per_row.sum())
    if problems:
        found = "; ".join(f"{n} {what} (first in sequence {first})" for what, (n, first) in problems.items())
        hint = (
            " The values all lie in [0, 1]: probabilities were stored where log-probabilities belong (log_softmax, "
            "not softmax)."
            if in_unit_interval and any("above 0" in w for w in problems)
            else ""
        )
        ids_bad = any("token ids" in w for w in problems)
        files = "/".join(["logprobs.npy"] * (len(problems) > ids_bad) + ["ids.npy"] * ids_bad)
        raise ValueError(
            f"LM teacher store {str(path)!r} ({files}) holds {found}.{hint} It was built from a diverged teacher, "
            f"written by another tool or damaged; {REBUILD}."
        )


def open_lm_rows(file: Path, shape: tuple[int, ...], dtype: str, rows: range) -> np.ndarray:
    """Memory-map only ``rows`` (along the first axis) of the ``.npy`` ``file``, after checking from its header
    that it holds ``shape`` of ``dtype``: a process that reads a block of a store maps that block alone."""
    expected = f"shape {shape} of {dtype} (from meta.json)"
    if not file.is_file():
        raise FileNotFoundError(f"LM teacher store file {str(file)!r} is missing ({expected} was expected); {REBUILD}.")
    with open(file, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            header = read(f)  # (shape, fortran_order, dtype)
        except (ValueError, OSError, EOFError) as err:
            raise ValueError(
                f"LM teacher store file {str(file)!r} is truncated or corrupted ({err}); {expected} was expected; "
                f"{REBUILD}."
            ) from err
        offset = f.tell()
    found, fortran, found_dtype = header
    if tuple(found) != shape or str(found_dtype) != dtype or fortran:
        raise ValueError(
            f"LM teacher store file {str(file)!r} holds shape {tuple(found)} of {found_dtype}, but {expected} was "
            f"expected: it was replaced or belongs to another build; {REBUILD}."
        )
    if not 0 <= rows.start <= rows.stop <= shape[0]:
        raise ValueError(f"rows {rows.start}..{rows.stop} are outside the store's {shape[0]} sequences.")
    row_bytes = math.prod(shape[1:]) * np.dtype(dtype).itemsize
    if file.stat().st_size < offset + shape[0] * row_bytes:
        raise ValueError(f"LM teacher store file {str(file)!r} is truncated ({expected} was expected); {REBUILD}.")
    view = (len(rows), *shape[1:])
    return np.memmap(file, dtype=dtype, mode="r", offset=offset + rows.start * row_bytes, shape=view)

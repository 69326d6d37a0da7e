"""What a teacher cache is checked for when it is opened or replaced: readable files of the recorded shape, no
NaN or infinity, no finished cache of something else overwritten unasked. Pure numpy + torch."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_VERSION = 1
BUILD_HINT = "build it with `lightning-kd cache --config <recipe.yaml>`"
REBUILD_HINT = "rebuild it with `lightning-kd cache --config <recipe.yaml> --overwrite`"
_SCAN_VALUES = 1 << 22  # values per chunk of the NaN/inf scan: a few MB of memory, whatever the cache's size
# names in error messages (other fields: their key)
FIELDS = {
    "augment": "augmentation on/off",
    "num_samples": "number of training samples",
    "num_classes": "number of classes",
    "dataset": "training data (fingerprint of its size and a few rows)",
    "teacher": "teacher weights (sha256 of its state_dict)",
}


def refuse_replacing(path: Path, key: Mapping[str, Any]) -> None:
    """Raise ``FileExistsError`` if ``path`` holds a finished cache built for another ``key``."""
    meta_file = path / "meta.json"
    if not meta_file.is_file():
        return  # nothing there, or an unfinished build: nothing finished is lost
    ask = "pass overwrite=True (`lightning-kd cache ... --overwrite`) to replace it, or build into another folder"
    try:
        old = json.loads(meta_file.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise FileExistsError(
            f"teacher cache folder {str(path)!r} holds a meta.json that is not valid JSON ({err}), so it cannot "
            f"tell whether it is the same cache; {ask}."
        ) from err
    old = old if isinstance(old, dict) else {}
    diffs = [
        f"{FIELDS.get(name, name)}: cache {old.get(name)!r}, new build {value!r}"
        for name, value in key.items()
        if name != "precision" and old.get(name) != value  # precision is informative, never checked
    ]
    if diffs:
        raise FileExistsError(
            f"teacher cache folder {str(path)!r} already holds a finished cache built for something else ("
            + "; ".join(diffs)
            + f"); {ask}."
        )


def read_meta(meta_file: Path) -> dict[str, Any]:
    """``meta.json`` as a dict with the fields a reader needs; ``ValueError`` naming the file otherwise."""
    damaged = f"it was edited or damaged; {REBUILD_HINT}"
    try:
        meta = json.loads(meta_file.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"teacher cache file {str(meta_file)!r} is not valid JSON ({err}): {damaged}.") from err
    if not isinstance(meta, dict):
        raise ValueError(
            f"teacher cache file {str(meta_file)!r} holds a {type(meta).__name__}, not a JSON object: {damaged}."
        )
    if meta.get("format") != FORMAT_VERSION:
        raise ValueError(
            f"teacher cache {str(meta_file.parent)!r} has format {meta.get('format')}, this version reads "
            f"{FORMAT_VERSION}; {REBUILD_HINT}."
        )
    needed = ["storage", "epochs", "num_samples", "num_classes"]
    if meta.get("storage") == "topk":
        needed.append("k")
    missing = [f for f in needed if f not in meta]
    if missing or meta["storage"] not in ("fp16", "fp32", "topk"):
        raise ValueError(
            f"teacher cache file {str(meta_file)!r} lacks {', '.join(missing) or 'a valid storage'} (fields "
            f"{', '.join(needed)} were expected): {damaged}."
        )
    return meta


def expected_shapes(meta: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """The arrays ``meta.json`` announces, with their shapes."""
    e, n = meta["epochs"], meta["num_samples"]
    if meta["storage"] == "topk":
        return {"topk_values": (e, n, meta["k"] + 1), "topk_indices": (e, n, meta["k"])}
    return {"logits": (e, n, meta["num_classes"])}


def open_array(file: Path, shape: tuple[int, ...], meta: Mapping[str, Any]) -> np.ndarray:
    """Memory-map ``file`` and check it holds the ``shape`` and dtype ``meta.json`` announces."""
    dtype = meta.get("dtype", {}).get(file.stem)
    expected = f"shape {shape}" + (f" of {dtype}" if dtype else "") + " (from meta.json)"
    if not file.is_file():
        raise FileNotFoundError(
            f"teacher cache file {str(file)!r} is missing ({expected} was expected); {REBUILD_HINT}."
        )
    try:
        a = np.load(file, mmap_mode="r")
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(
            f"teacher cache file {str(file)!r} is truncated or corrupted ({err or type(err).__name__}); {expected} "
            f"was expected; {REBUILD_HINT}."
        ) from err
    if a.shape != shape or (dtype and str(a.dtype) != dtype):
        raise ValueError(
            f"teacher cache file {str(file)!r} holds shape {a.shape} of {a.dtype}, but {expected} was expected: it "
            f"was replaced or belongs to another build; {REBUILD_HINT}."
        )
    return a


def refuse_bad_values(file: Path, a: np.ndarray, meta: Mapping[str, Any]) -> None:
    """Scan ``a`` once, a few MB at a time: logits must be finite, top-k classes in ``[0, num_classes)``."""
    is_index = np.issubdtype(a.dtype, np.integer)
    rows = max(1, _SCAN_VALUES // max(1, math.prod(a.shape[2:])))
    values, samples, first = 0, 0, None
    for e in range(a.shape[0]):
        for start in range(0, a.shape[1], rows):
            chunk = a[e, start : start + rows]
            bad = (chunk < 0) | (chunk >= meta["num_classes"]) if is_index else ~np.isfinite(chunk)
            per_sample = bad.reshape(len(chunk), -1).sum(axis=1)  # (rows,)
            if first is None and per_sample.any():
                first = (e, start + int(np.argmax(per_sample > 0)))
            values += int(per_sample.sum())
            samples += int(np.count_nonzero(per_sample))
    if values:
        what = f"top-k class(es) outside 0..{meta['num_classes'] - 1}" if is_index else "NaN or inf logit(s)"
        raise ValueError(
            f"teacher cache file {str(file)!r} holds {values} {what} in {samples} sample row(s) (the first: epoch "
            f"{first[0]}, sample {first[1]}): it was built from a diverged teacher or damaged; check the teacher "
            f"and {REBUILD_HINT}."
        )

"""sha256 of the files a run publishes, recorded when they are written and checked when they are read, so a file
changed or damaged since (a flipped bit, a copy cut short, an edit) is refused by name instead of loading.

- a published checkpoint ``model.ckpt`` gets a sidecar ``model.ckpt.sha256`` (``sha256sum`` format: check it by
  hand with ``sha256sum -c model.ckpt.sha256``); every read of a checkpoint with a sidecar compares them;
- a saved model folder gets ``SHA256SUMS`` (the same format, one line per file);
- offline teacher caches and LM stores record theirs in ``meta.json``.

:func:`weights_fingerprint` is the sha256 of what a model computes with (its ``state_dict``): caches and stores
record their teacher's. Hashing reads the whole file (about 1 GB/s on one core). A file without a record is read
as before.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import Tensor, nn

SIDECAR = ".sha256"
MANIFEST = "SHA256SUMS"


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of the bytes of ``path``, read 1 MB at a time."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def weights_fingerprint(model: nn.Module) -> str:
    """sha256 over the model's ``state_dict``: names, dtypes, shapes and bytes of every tensor, buffers
    (BatchNorm statistics) included, so any change to what the model computes changes it."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        if not isinstance(t, Tensor):  # extra state
            h.update(f"{name}|{t!r}|".encode())
            continue
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_sidecar(path: str | os.PathLike) -> Path:
    """Write ``<path>.sha256`` beside ``path`` (one ``sha256sum`` line); returns the sidecar's path."""
    path = Path(path)
    sidecar = path.with_name(path.name + SIDECAR)
    _write_atomic(sidecar, f"{file_sha256(path)}  {path.name}\n")
    return sidecar


def check_sidecar(path: str | os.PathLike, what: str) -> None:
    """When ``<path>.sha256`` exists, refuse ``path`` unless its bytes have that sha256."""
    path = Path(path)
    sidecar = path.with_name(path.name + SIDECAR)
    if not sidecar.is_file():
        return
    recorded = _read_sums(sidecar).get(path.name)
    if recorded is None:
        raise ValueError(
            f"{what} {str(path)!r}: its checksum file {str(sidecar)!r} does not name it (it names "
            f"{sorted(_read_sums(sidecar)) or 'nothing'}): the files were renamed or copied apart. Delete "
            f"{sidecar.name} to read {path.name} without a check, or put the pair back together."
        )
    actual = file_sha256(path)
    if actual != recorded:
        raise ValueError(
            f"{what} {str(path)!r} is not the file that was published: its sha256 is {actual[:12]}…, "
            f"{sidecar.name} recorded {recorded[:12]}… when it was written. It was changed or damaged since (a "
            f"copy cut short, a disk error, an edit). Re-copy it from where it was made, or train it again; if you "
            f"replaced it on purpose, delete {sidecar.name}."
        )


def write_manifest(folder: str | os.PathLike, files: Iterable[str | os.PathLike]) -> Path:
    """Write ``folder/SHA256SUMS`` for ``files`` (paths inside ``folder``)."""
    folder = Path(folder)
    lines = [f"{file_sha256(folder / f)}  {Path(f).as_posix()}\n" for f in sorted(map(str, files))]
    _write_atomic(folder / MANIFEST, "".join(lines))
    return folder / MANIFEST


def check_manifest(folder: str | os.PathLike, what: str) -> None:
    """When ``folder/SHA256SUMS`` exists, refuse the folder unless every file it names has its sha256."""
    folder = Path(folder)
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return
    missing, changed = [], []
    for name, recorded in _read_sums(manifest).items():
        file = folder / name
        if not file.is_file():
            missing.append(name)
        elif file_sha256(file) != recorded:
            changed.append(name)
    if missing or changed:
        parts = ([f"missing: {', '.join(missing)}"] if missing else []) + (
            [f"changed or damaged: {', '.join(changed)}"] if changed else []
        )
        raise ValueError(
            f"{what} {str(folder)!r} is not the folder that was saved ({'; '.join(parts)}; {MANIFEST} recorded "
            f"every file's sha256 when it was written). Re-copy the folder from where it was made, or save it "
            f"again; if you changed it on purpose, delete {MANIFEST}."
        )


def _read_sums(file: Path) -> dict[str, str]:
    sums = {}
    for line in file.read_text(errors="replace").splitlines():
        digest, _, name = line.strip().partition("  ")
        if len(digest) == 64 and name:
            sums[name.lstrip("*")] = digest.lower()
    return sums


def saved_folder(model: object) -> Path | None:
    """The local folder a ``transformers`` model (or the base of a ``peft`` one) was loaded from, if any."""
    get_base = getattr(model, "get_base_model", None)
    for candidate in (model, get_base() if callable(get_base) else None):
        config = getattr(candidate, "config", None)
        name = getattr(candidate, "name_or_path", None) or getattr(config, "_name_or_path", None)
        if isinstance(name, str) and name and os.path.isdir(name):
            return Path(name)
    return None


def check_model_folder(model: object, what: str) -> None:
    """:func:`check_manifest` of the folder ``model`` was loaded from (nothing for a model built in memory or
    downloaded, or a folder without ``SHA256SUMS``)."""
    folder = saved_folder(model)
    if folder is not None:
        check_manifest(folder, f"the {what}'s model folder")

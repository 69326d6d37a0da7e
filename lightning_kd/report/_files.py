"""File helpers shared by the report and the exports: never overwrite unasked, hash and size files."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path


def ensure_writable(paths: Iterable[str | os.PathLike], overwrite: bool) -> None:
    """Raise :class:`FileExistsError` for the first of ``paths`` that exists, unless ``overwrite``.

    Every target is checked before anything is written, so a refusal leaves no half-written set behind.
    """
    if overwrite:
        return
    for path in paths:
        if Path(path).exists():
            raise FileExistsError(
                f"{os.fspath(path)} already exists and is not overwritten: pass overwrite=True to replace it, "
                "or choose another folder."
            )


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_record(path: str | os.PathLike) -> dict[str, str | int]:
    """``file`` (name), ``path``, ``bytes`` and ``sha256`` of the file at ``path``."""
    return {
        "file": Path(path).name,
        "path": os.fspath(path),
        "bytes": os.path.getsize(path),
        "sha256": sha256_file(path),
    }

"""Plain-text corpora for language-model distillation: CPython's standard library (embedded default) or your files.

The default corpus needs no download: every CPython installation carries its standard library as ``.py``
source. :func:`stdlib_corpus` pins which of those files it takes, so a corpus is the same wherever the same
Python version is installed, and a different one is detected by its :attr:`TextCorpus.paths_sha256`.

Held-out data is split by file (:meth:`TextCorpus.split`): a file's side depends only on a hash of its relative
path, so no text of a validation file is ever seen in training, and adding a file does not move the others.
"""

from __future__ import annotations

import glob
import hashlib
import os
import platform
import sysconfig
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

STDLIB_EXCLUDED_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test"})
"""Directory names :func:`stdlib_corpus` never enters, at any depth: installed packages, bytecode, test packages."""


@dataclass(frozen=True)
class TextCorpus:
    """An ordered set of UTF-8 text files under one root, one document per file.

    Args:
        root: the directory the files are relative to.
        files: the files as POSIX paths relative to ``root``, sorted.
        label: what the corpus is (e.g. ``"CPython 3.11.7 stdlib"``); part of both hashes.
    """

    root: Path
    files: tuple[str, ...]
    label: str = "files"
    _texts: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)
    _undecodable: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if list(self.files) != sorted(set(self.files)):
            raise ValueError("TextCorpus.files must be sorted and unique: build it with from_files/from_directory.")

    @classmethod
    def from_files(cls, paths: Iterable[str | os.PathLike], label: str = "files") -> TextCorpus:
        """The given text files, relative to their deepest common directory."""
        paths = [Path(p).resolve() for p in paths]
        if not paths:
            raise ValueError("TextCorpus.from_files got no files: pass at least two text files.")
        for path in paths:
            if not path.is_file():
                raise FileNotFoundError(f"Text file {path} does not exist.")
        root = Path(os.path.commonpath([p.parent for p in paths]))
        return cls(root, tuple(sorted({p.relative_to(root).as_posix() for p in paths})), label)

    @classmethod
    def from_directory(cls, root: str | os.PathLike, pattern: str = "**/*.txt") -> TextCorpus:
        """The files under ``root`` matching the glob ``pattern`` (``**`` recurses)."""
        root = Path(root).resolve()
        if root.is_file():
            raise NotADirectoryError(
                f"text_dir={os.fspath(root)!r} is a file, not a folder: pass it as text_files: [{os.fspath(root)!r}] "
                "(with the other files), or give the folder that holds the text files."
            )
        if not root.is_dir():
            raise FileNotFoundError(f"Text directory {root} does not exist.")
        found = [Path(p) for p in glob.glob(pattern, root_dir=root, recursive=True)]
        files = sorted(p.as_posix() for p in found if (root / p).is_file())
        if not files:
            raise ValueError(f"No file in {root} matches pattern={pattern!r}: check the directory or the pattern.")
        return cls(root, tuple(files), f"{root.name}/{pattern}")

    def read(self, file: str) -> str:
        """The text of ``file`` (a member of :attr:`files`), decoded as UTF-8; bytes that are not UTF-8 are
        replaced by U+FFFD and counted per file (:attr:`undecodable`), for the data module to say so."""
        if file not in self._texts:
            raw = (self.root / file).read_bytes()
            try:
                self._texts[file] = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("utf-8", errors="replace")
                self._undecodable[file] = text.count("\ufffd") - raw.decode("utf-8", errors="ignore").count("\ufffd")
                self._texts[file] = text
        return self._texts[file]

    @property
    def undecodable(self) -> dict[str, int]:
        """``{file: replaced bytes}`` of the files read so far that held bytes that are not UTF-8."""
        return dict(self._undecodable)

    def decoding_report(self) -> str | None:
        """One sentence naming the files with bytes that are not UTF-8 and how many were replaced, or ``None``."""
        bad = self.undecodable
        if not bad:
            return None
        shown = ", ".join(f"{f} ({n})" for f, n in sorted(bad.items())[:5]) + (", …" if len(bad) > 5 else "")
        return (
            f"{len(bad)} file(s) under {self.root} hold bytes that are not UTF-8; {sum(bad.values())} were replaced by "
            f"U+FFFD: {shown}. Convert them to UTF-8 (iconv -f latin1 -t utf-8), or leave them out with pattern."
        )

    def texts(self) -> list[str]:
        """Every file's text, in the order of :attr:`files`."""
        return [self.read(f) for f in self.files]

    @property
    def num_chars(self) -> int:
        """Characters over all files (after decoding)."""
        return sum(len(t) for t in self.texts())

    @cached_property
    def paths_sha256(self) -> str:
        """sha256 of the label and the sorted relative paths: which files the corpus (and its split) holds."""
        return hashlib.sha256("\n".join((self.label, *self.files)).encode()).hexdigest()

    @cached_property
    def sha256(self) -> str:
        """sha256 of the label, paths and file contents: the key of anything derived from the text (caches)."""
        h = hashlib.sha256(self.label.encode())
        for file in self.files:
            h.update(b"\0" + file.encode() + b"\0" + hashlib.sha256(self.read(file).encode()).digest())
        return h.hexdigest()

    def subset(self, files: Iterable[str], label: str) -> TextCorpus:
        """The corpus of some of these files, sharing this one's root (and already read texts)."""
        sub = TextCorpus(self.root, tuple(sorted(files)), label)
        members = set(sub.files)
        sub._texts.update({f: t for f, t in self._texts.items() if f in members})
        sub._undecodable.update({f: n for f, n in self._undecodable.items() if f in members})
        return sub

    def split(self, val_fraction: float) -> tuple[TextCorpus, TextCorpus]:
        """``(train, val)`` by file: a file is held out when :func:`path_fraction` of its path < ``val_fraction``.

        Deterministic and independent of any seed. Each side gets at least one file: when no path falls under
        the fraction the lowest-hashing file is held out, and when all do the highest-hashing one is kept for
        training.
        """
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction={val_fraction} must be in (0, 1), e.g. 0.05 for 5% of the files.")
        if len(self.files) < 2:
            raise ValueError(
                f"{self.label} has {len(self.files)} file(s): a split by file needs at least two; add files."
            )
        by_hash = sorted(self.files, key=path_fraction)
        n_val = sum(path_fraction(f) < val_fraction for f in self.files)
        n_val = min(max(n_val, 1), len(by_hash) - 1)
        return self.subset(by_hash[n_val:], f"{self.label}:train"), self.subset(by_hash[:n_val], f"{self.label}:val")


def path_fraction(file: str) -> float:
    """A uniform number in ``[0, 1)`` from the sha256 of a relative path: the file's place in every split."""
    return int.from_bytes(hashlib.sha256(file.encode()).digest()[:8], "big") / 2**64


def stdlib_corpus() -> TextCorpus:
    """CPython's own standard-library sources: the embedded default corpus.

    The rule, pinned: every ``*.py`` file under ``sysconfig.get_paths()["stdlib"]``, recursively, without
    following symbolic links, except files under a directory named in :data:`STDLIB_EXCLUDED_DIRS` at any depth
    (``site-packages``, ``dist-packages``, ``__pycache__``, ``test``, ``tests``, ``idle_test`` — so the whole
    ``test/`` package and ``lib2to3/tests``, ``idlelib/idle_test``, ``tkinter/test``, ``unittest/test``,
    ``ctypes/test``, ``distutils/tests``) and files named ``test_*.py``. Kept: ``turtledemo``, build-generated
    modules (``_sysconfigdata_*.py``, ``config-*/python-config.py``). ``ensurepip/_bundled`` holds wheels only.
    On CPython 3.11.7 (Linux) this gives 734 files, 12,117,233 characters.

    The label names the interpreter and version, so both hashes differ between Python versions.
    """
    root = Path(sysconfig.get_paths()["stdlib"]).resolve()
    files = []
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = [d for d in subdirs if d not in STDLIB_EXCLUDED_DIRS]
        rel = Path(directory).relative_to(root)
        files += [(rel / n).as_posix() for n in names if n.endswith(".py") and not n.startswith("test_")]
    label = f"{platform.python_implementation()} {platform.python_version()} stdlib"
    return TextCorpus(root, tuple(sorted(files)), label)

"""The harness of the fault catalogue (``tools/reliability.py``): how an entry is declared, run and judged.

A fault is a function decorated with :func:`fault`. It gets a :class:`Case` (a fresh temporary folder, which is the
working directory while it runs), sets up its situation there — the user's files: checkpoints, data, caches, runs —
and returns a *trigger*, a function of no arguments that provokes the fault. :func:`run_fault` hashes every file
under the folder between setup and trigger and again afterwards: a file of the user's changed or removed (other
than those the fault declares ``may_change``, e.g. a model a healthy resumed run is asked to republish) is lost work.

Three kinds of entries:

- ``fault``: the library must refuse with a message (an exception, a CLI exit) or go on and *say* what it did
  (the trigger returns :class:`Said`, or ``None`` when nothing was said: a silent result).
- ``guard``: a hazard the library must defuse with no message needed (a killed run, a pipeline beside other
  runs); the trigger returns what it observed and raises :class:`CheckFailed` when the outcome is wrong.
- ``probe``: correct behaviour of a healthy run, observed the same way.

How a message is judged (explicit and mechanical, so anyone can recompute it):

- ``names_problem``: the message contains (case-insensitively) at least one of the fault's tokens — the bad value,
  the option or the file, declared with ``bad=`` or registered at setup with :meth:`Case.bad`.
- ``names_fix``: the message gives a remedy — an imperative verb of :data:`FIX_VERBS` (a whole word: not ``train``
  of ``train-labels``) opening a sentence or clause (at the start, after ``. ! ?`` and a space, after ``; : (``,
  after ``,`` or after ``or``/``and``/``then``/``instead``), or a suggested replacement of :data:`FIX_PHRASES`
  (``did you mean``, ``closest``, ``; e.g.``/``, e.g.``, ``typical values``).
  "x must be in [0, 1], got 2" states the rule but not the remedy, and does not count.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

FIX_VERBS = (
    "use|set|pass|give|lower|raise|reduce|rebuild|build|re-?download|download|re-?copy|copy|re-?save|save|"
    "re-?export|re-?extract|extract|check|try|leave|start|convert|fix|point|run|make|keep|load|resume|clip|train|drop|"
    "restore|install|add|remove|delete|rename|choose|pick|import|call|retry|specify|provide|put|replace|write|create|"
    "select|move|unset|increase|split|list|apt|git"
)
FIX_PHRASES = (r"did you mean", r"\bclosest\b", r"[;:,]\s*e\.g\.", r"typical values")
_OPENER = r"(?:^|[.!?]\s+|[;:(]\s*|,\s+|\b(?:or|and|then|instead)\s+)"  # a sentence or clause starts
_FIX = re.compile(rf"{_OPENER}(?:{FIX_VERBS})\b(?![-.])|" + "|".join(FIX_PHRASES), re.IGNORECASE | re.MULTILINE)


def names_fix(message: str) -> bool:
    """Whether ``message`` gives a remedy (see the module docstring)."""
    return bool(_FIX.search(message))


def names_problem(message: str, tokens: list[str]) -> bool:
    """Whether ``message`` contains one of ``tokens`` (case-insensitive)."""
    low = message.lower()
    return any(t and t.lower() in low for t in tokens)


class CheckFailed(Exception):
    """A guard or probe observed a wrong outcome (or a fault's own check failed): never the library's message."""


class Skip(Exception):
    """The fault cannot be set up here (e.g. no Fashion-MNIST files)."""


class CLIExit(Exception):
    """``lightning-kd`` exited with a non-zero status; ``message`` is what it printed as the error."""

    def __init__(self, code: Any, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Said:
    """What a run that went on said about the fault (e.g. a resumed run naming the values it changes)."""

    message: str


@dataclass(frozen=True)
class Fault:
    """One catalogue entry. ``title`` is the docstring's first line; ``expect`` a regex searched (``re.S``) in the
    message (faults) or the observation (guards, probes); ``gap`` a known shortcoming, said in the report;
    ``known_bad``: today the library fails the entry (says nothing, or the guard does not hold), so its test is an
    expected failure until it is fixed."""

    id: str
    title: str
    category: str
    kind: str
    expect: str
    bad: tuple[str, ...]
    slow: bool
    gap: str | None
    known_bad: bool
    may_change: tuple[str, ...]
    setup: Callable[[Case], Callable[[], Any]]


CATALOGUE: list[Fault] = []


def fault(
    category: str,
    expect: str,
    *,
    kind: str = "fault",
    bad: tuple[str, ...] = (),
    slow: bool = False,
    gap: str | None = None,
    known_bad: bool = False,
    may_change: tuple[str, ...] = (),
) -> Callable[[Callable[[Case], Callable[[], Any]]], Callable[[Case], Callable[[], Any]]]:
    """Register the decorated setup function in :data:`CATALOGUE`."""
    if kind not in ("fault", "guard", "probe"):
        raise ValueError(f"kind must be fault, guard or probe, got {kind!r}")

    def register(fn: Callable[[Case], Callable[[], Any]]) -> Callable[[Case], Callable[[], Any]]:
        title = (fn.__doc__ or fn.__name__).strip().splitlines()[0]
        CATALOGUE.append(Fault(fn.__name__, title, category, kind, expect, bad, slow, gap, known_bad, may_change, fn))
        return fn

    return register


def _show_warning(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


@contextlib.contextmanager
def captured() -> Iterator[io.StringIO]:
    """Everything printed inside: stdout, stderr, warnings, and Lightning's log handlers (bound to the real stderr
    when Lightning was imported). Warning filters and logger filters set inside are put back afterwards."""
    buf = io.StringIO()
    handlers = [
        h
        for name in ("lightning", "lightning.pytorch", "lightning.fabric", "lightning_kd")
        for h in logging.getLogger(name).handlers
        if type(h) is logging.StreamHandler
    ]
    streams = [h.stream for h in handlers]
    loggers = [
        logging.getLogger(n) for n in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")
    ]
    filters = [list(lg.filters) for lg in loggers]
    for h in handlers:
        h.setStream(buf)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            warnings.showwarning = _show_warning  # printed, as a user sees it, even under pytest's recorder
            yield buf
    finally:
        for h, s in zip(handlers, streams):
            h.setStream(s)
        for lg, f in zip(loggers, filters):
            lg.filters[:] = f


def _error_text(output: str) -> str:
    """The error a ``lightning-kd`` run printed: its ``lightning-kd: error:`` message, or its Ctrl-C message (two
    lines), else its last line."""
    m = re.search(r"lightning-kd: error: (.*?)(?:\n\(set LIGHTNING_KD_DEBUG=1[^\n]*\))?\s*$", output, re.S)
    if m:
        return m.group(1).strip()
    m = re.search(r"lightning-kd: (interrupted \(Ctrl-C\).*)$", output, re.S)
    if m:
        return m.group(1).strip()
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


class Case:
    """The situation of one fault: a fresh folder (the working directory), the tokens that name the problem, and
    helpers to run the CLI in-process and to set environment variables or attributes until the fault is done."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tokens: list[str] = []
        self.escaped = False  # a CLI failure that escaped lightning-kd's short error form (a full traceback)
        self.stack = contextlib.ExitStack()

    def bad(self, *tokens: object) -> None:
        """Register strings whose presence in the message means it names the problem."""
        self.tokens += [str(t) for t in tokens]

    def cli(self, *args: str) -> str:
        """``lightning-kd *args`` in this process; returns what it printed, raises :class:`CLIExit` on a non-zero
        exit. An exception escaping ``main`` (what a shell shows as a traceback) is re-raised and marked."""
        from lightning_kd.apps.cli import main

        argv = sys.argv
        sys.argv = ["lightning-kd"]  # the program's name in argparse's messages, as the console script's
        with captured() as out:
            try:
                main(list(args))
            except SystemExit as exit_:
                if exit_.code not in (0, None):  # a string code is the message a tool exits with
                    said = exit_.code if isinstance(exit_.code, str) else _error_text(out.getvalue())
                    raise CLIExit(exit_.code, said) from None
            except Exception:
                self.escaped = True
                raise
            finally:
                sys.argv = argv
        if "Traceback (most recent call last)" in out.getvalue():
            self.escaped = True
        return out.getvalue()

    @staticmethod
    def said(output: str, pattern: str) -> Said | None:
        """:class:`Said` with the lines of ``output`` matching ``pattern``, or ``None`` (nothing was said)."""
        lines = [ln.strip() for ln in output.splitlines() if re.search(pattern, ln)]
        return Said("\n".join(lines)) if lines else None

    def setenv(self, name: str, value: str | None) -> None:
        old = os.environ.get(name)
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
        self.stack.callback(
            lambda: os.environ.__setitem__(name, old) if old is not None else os.environ.pop(name, None)
        )

    def setattr(self, obj: Any, name: str, value: Any) -> None:
        old = getattr(obj, name)
        setattr(obj, name, value)
        self.stack.callback(setattr, obj, name, old)

    @staticmethod
    def check(condition: Any, what: str) -> None:
        if not condition:
            raise CheckFailed(what)


def digest(path: Path) -> str:
    """sha256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def snapshot(root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``root`` (symlinked files by their target's bytes)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = digest(p)
    return out


@dataclass
class Record:
    """What happened when a fault ran, and how it is judged."""

    fault: Fault
    outcome: str  # error | exit | said | silent | ok | failed | skipped | broken (the harness itself failed)
    error_type: str = ""
    message: str = ""
    escaped: bool = False
    tokens: list[str] = field(default_factory=list)
    watched: int = 0  # user files that existed before the trigger
    lost: list[str] = field(default_factory=list)  # of those, changed or removed
    seconds: float = 0.0

    @property
    def names_problem(self) -> bool | None:
        return names_problem(self.message, self.tokens) if self.fault.kind == "fault" else None

    @property
    def names_fix(self) -> bool | None:
        return names_fix(self.message) if self.fault.kind == "fault" else None

    @property
    def intact(self) -> bool | None:
        return None if self.watched == 0 else not self.lost

    @property
    def good(self) -> bool:
        """The outcome wanted: a message (or a good observation) matching ``expect``, and no lost work."""
        wanted = ("error", "exit", "said") if self.fault.kind == "fault" else ("ok",)
        return self.outcome in wanted and bool(re.search(self.fault.expect, self.message, re.S)) and not self.lost

    @property
    def as_catalogued(self) -> bool:
        """The outcome the catalogue records for today: :attr:`good`, or silence (a failed guard) for a ``known_bad``
        entry."""
        return self.outcome in ("silent", "failed") if self.fault.known_bad else self.good


def run_fault(f: Fault, keep: bool = False) -> Record:
    """Set up ``f`` in a fresh temporary folder (the working directory meanwhile), trigger it, judge it."""
    root = Path(tempfile.mkdtemp(prefix=f"kd-fault-{f.id}-"))
    case = Case(root)
    case.bad(*f.bad)
    record = Record(f, "broken")
    cwd = os.getcwd()
    start = time.perf_counter()
    os.chdir(root)
    try:
        with case.stack:
            try:
                with captured():
                    trigger = f.setup(case)
            except Skip as err:
                record.outcome, record.message = "skipped", str(err)
                return record
            before = snapshot(root)
            try:
                with captured():
                    value = trigger()
            except (CheckFailed, Skip) as err:
                record.outcome = "skipped" if isinstance(err, Skip) else "failed"
                record.message = str(err)
            except CLIExit as err:
                record.outcome, record.message = "exit", err.message
                head = re.match(r"(\w+(?:Error|Exception|Interrupt|Exit)): ", err.message)
                record.error_type = f"exit {err.code}" + (f": {head.group(1)}" if head else "")
            except (Exception, SystemExit) as err:  # noqa: BLE001 - every failure of the library is an outcome
                record.outcome, record.error_type, record.message = "error", type(err).__name__, str(err)
            else:
                if f.kind == "fault":
                    record.outcome = "said" if isinstance(value, Said) else "silent"
                    record.message = value.message if isinstance(value, Said) else ""
                else:
                    record.outcome, record.message = "ok", str(value)
            after = snapshot(root)
            kept = [p for p in before if not any(fnmatch(p, pat) for pat in f.may_change)]
            record.watched = len(kept)
            record.lost = [p for p in kept if after.get(p) != before[p]]
    except Exception as err:  # noqa: BLE001 - the setup itself failed: reported, never hidden
        record.outcome, record.message = "broken", f"{type(err).__name__}: {err}"
    finally:
        os.chdir(cwd)
        record.escaped = case.escaped
        record.tokens = [t.replace(str(root) + os.sep, "") for t in case.tokens] + case.tokens
        record.message = record.message.replace(str(root.resolve()), "<tmp>").replace(str(root), "<tmp>")
        record.seconds = time.perf_counter() - start
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
        sys.stdout.flush()
    return record

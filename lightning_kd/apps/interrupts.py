"""Ctrl-C of any ``lightning-kd`` command: two lines and exit status 130 (128 + SIGINT), as a shell reports it, never
a traceback; a fit stopped by it says where its state was saved and how to resume (what the run's
:class:`~lightning_kd.callbacks.RunCheckpoint` wrote)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any


def interrupted_fit() -> tuple[str, str | None] | None:
    """``(signal, where its state was saved)`` when the last fit in this process was stopped by Ctrl-C (Lightning
    exits 1 then, without saying so); ``None`` otherwise."""
    from lightning_kd.callbacks.run_checkpoint import take_interrupt

    stop = take_interrupt()
    return stop if stop is not None and stop[0] == "SIGINT" else None


def exit_interrupted(where: str | None = None) -> None:
    """Ctrl-C: two lines, exit status 130 (128 + SIGINT), as a shell reports it; no traceback. ``where``: the
    stopped fit's step, the checkpoint its state went to and how to resume."""
    if where:
        first, _, resume = where.partition(": resume")
        lines = [f"lightning-kd: interrupted (Ctrl-C) {first}.", f"Resume{resume}." if resume else ""]
    else:
        lines = [
            "lightning-kd: interrupted (Ctrl-C). What a run had finished is kept.",
            "A fit saves its state in its last.ckpt: resume with the same command and --ckpt_path <that file>.",
        ]
    print("\n".join(line for line in lines if line), file=sys.stderr)
    raise SystemExit(130)


def short_interrupts(main: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a console script's ``main`` so Ctrl-C ends it in two lines with exit status 130 (Lightning turns Ctrl-C
    in a fit into ``sys.exit(1)``: that one too)."""

    @functools.wraps(main)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return main(*args, **kwargs)
        except KeyboardInterrupt:
            stop = interrupted_fit()
            exit_interrupted(stop[1] if stop else None)
        except SystemExit as exit_:
            stop = interrupted_fit() if exit_.code == 1 else None
            if stop is not None:
                exit_interrupted(stop[1])
            raise

    return wrapped

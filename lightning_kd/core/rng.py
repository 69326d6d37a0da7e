"""The random generators a training step draws from, as plain data a checkpoint can hold and give back.

Dropout and the random-crop augmentation (``augment_seed`` unset) draw from torch's global generators; a user's
code may draw from numpy's or Python's. A run resumed from a checkpoint continues exactly only if those streams
are where they were (:class:`~lightning_kd.modules.common.BaseModule` saves and restores them). Pure torch.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch import Tensor


def torch_rng_state() -> dict[str, Any]:
    """torch's CPU generator and, when CUDA is initialised, every device's: cheap (host copies, no device sync)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def rng_state(torch_state: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every global generator's state as tensors, numbers and lists (what ``torch.load(weights_only=True)`` reads):
    torch's (``torch_state`` if given: an earlier snapshot), numpy's legacy one, Python's ``random``."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        **(torch_state if torch_state is not None else torch_rng_state()),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }  # fmt: skip


def set_rng_state(state: dict[str, Any]) -> None:
    """Put every generator back where :func:`rng_state` found it (the CUDA ones when both sides have them)."""
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    numpy = state.get("numpy")
    if numpy:
        keys = numpy["keys"].numpy() if isinstance(numpy["keys"], Tensor) else np.asarray(numpy["keys"])
        np.random.set_state((numpy["kind"], keys.astype(np.uint32), numpy["pos"], numpy["has_gauss"], numpy["gauss"]))
    python = state.get("python")
    if python:
        random.setstate((python["version"], tuple(python["internal"]), python["gauss_next"]))

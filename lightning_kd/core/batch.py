"""One batch protocol: every step unpacks its batch once into ``Batch(inputs, targets, index)``. Pure torch.

The data modules of this package yield ``(inputs, targets)`` or, with ``with_indices``, ``(inputs, targets,
index)`` — the sample indices a CRD memory bank or an offline teacher cache needs. Anything else (a dict
from a HuggingFace dataset, say) is handled by overriding one method, ``unpack_batch``, on the module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor

_INPUT_KEYS = ("input", "inputs", "x", "pixel_values")
_TARGET_KEYS = ("target", "targets", "label", "labels", "y")


class Batch(NamedTuple):
    """A training/evaluation batch, unpacked.

    Attributes:
        inputs: what the models take (a tensor, or a dict of tensors for a HuggingFace model).
        targets: class indices ``(N,)`` (or token labels ``(N, L)``); ``None`` for bare inputs (predict).
        index: dataset indices of the samples ``(N,)``, when the data module sends them.
        extra: anything else a batch carries that a module reads (a causal LM's ``token_bytes``, a cross-tokenizer
            teacher's ``teacher_input_ids`` and ``align``), by name.
    """

    inputs: Any
    targets: Tensor | None = None
    index: Tensor | None = None
    extra: dict[str, Tensor] | None = None


def inputs_device(inputs: Any) -> torch.device | None:
    """Where ``inputs`` (a tensor, or a dict/sequence of tensors) lie; ``None`` when they hold no tensor."""
    if isinstance(inputs, Tensor):
        return inputs.device
    values = inputs.values() if isinstance(inputs, Mapping) else inputs if isinstance(inputs, (list, tuple)) else ()
    return next((v.device for v in values if isinstance(v, Tensor)), None)


def _first(batch: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    return next((batch[k] for k in keys if k in batch), None)


def unpack_batch(batch: Any) -> Batch:
    """Unpack the batch layouts of this package's data modules.

    - ``(inputs, targets)`` or ``(inputs, targets, index)`` (tuples or lists);
    - a dict with an input key (``input``/``inputs``/``x``/``pixel_values``), a target key
      (``target``/``targets``/``label``/``labels``/``y``) and optionally ``index``;
    - a bare tensor: inputs only (what ``predict`` gets from an unlabelled loader).

    Raises:
        ValueError: a layout it cannot read; the message says which method to override.

    Example:
        >>> import torch
        >>> unpack_batch((torch.zeros(2, 3), torch.tensor([0, 1]))).targets
        tensor([0, 1])
    """
    if isinstance(batch, Batch):
        return batch
    if isinstance(batch, (tuple, list)) and len(batch) in (2, 3):  # the common case first: this runs every step
        return Batch(*batch)
    if isinstance(batch, Tensor):
        return Batch(batch)
    if isinstance(batch, Mapping):
        inputs = _first(batch, _INPUT_KEYS)
        if inputs is None:
            raise ValueError(
                f"cannot find the inputs in a dict batch with keys {sorted(batch)}; expected one of {_INPUT_KEYS}. "
                "Override unpack_batch(batch) on your module to return Batch(inputs, targets, index)."
            )
        return Batch(inputs, _first(batch, _TARGET_KEYS), batch.get("index"))
    what = f"a {type(batch).__name__} of length {len(batch)}" if isinstance(batch, (tuple, list)) else type(batch)
    raise ValueError(
        f"cannot unpack a batch that is {what}; expected (inputs, targets), (inputs, targets, index), a dict or a "
        "tensor. Override unpack_batch(batch) on your module to return Batch(inputs, targets, index)."
    )

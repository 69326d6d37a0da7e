"""The training batch as the loader gave it, on the host, beside the copy Lightning moved to the accelerator.

Reading a device tensor's values on the host (``.cpu()``, ``.item()``, ``bool()``, a boolean-mask index whose
result size depends on the values) waits for every kernel queued before it: one such read per step idles a GPU
between steps. Some steps need values on the host — the sample indices an offline teacher's memory-mapped store
is read with, the positions that take part in a hidden-state loss, whether the prompts of a batch are padded. The
loader made them on the host already: :class:`HostBatch` keeps the batch before Lightning moves it
(``on_before_batch_transfer``) and pairs each of its tensors with the moved one as soon as the move is done
(``on_after_batch_transfer``, before anything changes the batch); :meth:`HostBatch.host_copy` hands back the host
copy of a moved tensor. Nothing is copied: the loader's tensors are kept for one step.

A tensor with no host copy — built by the step (generated sequences), replaced after the move (an augmentation's
images), or loaded by a data module without this mixin — gives ``None``, and the caller reads the device tensor:
correct, with the wait. A subclass that overrides either hook calls ``super()`` first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor


class HostBatch:
    """Mixin of a LightningDataModule: see the module docstring. Training batches only."""

    _host_batch: Any = None
    _host_tensors: dict[int, tuple[Tensor, Tensor]] | None = None

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        trainer = getattr(self, "trainer", None)
        training = trainer is not None and trainer.training and not trainer.sanity_checking
        self._host_batch, self._host_tensors = (batch if training else None), None
        return super().on_before_batch_transfer(batch, dataloader_idx)  # type: ignore[misc]

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self._host_batch is not None:
            pairs: dict[int, tuple[Tensor, Tensor]] = {}
            _pair(self._host_batch, batch, pairs)
            self._host_batch, self._host_tensors = None, pairs
        return super().on_after_batch_transfer(batch, dataloader_idx)  # type: ignore[misc]

    def host_copy(self, tensor: Tensor | None) -> Tensor | None:
        """The loader's host copy of ``tensor``, a tensor of the current training batch as Lightning moved it;
        ``None`` when it has none."""
        if tensor is None or not self._host_tensors:
            return None
        pair = self._host_tensors.get(id(tensor))
        return pair[1] if pair is not None and pair[0] is tensor else None


def _pair(host: Any, moved: Any, out: dict[int, tuple[Tensor, Tensor]]) -> None:
    """Tensors of ``moved`` by identity → (the moved tensor, kept alive so its id stays its own; the one at the
    same place in ``host``)."""
    if isinstance(moved, Tensor):
        if isinstance(host, Tensor) and host.shape == moved.shape and host.device.type == "cpu":
            out[id(moved)] = (moved, host)
    elif isinstance(moved, Mapping) and isinstance(host, Mapping):
        for key, value in moved.items():
            if key in host:
                _pair(host[key], value, out)
    elif isinstance(moved, (list, tuple)) and isinstance(host, (list, tuple)) and len(host) == len(moved):
        for h, m in zip(host, moved):
            _pair(h, m, out)


__all__ = ["HostBatch"]

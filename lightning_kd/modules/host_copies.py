"""Host copies of the training batch's tensors, for the reads a step needs on the host (no device wait).

The data modules of this package keep them (:mod:`lightning_kd.data.host_batch`); :class:`HostCopies` asks the
run's data module. Without one (plain dataloaders, a data module of your own without ``host_copy``) every answer
is ``None`` and the step reads the device tensor: correct, with the wait.
"""

from __future__ import annotations

from torch import Tensor


class HostCopies:
    """Mixin of a LightningModule: :meth:`host_copy`."""

    def host_copy(self, tensor: Tensor | None) -> Tensor | None:
        """The loader's host copy of ``tensor`` (a tensor of this training step's batch as Lightning moved it), or
        ``None``."""
        trainer = getattr(self, "_trainer", None)
        find = getattr(getattr(trainer, "datamodule", None), "host_copy", None)
        return find(tensor) if callable(find) and tensor is not None else None


__all__ = ["HostCopies"]

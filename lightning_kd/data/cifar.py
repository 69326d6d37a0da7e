"""CIFAR-10 / CIFAR-100 (Krizhevsky, 2009) through torchvision, held in memory like the other modules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lightning_kd.data.base import InMemoryDataModule


class CIFAR10DataModule(InMemoryDataModule):
    """CIFAR-10, 50k/10k 32×32 RGB, standard augmentation (4-pixel-padded random crop + flip).

    Args:
        data_dir: torchvision root (``cifar-10-batches-py`` inside it).
        batch_size: samples per batch.
        download: let torchvision download the archive when absent (needs a network).
        num_workers: DataLoader workers.
        augment: random crop + flip on training batches.
        with_indices: training batches also carry sample indices (for CRD).
        augment_seed: replayable augmentation: each sample's crop and flip derive from ``(augment_seed,
            epoch, index)`` (needs ``with_indices``), as an offline teacher cache requires. ``None``: random.
        resident: keep the data on the accelerator during fit (one on-device gather per batch, no per-step
            host copy); needs ``num_workers=0``.

    The test set doubles as validation set, as in the KD papers' CIFAR protocol (CRD, arXiv:1910.10699).
    """

    class_names: tuple[str, ...] | None = (
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
    )  # fmt: skip

    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 64,
        download: bool = False,
        num_workers: int = 0,
        augment: bool = True,
        with_indices: bool = False,
        augment_seed: int | None = None,
        resident: bool = False,
    ) -> None:
        super().__init__(
            batch_size,
            num_workers,
            augment,
            crop_padding=4,
            flip=True,
            with_indices=with_indices,
            augment_seed=augment_seed,
            resident=resident,
        )
        self.data_dir, self.download = data_dir, download

    def _torchvision_class(self) -> type:
        from torchvision.datasets import CIFAR10

        return CIFAR10

    def _dataset(self, train: bool) -> Any:
        return self._torchvision_class()(self.data_dir, train=train, download=self.download)

    def load_splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        try:
            train, test = self._dataset(True), self._dataset(False)
        except RuntimeError as err:
            raise FileNotFoundError(f"{type(self).__name__}: {self._diagnose(err)}") from err
        out = {}
        for name, ds in (("train", train), ("test", test)):
            images = torch.as_tensor(ds.data).permute(0, 3, 1, 2).contiguous()  # (N, 3, 32, 32) uint8
            out[name] = (images, torch.as_tensor(ds.targets, dtype=torch.int64))
        out["val"] = out["test"]
        return out

    def _diagnose(self, err: Exception) -> str:
        """Why torchvision refused ``data_dir``, and what to do: which folder or file is missing or corrupted."""
        from torchvision.datasets.utils import check_integrity

        cls = self._torchvision_class()
        root = Path(self.data_dir).expanduser()
        folder, archive = root / cls.base_folder, root / cls.filename
        fetch = "pass download=True (needs a network)"
        if root.name == cls.base_folder:
            return (
                f"data_dir {str(root)!r} is the extracted {cls.base_folder} folder itself; set data_dir to the "
                f"folder that holds it ({str(root.parent)!r})."
            )
        if not folder.is_dir():
            if archive.is_file():
                return (
                    f"{str(folder)!r} does not exist, but {str(archive)!r} does; extract it there "
                    f"(`tar xzf {archive} -C {root}`) or pass download=True, which extracts a good archive "
                    "without downloading."
                )
            return (
                f"{str(folder)!r} does not exist (data_dir {str(root)!r} should hold the extracted {cls.base_folder} "
                f"folder); {fetch} or point data_dir at the folder that holds an extracted copy."
            )
        expected = [*cls.train_list, *cls.test_list, [cls.meta["filename"], cls.meta["md5"]]]
        missing = [name for name, _ in expected if not (folder / name).is_file()]
        corrupted = [name for name, md5 in expected if name not in missing and not check_integrity(folder / name, md5)]
        problems = []
        if missing:
            problems.append(f"missing {', '.join(missing)}")
        if corrupted:
            problems.append(f"corrupted (md5 mismatch) {', '.join(corrupted)}")
        return (
            f"{str(folder)!r} is incomplete: {'; '.join(problems) or f'unreadable ({err})'}; re-extract "
            f"{cls.filename} there, or {fetch}: it fetches and re-extracts the archive."
        )


class CIFAR100DataModule(CIFAR10DataModule):
    """CIFAR-100: 100 classes, same protocol as :class:`CIFAR10DataModule`."""

    class_names = None  # not CIFAR-10's: a report numbers the 100 classes
    mean = (0.5071, 0.4865, 0.4409)
    std = (0.2673, 0.2564, 0.2762)

    def _torchvision_class(self) -> type:
        from torchvision.datasets import CIFAR100

        return CIFAR100

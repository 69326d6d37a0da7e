"""Fashion-MNIST (Xiao et al., 2017, arXiv:1708.07747) from its four IDX files, found without a network."""

from __future__ import annotations

import os
from pathlib import Path

from torch import Tensor

from lightning_kd.data.base import InMemoryDataModule
from lightning_kd.data.idx import read_idx

ENV_VAR = "LIGHTNING_KD_FASHION_MNIST"
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist package
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _find(folder: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        for sub in (folder, folder / "FashionMNIST" / "raw"):  # torchvision's download layout too
            if (sub / name).is_file():
                return sub / name
    return None


class FashionMNISTDataModule(InMemoryDataModule):
    """60,000 train / 10,000 test 28×28 grey images of clothes, 10 classes, as ``(N, 1, 28, 28)``.

    The four IDX files are looked for, in order, in ``data_dir``, in ``$LIGHTNING_KD_FASHION_MNIST``, and in
    ``/usr/share/datasets/fashion-mnist`` (``apt install dataset-fashion-mnist``). With ``download=True``
    and none found, torchvision downloads them into ``data_dir``. Otherwise setup fails listing every
    place it looked.

    Augmentation (on by default): random crop with 2-pixel zero padding + horizontal flip, per sample, on
    the batch's device, as in BENCHMARKS.md. Normalisation: mean 0.2860, std 0.3530.

    Args:
        data_dir: folder with the IDX files (``.gz`` or not); also where a download goes.
        batch_size: samples per batch.
        val_size: samples held out of the 60k training set for validation; ``0`` validates on the test set
            (the reference experiment trains on all 60k and selects nothing on validation).
        download: let torchvision download the files when they are not found.
        num_workers: DataLoader workers.
        with_indices: training batches also carry sample indices (for CRD).
        augment: random crop + flip on training batches.
        seed: seed of the train/val split when ``val_size > 0``.
        augment_seed: replayable augmentation: each sample's crop and flip derive from ``(augment_seed,
            epoch, index)`` (needs ``with_indices``), as an offline teacher cache requires. ``None``: random.
        resident: keep the data on the accelerator during fit (one on-device gather per batch, no per-step
            host copy); needs ``num_workers=0``.
    """

    mean = 0.2860
    std = 0.3530

    def __init__(
        self,
        data_dir: str | None = None,
        batch_size: int = 256,
        val_size: int = 0,
        download: bool = False,
        num_workers: int = 0,
        augment: bool = True,
        seed: int = 0,
        with_indices: bool = False,
        augment_seed: int | None = None,
        resident: bool = False,
    ) -> None:
        super().__init__(
            batch_size,
            num_workers,
            augment,
            crop_padding=2,
            flip=True,
            with_indices=with_indices,
            augment_seed=augment_seed,
            resident=resident,
        )
        if not 0 <= val_size < 60000:
            raise ValueError(f"val_size must be in [0, 60000), got {val_size}.")
        self.data_dir, self.val_size, self.download, self.seed = data_dir, val_size, download, seed

    def candidate_dirs(self) -> list[Path]:
        """Folders searched, in order."""
        dirs = [self.data_dir, os.environ.get(ENV_VAR), DEBIAN_DIR]
        return [Path(d).expanduser() for d in dirs if d]

    def locate(self) -> Path:
        """The first folder holding all four files (downloading there if allowed)."""
        for folder in self.candidate_dirs():
            if all(_find(folder, stem) for pair in FILES.values() for stem in pair):
                return folder
        if self.download:
            from torchvision.datasets import FashionMNIST

            root = Path(self.data_dir or "data").expanduser()
            FashionMNIST(str(root), train=True, download=True)
            FashionMNIST(str(root), train=False, download=True)
            return root
        looked = "\n  ".join(str(d) for d in self.candidate_dirs())
        raise FileNotFoundError(
            "Fashion-MNIST files (train-images-idx3-ubyte[.gz] and the other three) not found. Looked in:\n  "
            f"{looked}\nSet data_dir, or ${ENV_VAR}, or `apt install dataset-fashion-mnist`, "
            "or pass download=True."
        )

    def load_splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        import torch

        folder = self.locate()
        out = {}
        for split, (img, lab) in FILES.items():
            images, labels = read_idx(_find(folder, img)), read_idx(_find(folder, lab))
            out[split] = (images.unsqueeze(1), labels.long())  # (N, 1, 28, 28) uint8, (N,)
        if self.val_size:
            perm = torch.randperm(60000, generator=torch.Generator().manual_seed(self.seed))
            images, labels = out["train"]
            out["val"] = (images[perm[: self.val_size]], labels[perm[: self.val_size]])
            out["train"] = (images[perm[self.val_size :]], labels[perm[self.val_size :]])
        else:
            out["val"] = out["test"]
        return out

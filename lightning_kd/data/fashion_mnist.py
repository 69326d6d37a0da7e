"""Fashion-MNIST (Xiao et al., 2017, arXiv:1708.07747) from its four IDX files, found without a network."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

from lightning_kd.data.base import InMemoryDataModule
from lightning_kd.data.idx_files import read_idx

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
    place it looked. A ``data_dir`` holding some of the files but not all is refused rather than passed over
    for another folder.

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
        train_size: train on a fixed subset of this many samples (drawn with ``seed`` from what the validation
            split leaves; the same subset for every run with the same ``seed``), e.g. for a CPU protocol.
            ``None``: all of them.
    """

    # Xiao, Rasul & Vollgraf 2017, arXiv:1708.07747, Table 1 (labels 0..9)
    class_names: tuple[str, ...] | None = (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    )

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
        train_size: int | None = None,
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
            raise ValueError(
                f"val_size must be in [0, 60000), got {val_size}; use a val_size below 60000 (the training set's "
                "size), e.g. val_size=5000, or 0 to validate on the test set."
            )
        if train_size is not None and not 0 < train_size <= 60000 - val_size:
            raise ValueError(
                f"train_size must be in [1, {60000 - val_size}] (60,000 minus val_size={val_size}), got {train_size}; "
                "use e.g. train_size=10000, or null for the whole training set."
            )
        self.data_dir, self.val_size, self.download, self.seed = data_dir, val_size, download, seed
        self.train_size = train_size

    def candidate_dirs(self) -> list[Path]:
        """Folders searched, in order."""
        dirs = [self.data_dir, os.environ.get(ENV_VAR), DEBIAN_DIR]
        return [Path(d).expanduser() for d in dirs if d]

    def locate(self) -> Path:
        """The first folder holding all four files (downloading there if allowed).

        Raises:
            FileNotFoundError: no folder holds all four; the message says, for every folder searched, which
                files it lacks (or that the folder does not exist).
        """
        report = []
        partial = None  # data_dir, given and holding some of the files but not all: never passed over in silence
        for folder in self.candidate_dirs():
            if not folder.exists():
                report.append(f"{folder}: no such folder")
            elif not folder.is_dir():
                report.append(f"{folder}: a file, not a folder")
            else:
                missing = [stem for pair in FILES.values() for stem in pair if _find(folder, stem) is None]
                if not missing:
                    if partial is not None:
                        raise FileNotFoundError(
                            f"Fashion-MNIST data_dir '{partial[0]}' lacks {', '.join(partial[1])} (as .gz or not), so "
                            f"the run would train on the files in {folder} instead; copy the missing file(s) into "
                            f"'{partial[0]}', or unset data_dir to use {folder}."
                        )
                    return folder
                lacks = "none of the four files" if len(missing) == 4 else "missing " + ", ".join(missing)
                report.append(f"{folder}: {lacks} (as .gz or not)")
                if self.data_dir and len(missing) < 4 and not report[:-1]:
                    partial = (folder, missing)
        if self.download:
            from torchvision.datasets import FashionMNIST

            root = Path(self.data_dir or "data").expanduser()
            FashionMNIST(str(root), train=True, download=True)
            FashionMNIST(str(root), train=False, download=True)
            return root
        looked = "\n  ".join(report)
        raise FileNotFoundError(
            "Fashion-MNIST files not found: no folder holds all four of "
            f"{', '.join(stem for pair in FILES.values() for stem in pair)}. Looked in:\n  {looked}\n"
            f"Copy the missing files there, set data_dir, or ${ENV_VAR}, or `apt install dataset-fashion-mnist`, "
            "or pass download=True."
        )

    def load_splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        folder = self.locate()
        out = {}
        for split, (img, lab) in FILES.items():
            image_file, label_file = _find(folder, img), _find(folder, lab)
            images, labels = _check_pair(image_file, read_idx(image_file), label_file, read_idx(label_file))
            out[split] = (images.unsqueeze(1), labels.long())  # (N, 1, 28, 28) uint8, (N,)
        n = len(out["train"][1])
        if self.val_size:
            if self.val_size >= n:
                raise ValueError(
                    f"val_size={self.val_size} leaves no training samples: {_find(folder, FILES['train'][1])} "
                    f"holds {n}; use a val_size below {n}."
                )
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
            images, labels = out["train"]
            out["val"] = (images[perm[: self.val_size]], labels[perm[: self.val_size]])
            out["train"] = (images[perm[self.val_size :]], labels[perm[self.val_size :]])
        else:
            out["val"] = out["test"]
        if self.train_size is not None:
            images, labels = out["train"]
            if self.train_size > len(labels):
                raise ValueError(
                    f"train_size={self.train_size} but {_find(folder, FILES['train'][1])} leaves {len(labels)} "
                    f"training samples after val_size={self.val_size}; use a train_size up to {len(labels)}."
                )
            # a different stream from the val split's, so the subset does not depend on val_size's draw order
            pick = torch.randperm(len(labels), generator=torch.Generator().manual_seed(self.seed + 1))
            pick = pick[: self.train_size].sort().values
            out["train"] = (images[pick], labels[pick])
        return out


def _check_pair(image_file: Path, images: Tensor, label_file: Path, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Raise ``ValueError`` naming the file unless ``images`` are ``(N, 28, 28)`` uint8 and ``labels`` ``(N,)``
    classes 0..9."""
    fix = "re-download or re-copy it (files swapped or renamed?)"
    if images.dim() != 3 or tuple(images.shape[1:]) != (28, 28) or images.dtype != torch.uint8:
        raise ValueError(
            f"{image_file} holds {images.dtype} of shape {tuple(images.shape)}, but Fashion-MNIST images are "
            f"torch.uint8 of shape (N, 28, 28); {fix}."
        )
    if labels.dim() != 1:
        raise ValueError(f"{label_file} holds shape {tuple(labels.shape)}, but labels are one per sample (N,); {fix}.")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) > 9):
        raise ValueError(
            f"{label_file} holds labels {int(labels.min())}..{int(labels.max())}, but Fashion-MNIST has classes "
            f"0..9; {fix}."
        )
    if len(images) != len(labels):
        raise ValueError(
            f"{image_file} holds {len(images)} images but {label_file} holds {len(labels)} labels; the two must "
            "come from the same release: re-download or re-copy both."
        )
    return images, labels

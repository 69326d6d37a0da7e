"""Unreadable or unsuitable data files and split values (IDX/Fashion-MNIST, digits, CIFAR) fail with a message
that names them and says the fix, and the files are left byte-identical."""

from __future__ import annotations

import gzip
import re
import struct
from pathlib import Path

import pytest
import torch

from lightning_kd.data import DigitsDataModule, FashionMNISTDataModule, read_idx
from lightning_kd.data.base import InMemoryDataModule
from lightning_kd.data.cifar import CIFAR10DataModule
from lightning_kd.data.fashion_mnist import ENV_VAR, FILES
from tests.helpers import untouched

REBUILD = re.escape("rebuild it with `lightning-kd cache --config <recipe.yaml> --overwrite`")


# -- IDX files and Fashion-MNIST (data/idx_files.py, data/fashion_mnist.py) -----------------------------------------
def _write_idx(path: Path, array: torch.Tensor, code: int = 0x08) -> None:
    header = bytes([0, 0, code, array.dim()]) + struct.pack(f">{array.dim()}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.numpy().tobytes()))


def _fake_fmnist(folder: Path, n_train: int = 6, n_test: int = 4) -> Path:
    """The four files, tiny: ``n`` 28×28 images and labels 0..9 per split."""
    folder.mkdir(parents=True, exist_ok=True)
    for (img, lab), n in zip(FILES.values(), (n_train, n_test)):
        _write_idx(folder / f"{img}.gz", torch.arange(n * 784).remainder(256).to(torch.uint8).reshape(n, 28, 28))
        _write_idx(folder / f"{lab}.gz", torch.arange(n).remainder(10).to(torch.uint8))
    return folder


def test_a_data_dir_lacking_a_file_is_never_passed_over_for_another_folder(tmp_path, monkeypatch):
    mine = _fake_fmnist(tmp_path / "mine")
    (mine / "t10k-labels-idx1-ubyte.gz").unlink()
    monkeypatch.setenv(ENV_VAR, str(_fake_fmnist(tmp_path / "env")))
    with (
        untouched(mine),
        pytest.raises(
            FileNotFoundError,
            match=rf"data_dir '{mine}' lacks t10k-labels-idx1-ubyte \(as \.gz or not\), so the run would train on the "
            rf"files in {tmp_path / 'env'} instead; copy the missing file\(s\) into '{mine}', or unset data_dir",
        ),
    ):
        FashionMNISTDataModule(data_dir=str(mine)).setup()
    FashionMNISTDataModule(data_dir=str(tmp_path / "nothing-here")).setup()  # no such folder: the search goes on


def test_fake_fashion_mnist_files_load(tmp_path):
    dm = FashionMNISTDataModule(data_dir=str(_fake_fmnist(tmp_path / "f")), batch_size=2)
    dm.setup()
    assert dm.splits["train"].images.shape == (6, 1, 28, 28) and len(dm.splits["test"]) == 4


def test_a_truncated_gz_is_named_with_the_fix(tmp_path, fmnist_dir):
    folder = tmp_path / "fm"
    folder.mkdir()
    for img, lab in FILES.values():
        for stem in (img, lab):
            (folder / f"{stem}.gz").symlink_to(Path(fmnist_dir) / f"{stem}.gz")
    bad = folder / "train-labels-idx1-ubyte.gz"
    data = bad.read_bytes()
    bad.unlink()
    bad.write_bytes(data[: len(data) // 2])
    match = (
        rf"^IDX file {re.escape(repr(str(bad)))} is a truncated or corrupted gzip archive \(.*\); re-download it "
        r"\(or re-copy it from a good copy\)\.$"
    )
    with untouched(bad), pytest.raises(ValueError, match=match):
        read_idx(bad)
    with untouched(bad), pytest.raises(ValueError, match=match):
        FashionMNISTDataModule(data_dir=str(folder)).setup()


@pytest.mark.parametrize(
    "content, match",
    [
        (
            bytes([0, 0, 7, 1, 0, 0, 0, 1, 5]),
            r"is not an IDX file \(bad magic number 00000701; expected 0000, then "
            r"a dtype code 08 or 09 or 0b or 0c or 0d or 0e, then the number of dimensions\)",
        ),
        (b"", r"is empty \(0 bytes\)"),
        (bytes([0, 0, 8, 3, 0, 0]), r"is truncated inside its header: 3 dimensions need 16 bytes, the file has 6"),
        (
            bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"abc",
            r"is truncated: its header says shape \(10,\) of "
            r"torch\.uint8 \(10 bytes\), the file holds 3 bytes of data",
        ),
        (
            bytes([0, 0, 0x0C, 1]) + struct.pack(">I", 2) + b"\0" * 9,
            r"has extra bytes after its data: its header "
            r"says shape \(2,\) of torch\.int32 \(8 bytes\), the file holds 9 bytes",
        ),
    ],
    ids=["magic", "empty", "header", "short", "long"],
)
def test_a_wrong_idx_payload_names_expected_and_found(tmp_path, content, match):
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(content)
    with untouched(path), pytest.raises(ValueError, match=re.escape(repr(str(path))) + " " + match):
        read_idx(path)


def test_missing_files_are_named_per_folder(tmp_path, monkeypatch):
    mine = _fake_fmnist(tmp_path / "mine")
    (mine / "t10k-labels-idx1-ubyte.gz").unlink()
    env = _fake_fmnist(tmp_path / "env")
    for stem in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"):
        (env / f"{stem}.gz").unlink()
    monkeypatch.setenv(ENV_VAR, str(env))
    monkeypatch.setattr("lightning_kd.data.fashion_mnist.DEBIAN_DIR", str(tmp_path / "debian"))
    with untouched(mine, env), pytest.raises(FileNotFoundError) as err:
        FashionMNISTDataModule(data_dir=str(mine)).setup()
    msg = str(err.value)
    assert f"{mine}: missing t10k-labels-idx1-ubyte (as .gz or not)" in msg
    assert f"{env}: missing train-images-idx3-ubyte, t10k-images-idx3-ubyte (as .gz or not)" in msg
    assert f"{tmp_path / 'debian'}: no such folder" in msg
    assert ENV_VAR in msg and "download=True" in msg and "Copy the missing files there" in msg


@pytest.mark.parametrize(
    "swap, match",
    [
        (
            {"t10k-labels-idx1-ubyte": torch.zeros(3, dtype=torch.uint8)},
            r"t10k-images-idx3-ubyte\.gz holds 4 images "
            r"but .*t10k-labels-idx1-ubyte\.gz holds 3 labels; the two must come from the same release",
        ),
        (
            {"train-images-idx3-ubyte": torch.zeros(6, dtype=torch.uint8)},
            r"train-images-idx3-ubyte\.gz holds "
            r"torch\.uint8 of shape \(6,\), but Fashion-MNIST images are torch\.uint8 of shape \(N, 28, 28\)",
        ),
        (
            {"train-labels-idx1-ubyte": torch.full((6,), 12, dtype=torch.uint8)},
            r"train-labels-idx1-ubyte\.gz holds "
            r"labels 12\.\.12, but Fashion-MNIST has classes 0\.\.9",
        ),
    ],
    ids=["counts", "swapped", "labels"],
)
def test_unsuitable_fashion_mnist_contents_name_the_files(tmp_path, swap, match):
    folder = _fake_fmnist(tmp_path / "f")
    for stem, array in swap.items():
        _write_idx(folder / f"{stem}.gz", array)
    with untouched(folder), pytest.raises(ValueError, match=match + r".*re-download or re-copy (it|both)"):
        FashionMNISTDataModule(data_dir=str(folder)).setup()


def test_val_size_larger_than_the_training_file_is_named(tmp_path):
    folder = _fake_fmnist(tmp_path / "f")
    with pytest.raises(
        ValueError,
        match=r"val_size=6 leaves no training samples: .*train-labels-idx1-ubyte\.gz "
        r"holds 6; use a val_size below 6",
    ):
        FashionMNISTDataModule(data_dir=str(folder), val_size=6).setup()


# -- split fractions and counts (data/digits.py, data/base.py) -------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            {"val_fraction": 0.001},
            r"val_fraction=0\.001 gives 2 validation samples \(of 1797\), fewer than the 10 "
            r"classes: a stratified split needs at least one sample of each class; use val_fraction >= 0\.006\.",
        ),
        (
            {"test_fraction": 0.0001},
            r"test_fraction=0\.0001 gives 0 test samples \(of 1797\), .*test_fraction >= "
            r"0\.006\.",
        ),
        ({"val_fraction": float("nan")}, r"val_fraction=nan must be a number in \(0, 1\)"),
        ({"test_fraction": 1.5}, r"test_fraction=1\.5 must be a number in \(0, 1\)"),
        ({"val_fraction": 0}, r"val_fraction=0 must be a number in \(0, 1\)"),
        ({"val_fraction": "0.1"}, r"val_fraction='0\.1' must be a number in \(0, 1\)"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, r"sum to 1, leaving nothing to train on"),
        (
            {"val_fraction": 0.5, "test_fraction": 0.4999},
            r"leave 1 of the 1797 samples for training, fewer than "
            r"the 10 classes; make them sum to at most 0\.993\.",
        ),
        ({"batch_size": 0}, r"batch_size must be a whole number >= 1, got 0"),
        ({"batch_size": 2.5}, r"batch_size must be a whole number >= 1, got 2\.5"),
        ({"batch_size": "64"}, r"batch_size must be a whole number >= 1, got '64'"),
        ({"num_workers": -1}, r"num_workers must be a whole number >= 0, got -1"),
    ],
)
def test_bad_split_values_are_named_before_sklearn_sees_them(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DigitsDataModule(**kwargs)


def test_the_advised_bounds_work():
    small = DigitsDataModule(val_fraction=0.006, test_fraction=0.006)
    small.setup()
    assert len(small.splits["val"]) == len(small.splits["test"]) == 11
    large = DigitsDataModule(val_fraction=0.5, test_fraction=0.493)
    large.setup()
    assert len(large.splits["train"]) >= 10


def test_crop_padding_must_be_a_count():
    with pytest.raises(ValueError, match=r"crop_padding must be a whole number >= 0, got -1; the pixels"):
        InMemoryDataModule(crop_padding=-1)
    with pytest.raises(ValueError, match=r"crop_padding must be a whole number >= 0, got 1\.5"):
        InMemoryDataModule(crop_padding=1.5)


@pytest.mark.parametrize("layout", ["nothing", "archive", "inner", "partial"])
def test_cifar_says_which_folder_or_file_is_missing(tmp_path, layout):
    root = tmp_path / "data"
    folder = root / "cifar-10-batches-py"
    data_dir, match = root, r"'.*cifar-10-batches-py' does not exist \(data_dir '.*data' should hold"
    if layout == "archive":
        root.mkdir()
        (root / "cifar-10-python.tar.gz").write_bytes(b"x")
        match = r"does not exist, but '.*cifar-10-python\.tar\.gz' does; extract it there"
    elif layout == "inner":
        folder.mkdir(parents=True)
        data_dir, match = folder, r"is the extracted cifar-10-batches-py folder itself; set data_dir to the folder"
    elif layout == "partial":
        folder.mkdir(parents=True)
        (folder / "data_batch_1").write_bytes(b"damaged")
        match = (
            r"is incomplete: missing data_batch_2, .*test_batch, batches\.meta; corrupted \(md5 mismatch\) "
            r"data_batch_1; re-extract cifar-10-python\.tar\.gz there"
        )
    with pytest.raises(FileNotFoundError, match=r"^CIFAR10DataModule: .*" + match):
        CIFAR10DataModule(data_dir=str(data_dir)).setup()

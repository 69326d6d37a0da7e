"""Data modules: IDX reading, Fashion-MNIST discovery and contents, digits split, batched augmentation."""

from __future__ import annotations

import gzip
import struct

import pytest
import torch

from lightning_kd.data import DigitsDataModule, FashionMNISTDataModule, random_crop_flip, read_idx
from lightning_kd.data.fashion_mnist import ENV_VAR


def _write_idx(path, array: torch.Tensor, code: int, compress: bool) -> None:
    header = bytes([0, 0, code, array.dim()]) + struct.pack(f">{array.dim()}I", *array.shape)
    body = array.numpy().astype(array.numpy().dtype.newbyteorder(">")).tobytes()
    (gzip.open if compress else open)(path, "wb").write(header + body)


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_uint8_and_big_endian_int32(tmp_path, compress):
    a = torch.arange(24, dtype=torch.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a", a, 0x08, compress)
    assert torch.equal(read_idx(tmp_path / "a"), a)
    b = torch.tensor([[1, -2, 70000], [3, 4, -5]], dtype=torch.int32)
    _write_idx(tmp_path / "b", b, 0x0C, compress)
    assert torch.equal(read_idx(tmp_path / "b"), b)


def test_read_idx_rejects_other_files(tmp_path):
    (tmp_path / "x").write_bytes(b"\x50\x4b\x03\x04rest")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "x")
    (tmp_path / "y").write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"abc")
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "y")


def test_fashion_mnist_reads_the_real_files(fmnist_dir):
    dm = FashionMNISTDataModule(data_dir=fmnist_dir)
    dm.setup()
    train, test = dm.splits["train"], dm.splits["test"]
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.labels.min() == 0 and train.labels.max() == 9
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    # normalised with mean 0.2860 / std 0.3530: the whole training set comes back to about 0 / 1
    assert abs(train.images.mean().item()) < 0.01 and abs(train.images.std().item() - 1.0) < 0.01
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (256, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert len(dm.train_dataloader()) == 234  # drop_last, as the reference's 234 steps of 256


def test_fashion_mnist_val_split_is_held_out(fmnist_dir):
    dm = FashionMNISTDataModule(data_dir=fmnist_dir, val_size=5000)
    dm.setup()
    assert len(dm.splits["train"]) == 55000 and len(dm.splits["val"]) == 5000


def test_fashion_mnist_train_subset_is_fixed_and_disjoint_from_val(fmnist_dir):
    def splits(**kw):
        dm = FashionMNISTDataModule(data_dir=fmnist_dir, **kw)
        dm.setup()
        return dm.splits

    a, b = splits(val_size=5000, train_size=10000), splits(val_size=5000, train_size=10000)
    full = splits(val_size=5000)
    assert len(a["train"]) == 10000 and len(a["val"]) == 5000
    assert torch.equal(a["train"].images, b["train"].images)  # same seed, same subset
    assert torch.equal(a["val"].images, full["val"].images)  # the subset leaves the val split alone
    # every subset image is one of the 55,000 the val split left (none of the val images)
    rows = {bytes(x.numpy().tobytes()) for x in full["train"].images}
    assert all(bytes(x.numpy().tobytes()) in rows for x in a["train"].images[:500])
    counts = torch.bincount(a["train"].labels, minlength=10)
    assert counts.min() > 800 and counts.max() < 1200  # a random draw: every class present, about 1,000 each
    other = splits(val_size=5000, train_size=10000, seed=1)
    assert not torch.equal(other["train"].images, a["train"].images)
    with pytest.raises(ValueError, match=r"train_size must be in \[1, 55000\].*got 60000"):
        FashionMNISTDataModule(val_size=5000, train_size=60000)


def test_fashion_mnist_env_var_is_searched_after_data_dir(fmnist_dir, monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, fmnist_dir)
    dm = FashionMNISTDataModule(data_dir=str(tmp_path / "empty"))
    assert dm.candidate_dirs()[:2] == [tmp_path / "empty", type(tmp_path)(fmnist_dir)]
    assert str(dm.locate()) == fmnist_dir


def test_fashion_mnist_missing_lists_where_it_looked(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env_dir"))
    monkeypatch.setattr("lightning_kd.data.fashion_mnist.DEBIAN_DIR", str(tmp_path / "debian"))
    dm = FashionMNISTDataModule(data_dir=str(tmp_path / "mine"))
    with pytest.raises(FileNotFoundError) as err:
        dm.setup()
    msg = str(err.value)
    for place in ("mine", "env_dir", "debian", ENV_VAR, "download=True"):
        assert place in msg


def test_digits_split_is_fixed_disjoint_and_complete():
    a, b = DigitsDataModule(seed=0), DigitsDataModule(seed=0)
    a.setup()
    b.setup()
    sizes = {k: len(v) for k, v in a.splits.items()}
    assert sizes == {"train": 1258, "val": 180, "test": 359}
    for k in sizes:
        assert torch.equal(a.splits[k].images, b.splits[k].images)
    # train + val + test is exactly the data set, each sample once (as a multiset of (pixels, label) rows)
    from sklearn.datasets import load_digits

    d = load_digits()
    everything = sorted(
        tuple((d.images[i] / 16.0).round(4).flatten().tolist()) + (int(d.target[i]),) for i in range(1797)
    )
    splits = []
    for v in a.splits.values():
        pixels = v.images.flatten(1) * DigitsDataModule.std + DigitsDataModule.mean
        splits += [tuple(p.round(decimals=4).tolist()) + (int(y),) for p, y in zip(pixels.double(), v.labels)]
    assert sorted(splits) == everything
    assert a.splits["train"].images.shape[1:] == (1, 8, 8)


def test_random_crop_flip_geometry():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    torch.testing.assert_close(random_crop_flip(x, padding=0, flip=False), x)
    # with no padding every flip is an exact mirror of the input
    out = random_crop_flip(x, padding=0, flip=True, generator=torch.Generator().manual_seed(0))
    for i in range(2):
        assert torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(-1))
    # with padding 1, every output is a shifted window of the padded image, border filled with `fill`
    out = random_crop_flip(x, padding=1, flip=False, fill=-1.0, generator=torch.Generator().manual_seed(1))
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), value=-1.0)
    for i in range(2):
        windows = [padded[i, :, dy : dy + 4, dx : dx + 4] for dy in range(3) for dx in range(3)]
        assert any(torch.equal(out[i], w) for w in windows)


def test_random_crop_flip_varies_per_sample():
    x = torch.randn(1, 1, 28, 28).expand(64, 1, 28, 28).contiguous()
    out = random_crop_flip(x, padding=2, generator=torch.Generator().manual_seed(0))
    distinct = {tuple(o.flatten()[:50].tolist()) for o in out}
    assert len(distinct) > 10


def test_augmentation_only_on_training_batches(fmnist_dir, trainer_factory):
    dm = FashionMNISTDataModule(data_dir=fmnist_dir, augment=True)
    dm.setup()
    batch = next(iter(dm.val_dataloader()))
    trainer = trainer_factory()
    dm.trainer = trainer
    assert not trainer.training
    out = dm.on_after_batch_transfer(batch, 0)
    assert torch.equal(out[0], batch[0])
    trainer.training = True
    out = dm.on_after_batch_transfer(batch, 0)
    assert not torch.equal(out[0], batch[0]) and out[0].shape == batch[0].shape


# -- labels and inputs refused at setup (data/base.py, core/data_checks.py) and on first batches (RunChecks) ----
def _in_memory(x: torch.Tensor, y: torch.Tensor):
    from lightning_kd.data.base import InMemoryDataModule

    class Given(InMemoryDataModule):
        def load_splits(self):
            return {"train": (x, y), "val": (x, y)}

    return Given(batch_size=8)


def test_float_labels_are_class_indices_only_when_whole():
    from lightning_kd.core.data_checks import LabelError

    x = torch.rand(16, 1, 4, 4)
    dm = _in_memory(x, (torch.arange(16) % 4).float())  # 0.0, 1.0, ...: whole numbers, kept
    dm.setup()
    assert dm.splits["train"].labels.dtype == torch.long
    with pytest.raises(LabelError, match=r"labels of the train split of Given are not whole numbers: 16 of 16 .*2\.5"):
        _in_memory(x, (torch.arange(16) % 4).float() + 0.5).setup()
    onehot = torch.nn.functional.one_hot(torch.arange(16) % 4, 4).float()
    match = r"\(16, 4\) \(they look one-hot.*summing to 1\).*labels\.argmax\(1\)\.long\(\)"
    with pytest.raises(LabelError, match=match):
        _in_memory(x, onehot).setup()


def test_non_finite_inputs_are_refused_naming_the_split_and_samples():
    from lightning_kd.core.data_checks import NonFiniteInputError

    x = torch.rand(16, 1, 4, 4)
    x[5, 0, 1, 1], x[9, 0, 0, 0] = float("nan"), float("inf")
    with pytest.raises(
        NonFiniteInputError,
        match=r"inputs of the train split of Given hold 2 NaN or infinite values \(in 2 samples, e\.g\. index "
        r"\[5, 9\]\).*Clean the data",
    ):
        _in_memory(x, torch.arange(16) % 4).setup()


@pytest.mark.parametrize("fault", ["label", "nan"])
def test_the_first_validation_batch_of_plain_loaders_is_checked(trainer_factory, fault):
    """The sanity check's validation batch comes before any training batch: it is checked too."""
    from torch.utils.data import DataLoader, TensorDataset

    from lightning_kd import ClassificationModule
    from lightning_kd.core.data_checks import LabelError, NonFiniteInputError
    from tests.helpers import make_student

    x, y = torch.rand(32, 1, 8, 8), torch.arange(32) % 10
    if fault == "label":
        y[3] = 12
    else:
        x[3, 0, 0, 0] = float("nan")
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    error, match = {
        "label": (LabelError, r"labels of the first validation batch range from 0 to 12.*out of range: \[12\]"),
        "nan": (NonFiniteInputError, r"inputs of the first validation batch hold 1 NaN or infinite value"),
    }[fault]
    with pytest.raises(error, match=match):
        trainer_factory(limit_train_batches=1).fit(ClassificationModule(make_student()), loader, loader)
    with pytest.raises(error, match=match.replace("validation", "training")):  # no validation: the training batch
        trainer_factory(limit_train_batches=1, limit_val_batches=0).fit(ClassificationModule(make_student()), loader)

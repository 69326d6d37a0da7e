"""Unreadable or unsuitable files and data values fail with a message that names them and says the fix, and
the user's files are left byte-identical."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import shutil
import struct
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import make_student

from lightning_kd.cache import build as build_module
from lightning_kd.cache import checks as checks_module
from lightning_kd.cache import store as store_module
from lightning_kd.cache.build import build_from_recipe, build_teacher_cache
from lightning_kd.cache.store import TeacherCache
from lightning_kd.core.teacher import Teacher
from lightning_kd.core.weights import load_weights
from lightning_kd.data import DigitsDataModule, FashionMNISTDataModule, read_idx
from lightning_kd.data.base import InMemoryDataModule
from lightning_kd.data.cifar import CIFAR10DataModule
from lightning_kd.data.fashion_mnist import ENV_VAR, FILES

REBUILD = re.escape("rebuild it with `lightning-kd cache --config <recipe.yaml> --overwrite`")


def _digest(path: Path) -> str:
    """sha256 of a file, or of every file under a folder (names and bytes)."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


@contextmanager
def untouched(*paths: Path):
    """Assert that the block leaves ``paths`` byte-identical (whatever it raises)."""
    before = [_digest(p) for p in paths]
    try:
        yield
    finally:
        assert [_digest(p) for p in paths] == before, "a user's file was changed"


# -- checkpoints (core/weights.py) --------------------------------------------------------------------------
class Opaque:
    """A pickled object that a weights-only load refuses."""


@pytest.fixture
def ckpt(tmp_path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "teacher.pt"
    torch.save(make_student().state_dict(), path)
    return path


def test_a_directory_is_named_with_the_checkpoints_inside(tmp_path, ckpt):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(ckpt, run / "checkpoints" / "last.ckpt")
    shutil.copy(ckpt, run / "weights.pth")
    (run / "notes.txt").write_text("not a checkpoint")
    with untouched(run), pytest.raises(IsADirectoryError) as err:
        load_weights(make_student(), run, what="teacher_ckpt")
    msg = str(err.value)
    assert f"teacher_ckpt {str(run)!r} is a directory, not a checkpoint file; pass one of" in msg
    assert str(run / "checkpoints" / "last.ckpt") in msg and str(run / "weights.pth") in msg
    assert "notes.txt" not in msg and "does not exist" not in msg
    for i in range(6):
        shutil.copy(ckpt, run / f"e{i}.ckpt")
    with pytest.raises(IsADirectoryError, match=r"e3.ckpt and 3 more\.$"):  # 5 listed, the rest counted
        load_weights(make_student(), run)
    (tmp_path / "empty").mkdir()
    with pytest.raises(IsADirectoryError, match=r"is a directory.*holds no \*\.ckpt, \*\.pt or \*\.pth file"):
        load_weights(make_student(), tmp_path / "empty")


@pytest.mark.parametrize("allow_pickle", [False, True])
def test_a_truncated_checkpoint_is_named_as_such(tmp_path, ckpt, allow_pickle):
    half = tmp_path / "half.pt"
    half.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    with untouched(half), pytest.raises(ValueError) as err:
        load_weights(make_student(), half, what="teacher_ckpt", allow_pickle=allow_pickle)
    assert re.match(
        rf"teacher_ckpt {re.escape(repr(str(half)))} is not a readable PyTorch checkpoint \(truncated or "
        r"corrupted: .*central directory\); re-save it with torch\.save\(model\.state_dict\(\), path\), or "
        r"re-copy it",
        str(err.value),
    )
    legacy = tmp_path / "legacy.pt"  # torch.save's pre-1.6 format, cut short: a broken pickle stream
    torch.save(make_student().state_dict(), legacy, _use_new_zipfile_serialization=False)
    legacy.write_bytes(legacy.read_bytes()[:200])
    with untouched(legacy), pytest.raises(ValueError, match=r"is not a readable PyTorch checkpoint \(truncated"):
        load_weights(make_student(), legacy, allow_pickle=allow_pickle)


@pytest.mark.parametrize("allow_pickle", [False, True])
@pytest.mark.parametrize(
    "content, match",
    [
        (
            b"hello world\n",
            r"is not a PyTorch checkpoint \(torch\.save writes a zip archive; this file starts with "
            r"b'hello world\\n'\); point at the file",
        ),
        (
            b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\n",
            r"is a Git LFS pointer, not a PyTorch "
            r"checkpoint \(torch\.save writes a zip archive; this file starts with b'version https://'\); run `git lfs "
            r"pull`",
        ),
        (b"", r"is empty \(0 bytes\): the save or copy was interrupted; re-save it"),
    ],
    ids=["text", "lfs", "empty"],
)
def test_a_file_that_is_no_checkpoint_is_refused_before_unpickling(tmp_path, content, match, allow_pickle):
    path = tmp_path / "teacher.ckpt"
    path.write_bytes(content)
    with untouched(path), pytest.raises(ValueError, match=f"^checkpoint {re.escape(repr(str(path)))} {match}"):
        load_weights(make_student(), path, allow_pickle=allow_pickle)


def test_a_plain_pickle_and_a_zip_of_no_tensors_are_named(tmp_path):
    import pickle

    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps(make_student().state_dict()))
    with untouched(plain), pytest.raises(ValueError, match=r"is a plain Python pickle, not a PyTorch checkpoint"):
        load_weights(make_student(), plain, allow_pickle=True)
    notes = tmp_path / "notes.pt"
    torch.save({"epoch": 3, "note": "no weights here"}, notes)
    with untouched(notes), pytest.raises(ValueError) as err:
        load_weights(make_student(), notes, what="teacher_ckpt")
    assert str(err.value).startswith(
        f"teacher_ckpt {str(notes)!r} holds neither a Lightning checkpoint nor a state_dict of tensors; save the "
        "teacher with `torch.save(model.state_dict(), path)`"
    )
    other = tmp_path / "other.zip"  # a whole zip archive, not torch.save's
    shutil.make_archive(str(tmp_path / "other"), "zip", root_dir=tmp_path, base_dir="plain.pkl")
    with untouched(other), pytest.raises(ValueError, match=r"is a zip archive that torch\.save did not write"):
        load_weights(make_student(), other)


def test_a_checkpoint_that_needs_unpickling_keeps_asking_for_allow_pickle(tmp_path, ckpt):
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": torch.load(ckpt), "hyper_parameters": Opaque()}, path)
    with untouched(path), pytest.raises(ValueError) as err:
        Teacher(make_student(), ckpt=str(path))
    msg = str(err.value)
    assert msg.startswith(f"teacher_ckpt {str(path)!r} holds pickled Python objects that a weights-only load refuses")
    assert "Opaque" in msg and "Teacher(model=..., ckpt=path, allow_pickle=True)" in msg
    with untouched(path):
        teacher = Teacher(make_student(), ckpt=str(path), allow_pickle=True)  # asked for: it loads
    for k, v in torch.load(ckpt).items():
        assert torch.equal(teacher.model.state_dict()[k], v)


def test_non_finite_weights_are_refused_naming_the_tensors(tmp_path):
    net = make_student()
    with torch.no_grad():
        net.fc.weight[0, 0] = float("nan")
        net.fc.bias.fill_(float("inf"))
    path = tmp_path / "nan_teacher.pt"
    torch.save(net.state_dict(), path)
    with untouched(path), pytest.raises(ValueError) as err:
        load_weights(make_student(), path, what="teacher_ckpt")
    assert str(err.value).startswith(
        f"teacher_ckpt {str(path)!r} holds NaN or infinite weights in fc.weight, fc.bias (2 of 4 tensors)"
    )
    assert "Re-train or re-export it" in str(err.value)


# -- --ckpt_path: a run to resume or a model to evaluate (core/weights.py read_run_checkpoint) ------------------
def _run_folder(root: Path) -> Path:
    """A run's files: its published model and version_0/checkpoints/{best,last}.ckpt (Lightning-shaped dicts)."""
    (root / "version_0" / "checkpoints").mkdir(parents=True)
    ckpt = {"state_dict": {"w": torch.zeros(2)}, "epoch": 0, "global_step": 2}
    for name in ("model.ckpt", "version_0/checkpoints/best.ckpt", "version_0/checkpoints/last.ckpt"):
        torch.save(ckpt, root / name)
    return root


@pytest.mark.parametrize("fault", ["typo", "folder", "text", "cut", "state_dict", "no_folder"])
def test_a_checkpoint_to_resume_is_checked_before_lightning_reads_it(tmp_path, monkeypatch, fault):
    from lightning_kd.core.weights import read_run_checkpoint

    monkeypatch.chdir(tmp_path)
    run = _run_folder(Path("runs/kd"))
    last = "runs/kd/version_0/checkpoints/last.ckpt"
    path, error, match = {
        "typo": (
            "runs/kd/modle.ckpt",
            FileNotFoundError,
            r"does not exist\. Did you mean 'runs/kd/model\.ckpt'\? Pass one of the checkpoint files in runs/kd: "
            r"runs/kd/model\.ckpt, runs/kd/version_0/checkpoints/best\.ckpt",
        ),
        "folder": ("runs/kd", IsADirectoryError, r"is a directory, not a checkpoint file; pass one of"),
        "text": ("runs/kd/notes.ckpt", ValueError, r"is not a PyTorch checkpoint .*point at the file"),
        "cut": ("runs/kd/cut.ckpt", ValueError, rf"is not a readable .*resume from another checkpoint \(e\.g\. {last}"),
        "state_dict": ("runs/kd/w.pt", ValueError, r"holds bare weights \(a state_dict\).*start a new run"),
        "no_folder": ("runz/kd/model.ckpt", FileNotFoundError, r"does not exist\. Check the path: its folder 'runz"),
    }[fault]
    if fault == "text":
        Path(path).write_text("best epoch: 12\n")
    elif fault == "cut":
        data = (run / "model.ckpt").read_bytes()
        Path(path).write_bytes(data[: len(data) // 2])
    elif fault == "state_dict":
        torch.save(make_student().state_dict(), path)
    with untouched(run), pytest.raises(error, match=rf"^--ckpt_path {re.escape(repr(path))} {match}"):
        read_run_checkpoint(path)
    assert read_run_checkpoint(last)["global_step"] == 2


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


# -- IDX files and Fashion-MNIST (data/idx.py, data/fashion_mnist.py) -----------------------------------------
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


# -- the teacher cache (cache/store.py) --------------------------------------------------------------------------
def _cache(path: Path, storage: str = "fp16", epochs: int = 2, n: int = 50, key: dict | None = None) -> Path:
    torch.manual_seed(0)
    k = 3 if storage == "topk" else None
    writer = TeacherCache.create(path, n, 10, epochs, key or {"augment": True}, storage=storage, k=k)
    for e in range(epochs):
        writer.write(e, torch.arange(n), torch.randn(n, 10))
    writer.finish()
    return path


def _expected_logits(storage: str = "fp16") -> str:
    return re.escape(f"shape (2, 50, 10) of {'float16' if storage == 'fp16' else 'float32'} (from meta.json)")


@pytest.mark.parametrize("cut", [0.5, 0.02], ids=["data", "header"])
def test_a_truncated_npy_is_named_with_shape_dtype_and_fix(tmp_path, cut):
    path = _cache(tmp_path / "c")
    logits = path / "logits.npy"
    data = logits.read_bytes()
    logits.write_bytes(data[: int(len(data) * cut)])
    with untouched(path), pytest.raises(ValueError) as err:
        TeacherCache.open(path)
    assert re.match(
        rf"teacher cache file {re.escape(repr(str(logits)))} is truncated or corrupted \(.+\); "
        rf"{_expected_logits()} was expected; {REBUILD}\.$",
        str(err.value),
    )


def test_a_replaced_or_missing_npy_is_named(tmp_path):
    path = _cache(tmp_path / "c", storage="fp32")
    np.save(path / "logits.npy", np.zeros((2, 49, 10), np.float32))
    with untouched(path), pytest.raises(ValueError) as err:
        TeacherCache.open(path)
    assert str(err.value).startswith(
        f"teacher cache file {str(path / 'logits.npy')!r} holds shape (2, 49, 10) of float32, but shape (2, 50, 10) "
        "of float32 (from meta.json) was expected"
    )
    np.save(path / "logits.npy", np.zeros((2, 50, 10), np.float16))
    with pytest.raises(ValueError, match=r"holds shape \(2, 50, 10\) of float16, but shape \(2, 50, 10\) of float32"):
        TeacherCache.open(path)
    (path / "logits.npy").unlink()
    with untouched(path), pytest.raises(FileNotFoundError, match=r"logits.npy' is missing \(shape \(2, 50, 10\)"):
        TeacherCache.open(path)


@pytest.mark.parametrize(
    "text, match",
    [
        ('{"format": 1, "storage": "fp16",', r"meta\.json' is not valid JSON \(.*\): it was edited or damaged; "),
        ("[1, 2]", r"meta\.json' holds a list, not a JSON object"),
        ('{"format": 1, "storage": "fp16", "epochs": 2}', r"meta\.json' lacks num_samples, num_classes \(fields "),
    ],
    ids=["json", "list", "fields"],
)
def test_a_broken_meta_json_is_named(tmp_path, text, match):
    path = _cache(tmp_path / "c")
    (path / "meta.json").write_text(text)
    with untouched(path), pytest.raises(ValueError, match=match + r".*" + REBUILD):
        TeacherCache.open(path)


@pytest.mark.parametrize("chunk", [1 << 22, 30], ids=["one-chunk", "many-chunks"])
def test_non_finite_logits_in_a_cache_are_refused_with_their_count(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(checks_module, "_SCAN_VALUES", chunk)
    path = _cache(tmp_path / "c")
    stored = np.load(path / "logits.npy", mmap_mode="r+")
    stored[1, 7, 3], stored[1, 7, 4], stored[1, 40, 0], stored[0, 49, 9] = np.nan, np.inf, -np.inf, np.nan
    stored.flush()
    del stored
    with untouched(path), pytest.raises(ValueError) as err:
        TeacherCache.open(path)
    assert str(err.value) == (
        f"teacher cache file {str(path / 'logits.npy')!r} holds 4 NaN or inf logit(s) in 3 sample row(s) (the first: "
        "epoch 0, sample 49): it was built from a diverged teacher or damaged; check the teacher and rebuild it "
        "with `lightning-kd cache --config <recipe.yaml> --overwrite`."
    )


def test_topk_classes_out_of_range_are_refused(tmp_path):
    path = _cache(tmp_path / "c", storage="topk")
    stored = np.load(path / "topk_indices.npy", mmap_mode="r+")
    stored[1, 2, 0] = 10
    stored.flush()
    del stored
    with (
        untouched(path),
        pytest.raises(
            ValueError,
            match=r"topk_indices\.npy' holds 1 top-k class\(es\) outside 0\.\.9 "
            r"in 1 sample row\(s\) \(the first: epoch 1, sample 2\)",
        ),
    ):
        TeacherCache.open(path)


def test_the_scan_runs_once_per_open(tmp_path, monkeypatch):
    path = _cache(tmp_path / "c")
    calls = []
    scan = store_module.refuse_bad_values
    monkeypatch.setattr(store_module, "refuse_bad_values", lambda *a: calls.append(a[0]) or scan(*a))
    cache = TeacherCache.open(path)
    for _ in range(3):
        cache.lookup(1, torch.arange(5))
    cache.to("cpu").lookup(0, torch.arange(5))
    assert calls == [path / "logits.npy"]


@pytest.mark.parametrize("storage", ["fp32", "fp16", "topk"])
def test_writing_non_finite_teacher_logits_is_refused(tmp_path, storage):
    writer = TeacherCache.create(tmp_path / "c", 8, 10, 1, {"augment": False}, storage=storage, k=3)
    logits = torch.randn(4, 10)
    logits[2, 5] = float("nan")
    logits[3, 0] = float("inf")
    with pytest.raises(ValueError) as err:
        writer.write(0, torch.arange(4, 8), logits)
    assert str(err.value).startswith(
        f"the teacher's logits of 2 sample(s) in epoch 0 (indices [6, 7]) are NaN or inf, so teacher cache "
        f"{str(tmp_path / 'c')!r} was not finished: the teacher diverged"
    )
    with pytest.raises(FileNotFoundError, match="is an unfinished build"):
        TeacherCache.open(tmp_path / "c")
    if storage == "fp16":  # finite but too large for fp16 keeps its own message
        with pytest.raises(ValueError, match=r"overflow fp16 .*storage='fp32' \(--storage fp32\)"):
            writer.write(0, torch.arange(1), torch.full((1, 10), 1e6))


# -- replacing a finished cache (cache/store.py, cache/build.py) ------------------------------------------------
def _digits() -> DigitsDataModule:
    return DigitsDataModule(batch_size=64, with_indices=True)


def _teacher(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return make_student()  # an MLP on 8×8 digits: as good a teacher as any for these tests


def test_a_finished_cache_for_something_else_is_not_replaced(tmp_path):
    path = tmp_path / "c"
    build_teacher_cache(_teacher(0), _digits(), path, epochs=1, device="cpu")
    (path / "README").write_text("mine")
    with untouched(path), pytest.raises(FileExistsError) as err:
        build_teacher_cache(_teacher(1), _digits(), path, epochs=1, device="cpu")
    assert re.match(
        rf"teacher cache folder {re.escape(repr(str(path)))} already holds a finished cache built for something "
        r"else \(teacher weights \(sha256 of its state_dict\): cache '[0-9a-f]+', new build '[0-9a-f]+'\); pass "
        r"overwrite=True \(`lightning-kd cache \.\.\. --overwrite`\) to replace it, or build into another folder\.$",
        str(err.value),
    )
    with untouched(path), pytest.raises(FileExistsError, match=r"number of training samples: cache 1258, new "):
        build_teacher_cache(_teacher(0), DigitsDataModule(with_indices=True, test_fraction=0.3), path, 1, device="cpu")
    old_teacher = json.loads((path / "meta.json").read_text())["teacher"]
    new = build_teacher_cache(_teacher(1), _digits(), path, epochs=1, device="cpu", overwrite=True)
    assert new.meta["teacher"] != old_teacher
    assert (path / "README").read_text() == "mine"  # only the cache's own files are replaced
    dm = _digits()
    dm.setup()
    with torch.no_grad():
        live = _teacher(1).eval()(dm.splits["train"].images[:3])
    torch.testing.assert_close(new.lookup(0, torch.arange(3)), live, atol=2e-3, rtol=2e-3)


def test_a_rebuild_of_the_same_key_or_an_unfinished_build_is_allowed(tmp_path):
    path = tmp_path / "c"
    build_teacher_cache(_teacher(0), _digits(), path, epochs=1, device="cpu")
    again = build_teacher_cache(_teacher(0), _digits(), path, epochs=1, storage="fp32", device="cpu")  # same key
    assert again.meta["storage"] == "fp32" and not (path / "meta.json.tmp").exists()
    (path / "meta.json").unlink()  # an unfinished build: nothing finished to lose
    assert build_teacher_cache(_teacher(1), _digits(), path, epochs=1, device="cpu").epochs == 1
    broken = tmp_path / "broken"
    _cache(broken)
    (broken / "meta.json").write_text("{not json")
    with untouched(broken), pytest.raises(FileExistsError, match=r"holds a meta\.json that is not valid JSON"):
        build_teacher_cache(_teacher(0), _digits(), broken, epochs=1, device="cpu")
    (tmp_path / "file").write_text("x")
    with untouched(tmp_path / "file"), pytest.raises(FileExistsError, match=r"'.*file' is a file, not a folder"):
        build_teacher_cache(_teacher(0), _digits(), tmp_path / "file", epochs=1, device="cpu")


def test_overwrite_reaches_the_build_from_a_recipe_and_the_command_line(tmp_path, monkeypatch):
    path = tmp_path / "c"
    build_teacher_cache(_teacher(0), _digits(), path, epochs=1, device="cpu")
    cli = SimpleNamespace(
        model=SimpleNamespace(teacher=Teacher(_teacher(1)), temperature=4.0),
        trainer=SimpleNamespace(max_epochs=1, precision="32-true"),
        datamodule=_digits(),
    )
    monkeypatch.setattr("lightning_kd.apps.cli.build_cli", lambda args, run=False: cli)
    with untouched(path), pytest.raises(FileExistsError, match="built for something else"):
        build_from_recipe("recipe.yaml", out=path, device="cpu")
    assert build_from_recipe("recipe.yaml", out=path, device="cpu", overwrite=True).meta["teacher"] != ""
    seen = []
    fake = SimpleNamespace(arrays={}, path=path, nbytes=0)
    monkeypatch.setattr(build_module, "build_from_recipe", lambda *a, **kw: seen.append(kw["overwrite"]) or fake)
    build_module.main(["--config", "recipe.yaml"])
    build_module.main(["--config", "recipe.yaml", "--overwrite"])
    assert seen == [False, True]

"""A published model carries its sha256 (``model.ckpt.sha256``, ``sha256sum`` format); every read of it compares
the bytes first, so a file changed or damaged since it was published is refused by name instead of loading."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import zipfile

import lightning as L
import pytest
import torch

from lightning_kd import ClassificationModule, Teacher
from lightning_kd.callbacks import RunCheckpoint
from lightning_kd.core.digest import check_manifest, write_manifest
from lightning_kd.data import DigitsDataModule
from tests.helpers import make_teacher


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    L.Trainer(
        accelerator="cpu", max_epochs=1, limit_train_batches=2, limit_val_batches=1, logger=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=root, callbacks=[RunCheckpoint()],
    ).fit(ClassificationModule(make_teacher()), DigitsDataModule(batch_size=32))  # fmt: skip
    return root / "model.ckpt"


def _copy(published, tmp_path):
    for name in ("model.ckpt", "model.ckpt.sha256"):
        shutil.copy(published.parent / name, tmp_path / name)
    return tmp_path / "model.ckpt"


def _flip_a_weight_bit(ckpt):
    """One bit in the middle of the largest tensor's bytes: the file still loads, with another weight."""
    with zipfile.ZipFile(ckpt) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    data = bytearray(ckpt.read_bytes())
    header = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[header + info.file_size // 2] ^= 0x10
    ckpt.write_bytes(bytes(data))


def test_the_published_model_has_its_sha256_beside_it(published):
    line = (published.parent / "model.ckpt.sha256").read_text()
    assert line == f"{hashlib.sha256(published.read_bytes()).hexdigest()}  model.ckpt\n"
    if shutil.which("sha256sum"):
        done = subprocess.run(["sha256sum", "-c", "model.ckpt.sha256"], cwd=published.parent, capture_output=True)
        assert done.returncode == 0, done.stdout


def test_a_flipped_bit_in_a_published_model_is_refused_and_loads_once_the_record_is_removed(published, tmp_path):
    ckpt = _copy(published, tmp_path)
    _flip_a_weight_bit(ckpt)
    with pytest.raises(ValueError) as err:
        Teacher(make_teacher(), ckpt=str(ckpt))
    message = str(err.value)
    assert message.startswith(f"teacher_ckpt {str(ckpt)!r} is not the file that was published: its sha256 is ")
    assert "model.ckpt.sha256 recorded" in message and "delete model.ckpt.sha256" in message
    (tmp_path / "model.ckpt.sha256").unlink()
    loaded = Teacher(make_teacher(), ckpt=str(ckpt)).model.state_dict()
    original = Teacher(make_teacher(), ckpt=str(published)).model.state_dict()
    assert sum(not torch.equal(loaded[k], original[k]) for k in original) == 1  # the flipped bit went in


def test_a_record_naming_another_file_says_the_pair_was_split(published, tmp_path):
    ckpt = _copy(published, tmp_path)
    (tmp_path / "model.ckpt.sha256").write_text(f"{'0' * 64}  other.ckpt\n")
    with pytest.raises(ValueError, match=r"does not name it \(it names \['other.ckpt'\]\)"):
        Teacher(make_teacher(), ckpt=str(ckpt))


def test_a_folder_manifest_names_missing_and_changed_files(tmp_path):
    for name in ("config.json", "model.safetensors", "sub/adapter.bin"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(name)
    write_manifest(tmp_path, ["config.json", "model.safetensors", "sub/adapter.bin"])
    check_manifest(tmp_path, "the model folder")  # untouched: passes
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "sub/adapter.bin").unlink()
    with pytest.raises(ValueError) as err:
        check_manifest(tmp_path, "the model folder")
    assert str(err.value).startswith(
        f"the model folder {str(tmp_path)!r} is not the folder that was saved (missing: sub/adapter.bin; changed or "
        "damaged: config.json; SHA256SUMS recorded every file's sha256 when it was written)."
    )

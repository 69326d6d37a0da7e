"""A run never publishes its model over something it reads (its teacher's checkpoint, a cache or store) nor over a
model another recipe published, unless asked; it is refused before it trains, and the files stay byte-identical."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from lightning_kd import CachedTeacher, ClassificationModule, DistillationModule
from lightning_kd.callbacks import RunCheckpoint
from lightning_kd.data import DigitsDataModule
from tests.helpers import make_student, make_teacher, untouched


def _fit(module, root, **checkpoint) -> L.Trainer:
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=1, limit_train_batches=2, limit_val_batches=1, logger=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=root,
        callbacks=[RunCheckpoint(**checkpoint)],
    )  # fmt: skip
    trainer.fit(module, DigitsDataModule(batch_size=32, with_indices=True))
    return trainer


@pytest.fixture
def teacher_run(tmp_path):
    root = tmp_path / "teacher"
    _fit(ClassificationModule(make_teacher()), root)
    assert (root / "model.ckpt").is_file()
    return root


def test_a_kd_run_in_its_teachers_folder_is_refused_before_it_trains(teacher_run):
    module = DistillationModule(make_teacher(), make_student(), teacher_ckpt=str(teacher_run / "model.ckpt"))
    with untouched(teacher_run / "model.ckpt"), pytest.raises(ValueError) as info:
        _fit(module, teacher_run)
    message = str(info.value)
    assert "would publish its model to" in message and "the teacher's checkpoint" in message
    assert "trainer.default_root_dir" in message and module.global_step == 0


def test_a_run_inside_the_cache_it_reads_is_refused(tmp_path, teacher_run):
    from lightning_kd.cache import build_teacher_cache

    teacher = make_teacher()
    cache = tmp_path / "cache"
    build_teacher_cache(teacher, DigitsDataModule(batch_size=32, with_indices=True), cache, epochs=1, device="cpu")
    module = DistillationModule(CachedTeacher(str(cache), model=teacher), make_student())
    with untouched(cache), pytest.raises(ValueError, match=r"which is the teacher cache \(.*cache\) that it reads"):
        _fit(module, cache / "run")


def test_another_recipes_model_is_kept_unless_asked_and_a_rerun_replaces_its_own(tmp_path, teacher_run):
    kd = DistillationModule(make_teacher(), make_student(), teacher_ckpt=str(teacher_run / "model.ckpt"))
    kd.save_hyperparameters({"student": {"class_path": "lightning_kd.models.MLP", "init_args": {"hidden": [16]}}})
    root = tmp_path / "kd"
    _fit(kd, root)
    published = root / "model.ckpt"
    before = published.read_bytes()
    # the same recipe again (another seed of the student is the same recipe): it republishes
    again = DistillationModule(make_teacher(), make_student(), teacher_ckpt=str(teacher_run / "model.ckpt"))
    again.save_hyperparameters(
        {"student": {"class_path": "lightning_kd.models.MLP", "init_args": {"hidden": [16], "seed": 1}}}
    )
    _fit(again, root)
    assert published.read_bytes() != before
    # another module class in the same folder: refused, then allowed when asked
    other = ClassificationModule(make_student())
    with untouched(published), pytest.raises(ValueError, match=r"another recipe published \(a DistillationModule"):
        _fit(other, root)
    _fit(ClassificationModule(make_student()), root, replace_other=True)
    assert torch.load(published, weights_only=True)["lightning_kd_module"].endswith("ClassificationModule")
    # another student network under the same module class: refused too
    wider = DistillationModule(make_teacher(), make_student(), teacher_ckpt=str(teacher_run / "model.ckpt"))
    wider.save_hyperparameters({"student": {"class_path": "lightning_kd.models.MLP", "init_args": {"hidden": [64]}}})
    _fit(kd, tmp_path / "kd3")
    with pytest.raises(ValueError, match=r"its student was MLP\(hidden=\[16\]\), this run's is MLP\(hidden=\[64\]\)"):
        _fit(wider, tmp_path / "kd3")

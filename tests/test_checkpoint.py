"""Checkpoints leave the teacher out, yet resume and load_from_checkpoint give a usable student."""

from __future__ import annotations

import torch
from conftest import make_student, make_teacher
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_kd import DistillationModule


def _fit(module, digits, trainer_factory, tmp_path, epochs, ckpt_path=None, **kw):
    cb = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="last", enable_version_counter=False)
    trainer = trainer_factory(max_epochs=epochs, callbacks=[cb], enable_checkpointing=True, limit_val_batches=1, **kw)
    trainer.fit(module, digits, ckpt_path=ckpt_path)
    return trainer, tmp_path / "ckpt" / "last.ckpt"


def test_checkpoint_has_no_teacher_keys_and_resumes(digits, trainer_factory, tmp_path):
    teacher = make_teacher()
    module = DistillationModule(teacher, make_student())
    trainer, path = _fit(module, digits, trainer_factory, tmp_path, epochs=1, limit_train_batches=4)
    ckpt = torch.load(path, weights_only=False)
    assert not [k for k in ckpt["state_dict"] if k.startswith("teacher.")]
    assert any(k.startswith("student.") for k in ckpt["state_dict"])
    teacher_size = sum(p.numel() for p in teacher.parameters()) * 4
    student_size = sum(p.numel() for p in module.student.parameters()) * 4
    assert path.stat().st_size < teacher_size + 3 * student_size + 200_000

    # resume into a fresh module whose teacher is the same trained teacher
    resumed = DistillationModule(teacher, make_student())
    trainer2, _ = _fit(
        resumed, digits, trainer_factory, tmp_path / "r", epochs=2, ckpt_path=path, limit_train_batches=4
    )
    assert trainer2.global_step == 8
    for k, v in teacher.state_dict().items():
        assert torch.equal(resumed.teacher.state_dict()[k], v)


def test_load_from_checkpoint_gives_the_trained_student(digits, trainer_factory, tmp_path):
    module = DistillationModule(make_teacher(), make_student())
    _, path = _fit(module, digits, trainer_factory, tmp_path, epochs=1, limit_train_batches=3)
    loaded = DistillationModule.load_from_checkpoint(path, teacher=make_teacher(), student=make_student())
    x = torch.randn(5, 1, 8, 8)
    module.eval()
    loaded.eval()
    torch.testing.assert_close(loaded(x), module(x))
    assert loaded.temperature == 4.0 and "teacher" not in loaded.hparams


def test_save_teacher_option_keeps_teacher_weights(digits, trainer_factory, tmp_path):
    module = DistillationModule(make_teacher(), make_student(), save_teacher=True)
    _, path = _fit(module, digits, trainer_factory, tmp_path, epochs=1, limit_train_batches=2)
    state = torch.load(path, weights_only=False)["state_dict"]
    for k, v in module.teacher.state_dict().items():
        assert torch.equal(state[f"teacher.{k}"], v)

"""Checkpoints leave the teacher out, yet resume and load_from_checkpoint give a usable student."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_kd import DistillationModule, Teacher
from tests.helpers import make_student, make_teacher


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
        assert torch.equal(resumed.teacher.model.state_dict()[k], v)


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
    module = DistillationModule(Teacher(make_teacher(), save_weights=True), make_student())
    _, path = _fit(module, digits, trainer_factory, tmp_path, epochs=1, limit_train_batches=2)
    state = torch.load(path, weights_only=False)["state_dict"]
    for k, v in module.teacher.model.state_dict().items():
        assert torch.equal(state[f"teacher.model.{k}"], v)


def test_connectors_come_back_from_the_terms_extra_state(digits, trainer_factory, tmp_path):
    from lightning_kd import FeatureTerm
    from lightning_kd.losses import FitNetLoss
    from lightning_kd.models import SmallCNN

    def term():
        return FeatureTerm("hint", FitNetLoss(), ["block2"], ["block2"], connector=True)

    module = DistillationModule(make_teacher(), SmallCNN(1, 10, (4, 8, 8)), feature_terms=[term()])
    _, path = _fit(module, digits, trainer_factory, tmp_path, epochs=1, limit_train_batches=2)
    saved = torch.load(path, weights_only=True)
    assert saved["state_dict"]["feature_terms.0._extra_state"]["connector_shapes"] == [[[2, 8, 4, 4], [2, 16, 4, 4]]]
    loaded = DistillationModule.load_from_checkpoint(
        path, teacher=make_teacher(), student=SmallCNN(1, 10, (4, 8, 8)), feature_terms=[term()]
    )
    x = torch.randn(4, 1, 8, 8)
    module.eval(), loaded.eval()
    torch.testing.assert_close(loaded(x), module(x))
    conn, conn_loaded = module.feature_terms[0].connectors[0], loaded.feature_terms[0].connectors[0]
    torch.testing.assert_close(conn_loaded.proj[0].weight, conn.proj[0].weight)


def test_resuming_from_an_epoch_end_continues_exactly(digits, trainer_factory, tmp_path):
    """The training order is a function of (seed, epoch): epoch 2 of a resumed run is epoch 2 of a straight run."""
    from lightning_kd.data import DigitsDataModule

    def run(epochs, ckpt_path=None, folder="a"):
        L.seed_everything(0)
        module = DistillationModule(make_teacher(), make_student())
        cb = ModelCheckpoint(dirpath=tmp_path / folder, filename="last", enable_version_counter=False)
        trainer = trainer_factory(
            max_epochs=epochs, callbacks=[cb], enable_checkpointing=True, limit_val_batches=0, limit_train_batches=6
        )
        trainer.fit(module, DigitsDataModule(batch_size=32), ckpt_path=ckpt_path)
        return module

    straight = run(2, folder="straight")
    run(1, folder="first")
    resumed = run(2, ckpt_path=tmp_path / "first" / "last.ckpt", folder="resumed")
    for k, v in straight.student.state_dict().items():
        torch.testing.assert_close(resumed.student.state_dict()[k], v, rtol=0, atol=0)


def test_last_ckpt_is_the_latest_epoch_even_when_the_monitor_stalls(digits, trainer_factory, tmp_path):
    """ModelCheckpoint rewrites last.ckpt only when it writes a top-k one; RunCheckpoint writes it every epoch."""
    from functools import partial

    from lightning_kd.callbacks import RunCheckpoint

    module = DistillationModule(make_teacher(), make_student(), optimizer=partial(torch.optim.SGD, lr=0.0))
    cb = RunCheckpoint(dirpath=str(tmp_path / "ckpt"), publish_to=None)
    trainer = trainer_factory(
        max_epochs=3, callbacks=[cb], enable_checkpointing=True, limit_train_batches=2, limit_val_batches=1
    )
    trainer.fit(module, digits)
    epoch = {n: torch.load(tmp_path / "ckpt" / f"{n}.ckpt", weights_only=True)["epoch"] for n in ("best", "last")}
    assert epoch == {"best": 0, "last": 2}  # lr 0: val/acc never improves after epoch 0


def test_ctrl_c_says_where_last_ckpt_is_and_how_to_resume(digits, trainer_factory, tmp_path, caplog):
    from lightning_kd.callbacks import RunCheckpoint

    class CtrlC(L.Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step >= 3:
                raise KeyboardInterrupt

    cb = RunCheckpoint(dirpath=str(tmp_path / "ckpt"), publish_to=None)
    trainer = trainer_factory(
        max_epochs=3, callbacks=[cb, CtrlC()], enable_checkpointing=True, limit_train_batches=2, limit_val_batches=1
    )
    with caplog.at_level("INFO"), pytest.raises(SystemExit):
        trainer.fit(DistillationModule(make_teacher(), make_student()), digits)
    last = tmp_path / "ckpt" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 3
    assert f"interrupted at step 3 (epoch 1); the run's state is saved in {last}: resume with" in caplog.text
    assert f"--ckpt_path {last}" in caplog.text


def test_load_from_checkpoint_into_another_class_names_the_class_to_use(digits, trainer_factory, tmp_path):
    from lightning_kd import ClassificationModule

    _, path = _fit(DistillationModule(make_teacher(), make_student()), digits, trainer_factory, tmp_path, epochs=1)
    with pytest.raises(
        ValueError,
        match=rf"checkpoint '{path}' was written by DistillationModule .* cannot be loaded into ClassificationModule: "
        r"load it with DistillationModule\.load_from_checkpoint",
    ):
        ClassificationModule.load_from_checkpoint(path, model=make_student())


def test_resuming_with_another_value_says_how_to_keep_the_old_one():
    from lightning_kd.modules.checkpoint_checks import resumed_differences

    lines = resumed_differences({"temperature": 2.0, "alpha": 0.9}, {"temperature": 4.0, "alpha": 0.9})
    assert lines == [
        "resuming with temperature=2.0; the checkpoint was trained with temperature=4.0: to keep that, pass "
        "--model.init_args.temperature=4.0 (from Python: temperature=4.0)"
    ]

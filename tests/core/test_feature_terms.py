"""Feature terms inside DistillationModule: hooks, layer pairs, connectors, checkpoints, errors."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_kd import DistillationModule, FeatureTerm
from lightning_kd.callbacks import FeatureHooks
from lightning_kd.data import DigitsDataModule
from lightning_kd.losses import ATLoss, CRDLoss, FitNetLoss, RKDLoss, at_loss, fitnet_loss
from lightning_kd.models import SmallCNN
from tests.helpers import MemoryLogger, make_teacher


def cnn_student():
    return SmallCNN(1, 10, widths=(4, 8, 8))


def hooks_left(*models):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for model in models for m in model.modules())


def at_term():
    return FeatureTerm("at", ATLoss(), ["block1", "block3"], ["block1", "block3"], weight=100.0)


def fitnet_term():
    return FeatureTerm("hint", FitNetLoss(), ["block2"], ["block2"], weight=2.0, connector=True)


def test_feature_terms_train_log_and_leave_no_hooks(digits, trainer_factory):
    m = DistillationModule(make_teacher(), cnn_student(), feature_terms=[at_term(), fitnet_term()])
    assert m.loss_weights == pytest.approx({"ce": 0.1, "kd": 0.9, "at": 100.0, "hint": 2.0})
    logger = MemoryLogger()
    trainer = trainer_factory(
        max_epochs=1, limit_train_batches=3, limit_val_batches=1, logger=logger, log_every_n_steps=1
    )
    trainer.fit(m, digits)
    assert any(isinstance(cb, FeatureHooks) for cb in trainer.callbacks)  # added by the module itself
    assert {"train/loss_at", "train/loss_hint"} <= logger.keys()
    assert hooks_left(m.student, m.teacher.model) == 0
    # validate and test also run with the hooks, and clean up
    assert "val/acc" in trainer.validate(m, digits, verbose=False)[0]
    assert hooks_left(m.student, m.teacher.model) == 0


def test_step_loss_equals_the_weighted_terms_by_hand():
    torch.manual_seed(0)
    m = DistillationModule(make_teacher(), cnn_student(), alpha=0.5, feature_terms=[at_term(), fitnet_term()])
    m.trainer = None
    # build the connector by hand (setup() does this from a dry forward in a real fit)
    m.feature_terms[1].build_connectors([((2, 8, 4, 4), (2, 16, 4, 4))])
    x, y = torch.randn(6, 1, 8, 8), torch.randint(0, 10, (6,))
    m.feature_terms.attach()
    logged = {}
    m.log = lambda k, v, **kw: logged.__setitem__(k, v)
    loss = m.training_step((x, y), 0)
    # the same numbers from the parts, computed without hooks
    s, t = m.student, m.teacher.model
    s1 = s.block1(x)
    s2 = s.block2(s.pool1(s1))
    s3 = s.block3(s.pool2(s2))
    with torch.no_grad():
        t1 = t.block1(x)
        t2 = t.block2(t.pool1(t1))
        t3 = t.block3(t.pool2(t2))
    at = at_loss(s1, t1) + at_loss(s3, t3)
    hint = fitnet_loss(m.feature_terms[1].connectors[0](s2), t2)
    torch.testing.assert_close(logged["train/loss_at"], at)
    torch.testing.assert_close(logged["train/loss_hint"], hint)
    expected = 0.5 * logged["train/loss_ce"] + 0.5 * logged["train/loss_kd"] + 100.0 * at + 2.0 * hint
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert all(p.grad is None for p in m.teacher.parameters())
    assert all(p.grad is not None for p in m.feature_terms[1].connectors.parameters())


def test_connectors_are_built_before_the_optimizer_and_saved(digits, trainer_factory, tmp_path):
    m = DistillationModule(make_teacher(), cnn_student(), feature_terms=[fitnet_term()])
    assert len(m.feature_terms[0].connectors) == 0
    ckpt = ModelCheckpoint(dirpath=tmp_path, filename="last", enable_version_counter=False)
    trainer = trainer_factory(
        max_epochs=1, limit_train_batches=2, limit_val_batches=1, callbacks=[ckpt], enable_checkpointing=True
    )
    trainer.fit(m, digits)
    conn = m.feature_terms[0].connectors[0]
    assert conn.proj[0].weight.shape == (16, 8, 1, 1)  # student block2 has 8 channels, teacher block2 16
    opt_ids = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    assert {id(p) for p in conn.parameters()} <= opt_ids
    state = torch.load(tmp_path / "last.ckpt", weights_only=True)["state_dict"]
    assert "feature_terms.0.connectors.0.proj.0.weight" in state
    assert not [k for k in state if k.startswith("teacher.")]

    fresh = DistillationModule.load_from_checkpoint(
        tmp_path / "last.ckpt", teacher=make_teacher(), student=cnn_student(), feature_terms=[fitnet_term()]
    )
    torch.testing.assert_close(fresh.feature_terms[0].connectors[0].proj[0].weight, conn.proj[0].weight)


def test_shape_mismatch_without_connector_names_shapes_and_fix(digits, trainer_factory):
    term = FeatureTerm("hint", FitNetLoss(), ["block2"], ["block2"])
    m = DistillationModule(make_teacher(), cnn_student(), feature_terms=[term])
    with pytest.raises(
        ValueError, match=r"student 'block2' \(8, 4, 4\) ↔ teacher 'block2' \(16, 4, 4\).*connector: true"
    ):
        trainer_factory(max_epochs=1, limit_train_batches=1).fit(m, digits)
    assert hooks_left(m.student, m.teacher.model) == 0


def test_relation_terms_need_no_connector(digits, trainer_factory):
    term = FeatureTerm("rkd", RKDLoss(), [""], [""], weight=1.0)  # on the logits of both models
    m = DistillationModule(make_teacher(), cnn_student(), feature_terms=[term])
    logger = MemoryLogger()
    trainer_factory(max_epochs=1, limit_train_batches=2, limit_val_batches=0, logger=logger, log_every_n_steps=1).fit(
        m, digits
    )
    assert torch.isfinite(torch.tensor(logger.last("train/loss_rkd")))


def test_unknown_layer_fails_at_construction_with_close_names():
    term = FeatureTerm("at", ATLoss(), ["blok2"], ["block2"])
    with pytest.raises(ValueError, match=r"SmallCNN has no submodule 'blok2'; closest: \['block2'"):
        DistillationModule(make_teacher(), cnn_student(), feature_terms=[term])


def test_hooks_removed_after_an_exception(digits, trainer_factory):
    class Boom(L.Callback):
        def on_train_batch_end(self, *args):
            raise RuntimeError("boom")

    m = DistillationModule(make_teacher(), cnn_student(), feature_terms=[at_term()])
    with pytest.raises(RuntimeError, match="boom"):
        trainer_factory(max_epochs=1, limit_train_batches=2, callbacks=[Boom()]).fit(m, digits)
    assert hooks_left(m.student, m.teacher.model) == 0


def test_bad_terms():
    with pytest.raises(ValueError, match="2 student layers but 1 teacher layers"):
        FeatureTerm("at", ATLoss(), ["a", "b"], ["c"])
    with pytest.raises(ValueError, match="must be a Python identifier other than 'ce'/'kd'"):
        FeatureTerm("kd", ATLoss(), ["a"], ["b"])
    with pytest.raises(ValueError, match="layers are lists of paths"):
        FeatureTerm("at", ATLoss(), "block1", ["b"])
    with pytest.raises(ValueError, match="feature term names must be unique"):
        DistillationModule(make_teacher(), cnn_student(), feature_terms=[at_term(), at_term()])


def crd_term():
    # SmallCNN "pool" outputs (N, C, 1, 1): 32 values for the teacher, 8 for the student; 1258 training digits
    loss = CRDLoss(student_dim=8, teacher_dim=32, n_data=1258, feat_dim=16, num_negatives=64)
    return FeatureTerm("crd", loss, ["pool"], ["pool"], weight=0.8)


def test_crd_term_gets_sample_indices_and_updates_its_memory(trainer_factory):
    m = DistillationModule(make_teacher(), cnn_student(), alpha=0.0, feature_terms=[crd_term()])
    memory = m.feature_terms[0].losses[0].memory
    bank_before = memory.bank_s.clone()
    data = DigitsDataModule(batch_size=64, with_indices=True)
    logger = MemoryLogger()
    trainer_factory(max_epochs=1, limit_train_batches=3, limit_val_batches=1, logger=logger, log_every_n_steps=1).fit(
        m, data
    )
    changed = (memory.bank_s != bank_before).any(dim=1).nonzero().flatten()
    assert len(changed) == 3 * 64  # exactly the rows of the samples seen in 3 batches
    assert memory.z_s.item() > 0
    assert "train/loss_crd" in logger.keys()


def test_crd_without_indices_says_how_to_fix(digits, trainer_factory):
    m = DistillationModule(make_teacher(), cnn_student(), feature_terms=[crd_term()])
    with pytest.raises(ValueError, match="needs each sample's dataset index: set with_indices: true"):
        trainer_factory(max_epochs=1, limit_train_batches=1).fit(m, digits)


def test_setup_dry_run_keeps_a_users_frozen_submodule_in_eval(digits, trainer_factory):
    student = cnn_student()
    student.block1[1].eval()  # e.g. a BatchNorm the user froze

    class Look(L.Callback):
        def on_train_start(self, trainer, pl_module):
            self.frozen = pl_module.student.block1[1].training

    look = Look()
    m = DistillationModule(make_teacher(), student, feature_terms=[fitnet_term()])  # a connector: a dry run
    trainer_factory(max_epochs=1, limit_train_batches=1, limit_val_batches=0, callbacks=[look]).fit(m, digits)
    assert look.frozen is False


def test_hooks_store_nothing_outside_training_steps(digits, trainer_factory):
    """Validation forwards run with the hooks attached but clone nothing: no term reads features there."""

    class Look(L.Callback):
        def __init__(self):
            self.train, self.val = [], []

        def on_train_batch_end(self, trainer, pl_module, *args):
            self.train.append(sum(len(pl_module.feature_terms.features(s)) for s in ("student", "teacher")))

        def on_validation_batch_end(self, trainer, pl_module, *args):
            self.val.append(
                (pl_module.feature_terms.attached, len(pl_module.feature_terms.features("student", "output")))
            )

        def on_validation_batch_start(self, trainer, pl_module, *args):
            for side in ("student", "teacher"):
                pl_module.feature_terms.features(side).clear()  # whatever the last training step left

    m = DistillationModule(make_teacher(), cnn_student(), feature_terms=[at_term()])
    look = Look()
    trainer_factory(max_epochs=1, limit_train_batches=2, limit_val_batches=2, callbacks=[look]).fit(m, digits)
    assert look.train == [4, 4]  # block1 + block3 of each model, every training step
    assert look.val and all(attached and n == 0 for attached, n in look.val)


def test_a_term_can_name_the_teacher_whose_layers_it_reads(digits, trainer_factory):
    from lightning_kd import MultiTeacherDistillation

    small, big = SmallCNN(1, 10, (8, 16, 32)), SmallCNN(1, 10, (8, 24, 32))
    term = FeatureTerm("hint", FitNetLoss(), ["block2"], ["block2"], connector=True, teacher=1)
    m = MultiTeacherDistillation([small, big], cnn_student(), feature_terms=[term])
    trainer_factory(max_epochs=1, limit_train_batches=2, limit_val_batches=0).fit(m, digits)
    assert m.feature_terms[0].connectors[0].proj[0].weight.shape == (24, 8, 1, 1)  # sized to teacher 1's block2
    with pytest.raises(ValueError, match="names teacher 2, but the module has 2 teacher network"):
        MultiTeacherDistillation([small, big], cnn_student(), feature_terms=[hint_on(2)])


def hint_on(teacher: int) -> FeatureTerm:
    return FeatureTerm("hint", FitNetLoss(), ["block2"], ["block2"], connector=True, teacher=teacher)


def test_connectors_need_an_example_batch_without_a_datamodule(digits, trainer_factory):
    digits.setup()
    loader = digits.train_dataloader()
    m = DistillationModule(make_teacher(), cnn_student(), feature_terms=[fitnet_term()])
    with pytest.raises(RuntimeError, match="set module.example_input_array to a batch of inputs"):
        trainer_factory(max_epochs=1, limit_train_batches=1).fit(m, train_dataloaders=loader)
    m.example_input_array = torch.randn(2, 1, 8, 8)  # the public way to give one
    trainer_factory(max_epochs=1, limit_train_batches=1, limit_val_batches=0).fit(m, train_dataloaders=loader)
    assert m.feature_terms[0].connectors[0].proj[0].weight.shape == (16, 8, 1, 1)

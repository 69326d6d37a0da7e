"""DistillationModule: the frozen teacher stays untouched, the loss is what it says, bad input is refused."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from lightning_kd import ClassificationModule, DistillationModule, Teacher
from lightning_kd.core.batch import Batch
from lightning_kd.losses import kd_loss
from lightning_kd.models import MLP
from tests.helpers import make_student, make_teacher


class TeacherWatch(L.Callback):
    """Records the teacher's mode and grads at every point a user's code could have flipped them."""

    def __init__(self):
        self.modes: list[bool] = []
        self.grads: list[bool] = []

    def _look(self, pl_module):
        self.modes.append(any(m.training for m in pl_module.teacher.modules()))
        self.grads.append(any(p.grad is not None for p in pl_module.teacher.parameters()))

    def on_train_batch_start(self, trainer, pl_module, *args):
        self._look(pl_module)

    def on_train_batch_end(self, trainer, pl_module, *args):
        self._look(pl_module)

    def on_validation_end(self, trainer, pl_module):
        self._look(pl_module)


class CallsTrain(DistillationModule):
    def on_validation_model_train(self):
        super().on_validation_model_train()
        self.train()  # what a user's hook calling .train() does


def test_teacher_bit_identical_frozen_and_out_of_optimizer(digits, trainer_factory):
    teacher = make_teacher()
    # give BN non-trivial running stats, so an accidental train-mode pass would change them
    teacher.train()
    with torch.no_grad():
        teacher(torch.randn(32, 1, 8, 8))
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    module = CallsTrain(teacher, make_student())
    watch = TeacherWatch()
    trainer = trainer_factory(max_epochs=2, callbacks=[watch], limit_train_batches=5, limit_val_batches=2)
    trainer.fit(module, digits)

    after = module.teacher.model.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), f"teacher tensor {k} changed"
    assert watch.modes and not any(watch.modes), "teacher was in train mode at some point"
    assert not any(watch.grads), "teacher parameters received gradients"
    assert all(not p.requires_grad for p in module.teacher.parameters())
    opt_params = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    assert opt_params == {id(p) for p in module.student.parameters()}
    assert not opt_params & {id(p) for p in module.teacher.parameters()}


def test_train_keeps_teacher_in_eval_unless_asked():
    m = DistillationModule(make_teacher(), make_student())
    m.train()
    assert m.student.training and not m.teacher.training
    m2 = DistillationModule(Teacher(make_teacher(), eval_mode=False), make_student())
    m2.train()
    assert m2.teacher.training


def test_training_step_loss_is_weighted_sum_of_ce_and_kd():
    torch.manual_seed(0)
    m = DistillationModule(make_teacher(), make_student(), temperature=3.0, alpha=0.7)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    logged = {}
    m.log = lambda name, value, **kw: logged.__setitem__(name, value)
    loss = m.training_step((x, y), 0)
    with torch.no_grad():
        s, t = m.student(x), m.teacher.model(x)
    expected = 0.3 * F.cross_entropy(s, y) + 0.7 * kd_loss(s, t, 3.0)
    torch.testing.assert_close(loss, expected)
    assert set(logged) == {"train/loss", "train/loss_ce", "train/loss_kd", "train/temperature", "train/alpha"}
    assert logged["train/temperature"] == 3.0
    loss.backward()
    assert all(p.grad is None for p in m.teacher.parameters())
    assert all(p.grad is not None for p in m.student.parameters())


def test_validation_logs_student_and_teacher_accuracy(digits, trainer_factory):
    m = DistillationModule(make_teacher(), make_student())
    res = trainer_factory().validate(m, digits, verbose=False)[0]
    assert {"val/acc", "val/teacher_acc", "val/loss"} <= set(res)
    # the same accuracies computed by hand over the whole validation split
    x, y = digits.splits["val"].images, digits.splits["val"].labels
    with torch.no_grad():
        teacher_acc = (m.teacher.model(x).argmax(-1) == y).float().mean().item()
        student_acc = (m.student(x).argmax(-1) == y).float().mean().item()
    assert res["val/teacher_acc"] == pytest.approx(teacher_acc, abs=1e-6)
    assert res["val/acc"] == pytest.approx(student_acc, abs=1e-6)


def test_subclass_overrides_batch_unpacking_and_teacher_call(trainer_factory, digits):
    class DictTeacher(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = MLP(64, 10, (32,))
            self.num_classes = 10

        def forward(self, x):
            return {"logits": self.net(x)}

    class MyKD(DistillationModule):
        def unpack_batch(self, batch):
            x, y = batch[0], batch[1]
            return Batch(x * 2.0, y)

    torch.manual_seed(0)  # fixed weights: the doubled-vs-plain check below is deterministic
    m = MyKD(DictTeacher(), make_student())
    trainer_factory(max_epochs=1, limit_train_batches=3, limit_val_batches=1).fit(m, digits)
    res = trainer_factory().validate(m, digits, verbose=False)[0]
    # the override is in force and the teacher's dict output is read without one: on the doubled inputs
    x, y = digits.splits["val"].images, digits.splits["val"].labels
    with torch.no_grad():
        on_doubled = (m.teacher.model(x * 2.0)["logits"].argmax(-1) == y).float().mean().item()
        on_plain = (m.teacher.model(x)["logits"].argmax(-1) == y).float().mean().item()
    assert res["val/teacher_acc"] == pytest.approx(on_doubled, abs=1e-6)
    assert on_doubled != on_plain  # otherwise the check above could not tell the two apart


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="teacher predicts 10 classes but student predicts 7"):
        DistillationModule(make_teacher(), MLP(64, 7))
    with pytest.raises(ValueError, match="temperature must be a finite number > 0, got 0"):
        DistillationModule(make_teacher(), make_student(), temperature=0.0)
    for a in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
            DistillationModule(make_teacher(), make_student(), alpha=a)
    with pytest.raises(FileNotFoundError, match="teacher_ckpt .*nope.ckpt' does not exist"):
        DistillationModule(make_teacher(), make_student(), teacher_ckpt=str(tmp_path / "nope.ckpt"))
    with pytest.raises(ValueError, match=r"scheduler_interval must be .*; use 'step' to step the scheduler"):
        DistillationModule(make_teacher(), make_student(), scheduler_interval="hourly")
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\].*got 1\.5; set it between 0 .*e\.g\. alpha=0\.9"):
        DistillationModule(make_teacher(), make_student(), alpha=1.5)
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\), got 1\.0; use a value below 1"):
        ClassificationModule(make_student(), label_smoothing=1.0)


def test_teacher_ckpt_that_does_not_fit_names_keys(tmp_path):
    path = tmp_path / "wrong.pt"
    torch.save(MLP(64, 10, (32,)).state_dict(), path)
    with pytest.raises(ValueError, match=r"does not match the teacher SmallCNN: .*missing \(e\.g\. block1\.0\.weight"):
        DistillationModule(make_teacher(), make_student(), teacher_ckpt=str(path))
    wider = tmp_path / "wider.pt"
    from lightning_kd.models import SmallCNN

    torch.save(SmallCNN(1, 10, (8, 16, 64)).state_dict(), wider)
    with pytest.raises(ValueError, match=r"with another shape \(e\.g\. block3\.0\.weight: file \(64, 16, 3, 3\)"):
        DistillationModule(make_teacher(), make_student(), teacher_ckpt=str(wider))


@pytest.mark.parametrize("prefix", ["", "module.", "model._orig_mod.", "student."])
def test_teacher_ckpt_plain_state_dict_with_prefixes(tmp_path, prefix):
    src = make_teacher()
    path = tmp_path / "t.pt"
    torch.save({prefix + k: v for k, v in src.state_dict().items()}, path)
    m = DistillationModule(make_teacher(), make_student(), teacher_ckpt=str(path))
    for k, v in src.state_dict().items():
        assert torch.equal(m.teacher.model.state_dict()[k], v)


def test_teacher_ckpt_from_classification_module(tmp_path, digits, trainer_factory):
    cls = ClassificationModule(make_teacher())
    trainer = trainer_factory(max_epochs=1, limit_train_batches=3, limit_val_batches=1)
    trainer.fit(cls, digits)
    path = tmp_path / "teacher.ckpt"
    trainer.save_checkpoint(path)
    m = DistillationModule(make_teacher(), make_student(), teacher_ckpt=str(path))
    x = torch.randn(4, 1, 8, 8)
    cls.eval()
    torch.testing.assert_close(m.teacher(x).logits, cls(x))


def test_temperature_and_alpha_setters_validate():
    m = DistillationModule(make_teacher(), make_student())
    m.temperature = 2.5
    assert m.temperature == 2.5 and not hasattr(m.loss_terms["kd"], "temperature")  # one owner: the module
    m.alpha = 0.25
    assert m.loss_weights == {"ce": 0.75, "kd": 0.25}
    with pytest.raises(ValueError):
        m.temperature = -1.0
    with pytest.raises(ValueError):
        m.alpha = 2.0


def test_distill_loss_can_be_swapped_for_dkd_and_follows_temperature():
    from lightning_kd.losses import DKDLoss, JSKDLoss, dkd_loss, js_kd_loss

    torch.manual_seed(0)
    m = DistillationModule(make_teacher(), make_student(), distill_loss=DKDLoss(alpha=1.0, beta=8.0), alpha=0.5)
    m.temperature = 2.0  # what TemperatureScheduler does: the loss gets it with the next call
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    m.log = lambda *a, **k: None
    loss = m.training_step((x, y), 0)
    with torch.no_grad():
        s, t = m.student(x), m.teacher.model(x)
    expected = 0.5 * F.cross_entropy(s, y) + 0.5 * dkd_loss(s, t, y, alpha=1.0, beta=8.0, temperature=2.0)
    torch.testing.assert_close(loss, expected)

    m2 = DistillationModule(make_teacher(), make_student(), distill_loss=JSKDLoss(), alpha=1.0, temperature=3.0)
    m2.log = lambda *a, **k: None
    with torch.no_grad():
        s, t = m2.student(x), m2.teacher.model(x)
    torch.testing.assert_close(m2.training_step((x, y), 0), js_kd_loss(s, t, temperature=3.0))
    # a loss that takes no temperature (plain logit matching) is called without one
    mse = DistillationModule(make_teacher(), make_student(), distill_loss=torch.nn.MSELoss(), alpha=1.0)
    mse.log = lambda *a, **k: None
    with torch.no_grad():
        s, t = mse.student(x), mse.teacher.model(x)
    torch.testing.assert_close(mse.training_step((x, y), 0), F.mse_loss(s, t))


def test_checkpoint_with_a_custom_distill_loss_loads_weights_only(digits, trainer_factory, tmp_path):
    from lightning_kd.losses import DKDLoss

    m = DistillationModule(make_teacher(), make_student(), distill_loss=DKDLoss())
    trainer = trainer_factory(max_epochs=1, limit_train_batches=2, limit_val_batches=0)
    trainer.fit(m, digits)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    torch.load(tmp_path / "m.ckpt", weights_only=True)  # no pickled module in hparams
    back = DistillationModule.load_from_checkpoint(
        tmp_path / "m.ckpt", teacher=make_teacher(), student=make_student(), distill_loss=DKDLoss()
    )
    assert isinstance(back.loss_terms["kd"], DKDLoss)


def test_teacher_ckpt_keys_with_module_inside_a_name(tmp_path):
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.submodule = torch.nn.Linear(64, 10)
            self.num_classes = 10

        def forward(self, x):
            return self.submodule(x.flatten(1))

    src = Net()
    torch.save({f"module.{k}": v for k, v in src.state_dict().items()}, tmp_path / "ddp.pt")  # DDP-wrapped save
    m = DistillationModule(Net(), make_student(), teacher_ckpt=str(tmp_path / "ddp.pt"))
    torch.testing.assert_close(m.teacher.model.submodule.weight, src.submodule.weight)


def test_unfreeze_never_puts_the_teacher_in_the_optimizer():
    m = DistillationModule(make_teacher(), make_student())
    m.unfreeze()
    ids = {id(p) for p in m.trainable_parameters()}
    assert ids == {id(p) for p in m.student.parameters()}


def test_onecycle_with_total_steps_given_still_steps_per_batch(digits, trainer_factory):
    from functools import partial

    sched = partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.1, total_steps=100)
    m = DistillationModule(make_teacher(), make_student(), lr_scheduler=sched)
    trainer = trainer_factory(max_epochs=1, limit_train_batches=3, limit_val_batches=0)
    trainer.fit(m, digits)
    assert trainer.lr_scheduler_configs[0].interval == "step"
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == 3


def test_teacher_in_train_mode_keeps_its_bn_statistics_in_checkpoints(digits, trainer_factory, tmp_path):
    m = DistillationModule(Teacher(make_teacher(), eval_mode=False), make_student())
    trainer = trainer_factory(max_epochs=1, limit_train_batches=2, limit_val_batches=0)
    trainer.fit(m, digits)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    state = torch.load(tmp_path / "m.ckpt", weights_only=True)["state_dict"]
    torch.testing.assert_close(state["teacher.model.block1.1.running_mean"], m.teacher.model.block1[1].running_mean)
    assert "teacher.model.block1.0.weight" not in state  # parameters are still left out


def test_batch_protocol_reads_every_layout_once_and_names_the_fix():
    from lightning_kd.core.batch import unpack_batch

    x, y, i = torch.zeros(2, 3), torch.tensor([0, 1]), torch.tensor([5, 9])
    assert unpack_batch((x, y)) == Batch(x, y, None)
    assert unpack_batch([x, y, i]).index is i
    b = unpack_batch({"pixel_values": x, "labels": y, "index": i})
    assert b.inputs is x and b.targets is y and b.index is i
    assert unpack_batch(x) == Batch(x)  # bare inputs: predict
    with pytest.raises(ValueError, match=r"dict batch with keys \['text'\].*Override unpack_batch"):
        unpack_batch({"text": x})
    with pytest.raises(ValueError, match="a tuple of length 4.*Override unpack_batch"):
        unpack_batch((x, y, i, i))


def test_schemes_pass_the_common_arguments_by_name_and_a_typo_fails():
    from lightning_kd import AdversarialDistillation, MultiTeacherDistillation

    adv = AdversarialDistillation(make_teacher(), make_student(), adv_weight=0.3, temperature=2.0, alpha=0.5)
    assert (adv.adv_weight, adv.temperature, adv.alpha) == (0.3, 2.0, 0.5)
    with pytest.raises(TypeError, match="unexpected keyword argument 'temprature'"):
        AdversarialDistillation(make_teacher(), make_student(), temprature=2.0)
    with pytest.raises(TypeError, match="unexpected keyword argument 'alfa'"):
        MultiTeacherDistillation([make_teacher()], make_student(), alfa=0.5)
    with pytest.raises(ValueError, match="takes no 'distill_loss'"):
        MultiTeacherDistillation([make_teacher()], make_student(), distill_loss=torch.nn.MSELoss())


def test_a_teacher_component_carries_its_own_settings():
    t = Teacher(make_teacher(), eval_mode=False, save_weights=True)
    m = DistillationModule(t, make_student())
    assert m.teacher is t and m.teacher.save_weights and not m.teacher.eval_mode
    with pytest.raises(ValueError, match=r"set its checkpoint on the component itself \(ckpt: 'x.ckpt'\)"):
        DistillationModule(Teacher(make_teacher()), make_student(), teacher_ckpt="x.ckpt")
    with pytest.raises(TypeError, match="save_teacher"):
        DistillationModule(make_teacher(), make_student(), save_teacher=True)  # a setting of the component now


def test_hparams_hold_plain_values_only_from_python():
    m = DistillationModule(make_teacher(), make_student(), temperature=3.0)
    assert m.hparams["temperature"] == 3.0 and m.hparams["teacher_ckpt"] is None
    assert not {"teacher", "student", "optimizer"} & set(m.hparams)

"""MultiTeacherDistillation: reduces to Hinton KD, CA-MKD weights as in the paper, teachers stay frozen."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from lightning_kd import DistillationModule, MultiTeacherDistillation
from lightning_kd.losses import confidence_weights, kd_loss
from lightning_kd.models import MLP
from tests.helpers import make_student, make_teacher


def _batch(n: int = 16):
    torch.manual_seed(0)
    return torch.randn(n, 1, 8, 8), torch.randint(0, 10, (n,))


def _step(module, batch) -> tuple[torch.Tensor, dict]:
    logged = {}
    module.log = lambda name, value, **kw: logged.__setitem__(name, value)
    return module.training_step(batch, 0), logged


def _seasoned_teacher() -> torch.nn.Module:
    """A teacher whose BN running stats are not the defaults, so a train-mode pass would show."""
    teacher = make_teacher().train()
    with torch.no_grad():
        teacher(torch.randn(32, 1, 8, 8))
    return teacher


def test_identical_teachers_equal_single_teacher_kd():
    torch.manual_seed(0)
    teacher, student = make_teacher(), make_student()
    batch = _batch()
    single = DistillationModule(teacher, copy.deepcopy(student), temperature=3.0, alpha=0.7)
    expected, _ = _step(single, batch)
    for k in (1, 2, 3):
        multi = MultiTeacherDistillation(
            [copy.deepcopy(teacher) for _ in range(k)], copy.deepcopy(student), temperature=3.0, alpha=0.7
        )
        loss, logged = _step(multi, batch)
        torch.testing.assert_close(loss, expected)
        with torch.no_grad():
            s, t = student(batch[0]), teacher(batch[0])
        torch.testing.assert_close(logged["train/loss_kd"], kd_loss(s, t, 3.0))
        assert {"train/loss", "train/loss_ce", "train/loss_kd", "train/temperature"} <= set(logged)


def test_weighted_one_zero_is_kd_from_teacher_zero():
    torch.manual_seed(0)
    t0, t1, student = make_teacher(), make_teacher(), make_student()
    batch = _batch()
    m = MultiTeacherDistillation([t0, t1], student, weighting="weighted", teacher_weights=[3.0, 0.0], alpha=1.0)
    loss, _ = _step(m, batch)
    with torch.no_grad():
        s, logits0 = student(batch[0]), t0(batch[0])
    torch.testing.assert_close(loss, kd_loss(s, logits0, 4.0))
    assert m.teacher_weights.tolist() == [1.0, 0.0]  # normalised


def test_equal_weighting_averages_distributions_not_losses():
    torch.manual_seed(0)
    s, t = torch.randn(4, 5), torch.randn(2, 4, 5)
    m = MultiTeacherDistillation([MLP(3, 5), MLP(3, 5)], MLP(3, 5), temperature=2.0)
    p_mix = (F.softmax(t[0] / 2, -1) + F.softmax(t[1] / 2, -1)) / 2
    by_hand = (p_mix * (p_mix.log() - F.log_softmax(s / 2, -1))).sum(-1).mean() * 4
    torch.testing.assert_close(m.compute_kd(s, t, torch.zeros(4, dtype=torch.long)), by_hand)


def test_confidence_weights_by_hand():
    # two samples, three teachers, two classes; label 0 for both
    t = torch.tensor([[[2.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [1.0, 0.0]], [[0.0, 3.0], [0.0, 1.0]]])
    y = torch.tensor([0, 0])
    w = confidence_weights(t, y)
    for n in range(2):
        ce = [math.log1p(math.exp(t[k, n, 1].item() - t[k, n, 0].item())) for k in range(3)]  # −log p(y=0)
        soft = [math.exp(c) / sum(math.exp(d) for d in ce) for c in ce]
        for k in range(3):
            assert w[k, n].item() == pytest.approx((1 - soft[k]) / 2, abs=1e-6)
    torch.testing.assert_close(w.sum(0), torch.ones(2))
    assert w[0, 0] > w[1, 0] > w[2, 0]  # the teacher most sure of the label weighs most
    # two teachers: (1 − softmax(CE)) / 1 == softmax(−CE); one teacher: weight 1
    ce2 = torch.stack([F.cross_entropy(t[k], y, reduction="none") for k in (0, 2)])
    torch.testing.assert_close(confidence_weights(t[[0, 2]], y), (-ce2).softmax(0))
    torch.testing.assert_close(confidence_weights(t[:1], y), torch.ones(1, 2))


def test_confidence_loss_is_per_sample_weighted_kd():
    torch.manual_seed(0)
    teachers, student = [make_teacher(), make_teacher()], make_student()
    x, y = _batch()
    m = MultiTeacherDistillation(teachers, student, weighting="confidence", alpha=1.0, temperature=2.0)
    loss, logged = _step(m, (x, y))
    with torch.no_grad():
        s, ts = student(x), [t(x) for t in teachers]
    w = confidence_weights(torch.stack(ts), y)
    per_sample = [
        [kd_loss(s[n : n + 1], t[n : n + 1], 2.0) for n in range(len(y))] for t in ts
    ]  # KL of one sample each
    expected = sum(w[k, n] * per_sample[k][n] for k in range(2) for n in range(len(y))) / len(y)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(logged["train/teacher_weight_0"] + logged["train/teacher_weight_1"], torch.tensor(1.0))


def test_per_teacher_terms_logged_and_weighted():
    torch.manual_seed(0)
    teachers, student = [make_teacher(), make_teacher()], make_student()
    x, y = _batch()
    m = MultiTeacherDistillation(teachers, student, weighting="per_teacher", teacher_weights=[0.5, 2.0], alpha=0.6)
    loss, logged = _step(m, (x, y))
    with torch.no_grad():
        s, kd0, kd1 = student(x), kd_loss(student(x), teachers[0](x)), kd_loss(student(x), teachers[1](x))
    torch.testing.assert_close(logged["train/loss_kd_0"], kd0)
    torch.testing.assert_close(logged["train/loss_kd_1"], kd1)
    torch.testing.assert_close(loss, 0.4 * F.cross_entropy(s, y) + 0.6 * (0.5 * kd0 + 2.0 * kd1))
    assert m.teacher_weights.tolist() == [0.5, 2.0]  # not normalised


def test_teachers_bit_identical_frozen_out_of_optimizer_and_checkpoint(digits, trainer_factory, tmp_path):
    teachers = [_seasoned_teacher(), _seasoned_teacher()]
    before = [{k: v.clone() for k, v in t.state_dict().items()} for t in teachers]
    module = MultiTeacherDistillation(teachers, make_student(), weighting="confidence")
    trainer = trainer_factory(max_epochs=2, limit_train_batches=3, limit_val_batches=1)
    trainer.fit(module, digits)
    for teacher, state in zip(module.teachers, before):
        assert all(torch.equal(state[k], v) for k, v in teacher.state_dict().items())
        assert not any(m.training for m in teacher.modules())
        assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    opt_params = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    assert opt_params == {id(p) for p in module.student.parameters()}
    module.train()  # what a user's hook calling .train() does
    assert module.student.training and not any(m.training for m in module.teachers.modules())

    path = tmp_path / "multi.ckpt"
    trainer.save_checkpoint(path)
    state = torch.load(path, weights_only=True)["state_dict"]
    assert state and not [k for k in state if k.startswith("teacher.")]
    reloaded = MultiTeacherDistillation.load_from_checkpoint(
        path, teachers=[make_teacher(), make_teacher()], student=make_student()
    )
    torch.testing.assert_close(reloaded.student(torch.ones(2, 1, 8, 8)), module.student(torch.ones(2, 1, 8, 8)))
    # the distilled student teaches the next generation through the usual loader
    DistillationModule(make_student(), make_student(), teacher_ckpt=str(path))


def test_each_teacher_accuracy_logged(digits, trainer_factory):
    torch.manual_seed(0)
    m = MultiTeacherDistillation([make_teacher(), make_teacher(), make_teacher()], make_student())
    trainer = trainer_factory(limit_val_batches=2, limit_test_batches=2)
    val = trainer.validate(m, digits, verbose=False)[0]
    test = trainer.test(m, digits, verbose=False)[0]
    assert {"val/acc", "val/loss", "test/acc"} <= set(val) | set(test)
    for stage, res, loader in (("val", val, digits.val_dataloader()), ("test", test, digits.test_dataloader())):
        batches = list(itertools.islice(loader, 2))
        total = sum(len(y) for _, y in batches)
        for i, teacher in enumerate(m.teachers):
            with torch.no_grad():
                correct = sum((teacher(x).argmax(1) == y).sum().item() for x, y in batches)
            assert res[f"{stage}/teacher_acc_{i}"] == pytest.approx(correct / total)


def test_bad_inputs_raise_clear_errors(tmp_path):
    two = [make_teacher(), make_teacher()]
    with pytest.raises(ValueError, match=r"takes one teacher_weights entry per teacher \(2\), got teacher_weights=\[1"):
        MultiTeacherDistillation(two, make_student(), weighting="weighted", teacher_weights=[1.0])
    with pytest.raises(
        ValueError, match=r"takes one teacher_weights entry per teacher \(2\), got teacher_weights=None"
    ):
        MultiTeacherDistillation(two, make_student(), weighting="per_teacher")
    with pytest.raises(ValueError, match=r"teacher_weights must be finite, >= 0 and not all 0, got \[1.0, -0.5\]"):
        MultiTeacherDistillation(two, make_student(), weighting="weighted", teacher_weights=[1.0, -0.5])
    with pytest.raises(ValueError, match=r"weighting='equal' takes no teacher_weights"):
        MultiTeacherDistillation(two, make_student(), teacher_weights=[1.0, 1.0])
    with pytest.raises(ValueError, match="teacher 1 predicts 7 classes, student 10"):
        MultiTeacherDistillation([make_teacher(), MLP(64, 7)], make_student())
    with pytest.raises(ValueError, match="weighting must be equal, weighted, confidence or per_teacher; got 'max'"):
        MultiTeacherDistillation(two, make_student(), weighting="max")
    with pytest.raises(ValueError, match=r"need >= 1 teachers and one teacher_ckpts entry each, got 2 and \[None\]"):
        MultiTeacherDistillation(two, make_student(), teacher_ckpts=[None])
    with pytest.raises(ValueError, match="need >= 1 teachers"):
        MultiTeacherDistillation([], make_student())
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        MultiTeacherDistillation(two, make_student(), alpha=1.5)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0, got 0"):
        MultiTeacherDistillation(two, make_student(), temperature=0)
    with pytest.raises(FileNotFoundError, match="nope.ckpt' does not exist"):
        MultiTeacherDistillation(two, make_student(), teacher_ckpts=[None, str(tmp_path / "nope.ckpt")])

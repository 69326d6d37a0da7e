"""MutualLearning: every student learns, no teacher, one param group per student, the loss is DML's."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lightning_kd import DistillationModule, MutualLearning
from lightning_kd.losses import dml_losses
from lightning_kd.models import MLP, SmallCNN
from tests.helpers import make_student


def _cohort(n: int) -> list[torch.nn.Module]:
    torch.manual_seed(0)
    return [make_student() if i % 2 == 0 else SmallCNN(1, 10, widths=(4, 8, 8)) for i in range(n)]


def _kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) per row, averaged over rows, from the definition."""
    return (p * (p.log() - q.log())).sum(-1).mean()


@pytest.mark.parametrize("n", [2, 3])
def test_fit_trains_every_student_with_one_param_group_each(n, digits, trainer_factory):
    module = MutualLearning(_cohort(n))
    before = [[p.detach().clone() for p in s.parameters()] for s in module.students]
    trainer = trainer_factory(max_epochs=1, limit_train_batches=3, limit_val_batches=1)
    trainer.fit(module, digits)
    for i, student in enumerate(module.students):
        assert all(not torch.equal(a, b) for a, b in zip(before[i], student.parameters())), f"student {i} idle"
    groups = trainer.optimizers[0].param_groups
    assert len(trainer.optimizers) == 1 and len(groups) == n
    for group, student in zip(groups, module.students):
        assert [id(p) for p in group["params"]] == [id(p) for p in student.parameters()]
    assert sum(len(g["params"]) for g in groups) == len(list(module.parameters()))
    # no teacher anywhere: nothing frozen, no teacher attribute
    assert not hasattr(module, "teacher") and not hasattr(module, "teachers")
    assert all(p.requires_grad for p in module.parameters())
    res = trainer.validate(module, digits, verbose=False)[0]
    accs = [res[f"val/acc_{i}"] for i in range(n)]
    assert res["val/acc"] == pytest.approx(sum(accs) / n)


def test_loss_is_the_dml_formula_by_hand():
    torch.manual_seed(0)
    module = MutualLearning(_cohort(3), temperature=2.0, kl_weight=0.5)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    logged = {}
    module.log = lambda name, value, **kw: logged.__setitem__(name, value)
    loss = module.training_step((x, y), 0)
    with torch.no_grad():
        z = [s(x) for s in module.students]
    p = [F.softmax(zi / 2.0, -1) for zi in z]
    expected = []
    for i in range(3):
        kl = sum(_kl(p[j], p[i]) for j in range(3) if j != i) / 2
        expected.append(F.cross_entropy(z[i], y) + 0.5 * 4.0 * kl)
    for i in range(3):
        torch.testing.assert_close(logged[f"train/loss_{i}"], expected[i])
    torch.testing.assert_close(loss, sum(expected))
    assert logged["train/temperature"] == 2.0


def test_peers_are_detached_so_each_student_gets_only_its_own_gradient():
    torch.manual_seed(0)
    students = _cohort(2)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))

    def grads(which: int | None) -> list[list[torch.Tensor | None]]:
        for s in students:
            s.zero_grad(set_to_none=True)
        losses = dml_losses([s(x) for s in students], y, temperature=3.0)
        (losses.sum() if which is None else losses[which]).backward()
        return [[None if p.grad is None else p.grad.clone() for p in s.parameters()] for s in students]

    total, only0, only1 = grads(None), grads(0), grads(1)
    # (zeros, not None: torch.stack's backward sends a zero gradient down the other students' graphs)
    assert all(g is None or not g.any() for g in only1[0]), "student 1's KL to student 0 reached student 0"
    assert all(g is None or not g.any() for g in only0[1])
    assert all(g is not None and g.any() for g in only0[0][-1:])  # student 0's own loss does reach it
    for got, want in zip(total[0], only0[0]):
        torch.testing.assert_close(got, want)
    for got, want in zip(total[1], only1[1]):
        torch.testing.assert_close(got, want)


def test_export_and_save_student_feed_distillation(tmp_path):
    module = MutualLearning(_cohort(2))
    assert module.export_student(1) is module.students[1]
    assert module.export_student(-1) is module.students[1]
    path = tmp_path / "student1.pt"
    module.save_student(1, path)
    kd = DistillationModule(SmallCNN(1, 10, widths=(4, 8, 8)), make_student(), teacher_ckpt=str(path))
    x = torch.randn(4, 1, 8, 8)
    module.eval()
    torch.testing.assert_close(kd.teacher(x).logits, module.students[1](x))
    with pytest.raises(ValueError, match="student index 2 out of range; this cohort has 2 students"):
        module.export_student(2)


def test_forward_and_predict_give_every_student():
    module = MutualLearning(_cohort(3))
    x = torch.randn(5, 1, 8, 8)
    assert module(x).shape == (3, 5, 10)
    probs = module.predict_step((x, torch.zeros(5, dtype=torch.long)), 0)
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, 5))


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="needs at least 2 students, got 1"):
        MutualLearning([make_student()])
    with pytest.raises(ValueError, match=r"students predict different numbers of classes \[10, 7\]"):
        MutualLearning([make_student(), MLP(64, 7)])
    with pytest.raises(ValueError, match="temperature must be a finite number > 0, got 0"):
        MutualLearning(_cohort(2), temperature=0.0)
    with pytest.raises(ValueError, match="kl_weight must be a finite number >= 0, got -1"):
        MutualLearning(_cohort(2), kl_weight=-1.0)
    with pytest.raises(ValueError, match="at least 2 students' logits, got 1"):
        dml_losses([torch.randn(2, 3)], torch.tensor([0, 1]))

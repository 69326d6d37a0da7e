"""Hinton KD loss against values worked out independently (plain Python math)."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_kd.losses import Divergence, KDLoss, kd_loss


def _softmax(xs, T):
    e = [math.exp(x / T) for x in xs]
    z = sum(e)
    return [v / z for v in e]


def _kl_by_hand(s_rows, t_rows, T):
    total = 0.0
    for s, t in zip(s_rows, t_rows):
        p, q = _softmax(t, T), _softmax(s, T)
        total += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    return total / len(s_rows)


def test_tiny_example_by_hand():
    # softmax([3,2,1]) = [0.6652, 0.2447, 0.0900]; KL(p || reverse(p)) = (0.6652 - 0.0900) * 2 = 1.1504
    s = torch.tensor([[1.0, 2.0, 3.0]])
    t = torch.tensor([[3.0, 2.0, 1.0]])
    assert kd_loss(s, t, temperature=1.0).item() == pytest.approx(1.150420765, abs=1e-6)


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0, 7.5])
def test_matches_formula_and_t_squared_scaling(T):
    s_rows = [[0.5, -1.0, 2.0, 0.0], [1.5, 1.0, -0.5, 3.0]]
    t_rows = [[2.0, 0.0, 1.0, -1.0], [0.0, 2.5, 0.5, 1.0]]
    expected = T * T * _kl_by_hand(s_rows, t_rows, T)
    got = kd_loss(torch.tensor(s_rows), torch.tensor(t_rows), temperature=T)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_gradient_is_t_times_probability_gap():
    # d/ds [T^2 KL(p_t || p_s)] = T (p_s - p_t) / N  for softmax at temperature T
    T = 3.0
    s = torch.tensor([[0.2, 1.0, -0.7], [1.1, 0.3, 0.0]], requires_grad=True)
    t = torch.tensor([[1.0, 0.0, 0.5], [0.0, 2.0, -1.0]])
    kd_loss(s, t, T).backward()
    expected = T * (torch.softmax(s.detach() / T, -1) - torch.softmax(t / T, -1)) / 2
    torch.testing.assert_close(s.grad, expected)


def test_identical_logits_give_zero_and_teacher_gets_no_grad():
    t = torch.randn(4, 10, requires_grad=True)
    s = t.detach().clone().requires_grad_(True)
    loss = kd_loss(s, t, 4.0)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    loss.backward()
    assert t.grad is None


def test_bf16_inputs_are_computed_in_fp32():
    s, t = torch.randn(8, 10), torch.randn(8, 10)
    out = kd_loss(s.bfloat16(), t.bfloat16(), 4.0)
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(kd_loss(s.bfloat16().float(), t.bfloat16().float(), 4.0).item(), rel=1e-6)


def test_the_module_takes_the_temperature_with_every_call_and_keeps_none():
    loss = KDLoss()
    s, t = torch.randn(3, 5), torch.randn(3, 5)
    assert loss(s, t, temperature=5.0).item() == pytest.approx(kd_loss(s, t, 5.0).item(), rel=1e-6)
    assert loss(s, t, temperature=torch.tensor(5.0)).item() == pytest.approx(kd_loss(s, t, 5.0).item(), rel=1e-6)
    assert not hasattr(loss, "temperature") and not list(loss.buffers()) and loss.state_dict() == {}
    with pytest.raises(TypeError, match="temperature"):
        KDLoss(temperature=4.0)  # T is the module's: a recipe states it once


@pytest.mark.parametrize("T", [0.0, -1.0])
def test_bad_temperature(T):
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        kd_loss(torch.randn(2, 3), torch.randn(2, 3), T)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        KDLoss()(torch.randn(2, 3), torch.randn(2, 3), temperature=T)


def test_class_count_mismatch():
    with pytest.raises(ValueError, match=r"student logits \(2, 3\) and teacher logits \(2, 4\)"):
        kd_loss(torch.randn(2, 3), torch.randn(2, 4))


def test_another_divergence_from_the_core():
    s, t = torch.randn(4, 6), torch.randn(4, 6)
    tv = KDLoss(Divergence("tv"))(s, t, temperature=2.0)
    p_s, p_t = (s / 2).softmax(1), (t / 2).softmax(1)
    assert tv.item() == pytest.approx((4 * 0.5 * (p_s - p_t).abs().sum(1)).mean().item(), rel=1e-5)

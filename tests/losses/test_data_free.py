"""Data-free maths against hand computations: BatchNorm statistics, image priors, DAFL's terms, ZSKT's gap."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lightning_kd.losses import (
    BatchNormStatistics,
    bn_statistics_loss,
    dafl_terms,
    disagreement,
    image_prior_l2,
    image_prior_tv,
)


def _hand_stats(x: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and biased variance of (N, C, H, W), by explicit loops over every value."""
    n, c, h, w = x.shape
    means, variances = [], []
    for ch in range(c):
        values = [float(x[i, ch, r, k]) for i in range(n) for r in range(h) for k in range(w)]
        mean = sum(values) / len(values)
        means.append(mean)
        variances.append(sum((v - mean) ** 2 for v in values) / len(values))
    return means, variances


def test_bn_statistics_loss_matches_a_hand_computation_through_a_conv():
    """The hook reads the BatchNorm layer's *input* (here the conv's output), per channel, biased variance, and the
    loss is ‖μ − μ_run‖₂ + ‖σ² − σ²_run‖₂ summed over layers."""
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 2, 2, bias=False)
    bn1, bn2 = nn.BatchNorm2d(2), nn.BatchNorm2d(2)
    bn1.running_mean.copy_(torch.tensor([0.5, -1.0]))
    bn1.running_var.copy_(torch.tensor([2.0, 0.5]))
    bn2.running_mean.copy_(torch.tensor([0.1, 0.2]))
    bn2.running_var.copy_(torch.tensor([1.5, 3.0]))
    net = nn.Sequential(conv, bn1, nn.ReLU(), bn2).eval()
    x = torch.randn(3, 1, 4, 4)
    stats = BatchNormStatistics(net)
    with stats.recording():
        net(x)
    a = conv(x).detach()
    b = torch.relu(bn1(a)).detach()  # what bn2 reads (bn1 in eval mode: its running statistics)
    expected = 0.0
    for inputs, layer in ((a, bn1), (b, bn2)):
        means, variances = _hand_stats(inputs)
        rm, rv = layer.running_mean.tolist(), layer.running_var.tolist()
        expected += math.sqrt(sum((m - r) ** 2 for m, r in zip(means, rm)))
        expected += math.sqrt(sum((v - r) ** 2 for v, r in zip(variances, rv)))
    assert len(stats) == 2
    assert float(stats.loss().detach()) == pytest.approx(expected, rel=1e-5)
    # the statistics are differentiable in the input (what DeepInversion optimises)
    x.requires_grad_(True)
    with stats.recording():
        net(x)
    stats.loss().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # the hooks are gone after the block: a later forward records nothing new
    before = len(stats._stats)
    net(x)
    assert len(stats._stats) == before


def test_a_network_without_batchnorm_is_refused_with_the_reason():
    with pytest.raises(ValueError, match=r"the teacher \(Sequential\) has no BatchNorm layer: matching BatchNorm"):
        BatchNormStatistics(nn.Sequential(nn.Linear(4, 2)))
    with pytest.raises(ValueError, match="no BatchNorm statistics were collected"):
        bn_statistics_loss([])


def test_image_priors_and_dafl_terms_by_hand():
    x = torch.tensor([[[[1.0, 3.0], [2.0, 2.0]]]])
    # horizontal differences 2, 0 -> mean of squares 2; vertical 1, -1 -> 1; the two averaged: 1.5
    assert float(image_prior_tv(x)) == pytest.approx(1.5)
    assert float(image_prior_l2(x)) == pytest.approx((1 + 9 + 4 + 4) / 4)
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    features = torch.tensor([[1.0, -2.0], [0.5, 0.5]])
    terms = dafl_terms(logits, features)
    p = logits.softmax(-1)
    ce = -(math.log(p[0, 0]) + math.log(p[1, 2])) / 2
    p_mean = p.mean(0).tolist()
    assert float(terms["oh"]) == pytest.approx(ce, rel=1e-6)
    assert float(terms["act"]) == pytest.approx(-(1 + 2 + 0.5 + 0.5) / 4)
    assert float(terms["ie"]) == pytest.approx(sum(q * math.log(q) for q in p_mean), rel=1e-6)
    # a batch spread evenly over the classes has the lowest ie, -log C
    even = dafl_terms(torch.eye(3) * 50, features[:1].repeat(3, 1))["ie"]
    assert float(even) == pytest.approx(-math.log(3), abs=1e-6)


def test_disagreement_is_the_batch_mean_kl_teacher_to_student():
    s, t = torch.tensor([[0.0, 1.0], [2.0, 0.0]]), torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    expected = 0.0
    for si, ti in zip(s, t):
        ps, pt = si.softmax(-1).tolist(), ti.softmax(-1).tolist()
        expected += sum(a * math.log(a / b) for a, b in zip(pt, ps)) / 2
    assert float(disagreement(s, t)) == pytest.approx(expected, rel=1e-6)
    assert float(disagreement(t, t)) == pytest.approx(0.0, abs=1e-7)

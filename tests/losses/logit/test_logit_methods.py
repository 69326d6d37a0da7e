"""Logit losses (DKD, DIST, logit-standardised KD, reverse KL / JS, label smoothing): golden values
re-derived with plain Python (math.exp / math.log loops), the identities and invariances the papers state,
and the errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from lightning_kd.losses import (
    DISTLoss,
    DKDLoss,
    JSKDLoss,
    LabelSmoothingLoss,
    LogitStandardizedKDLoss,
    ReverseKDLoss,
    dist_loss,
    dkd_loss,
    dkd_terms,
    dkd_warmup,
    js_kd_loss,
    kd_loss,
    label_smoothing_loss,
    logit_standardized_kd_loss,
    reverse_kd_loss,
)

# Tiny fixed inputs: 2 samples, 4 classes.
S = [[0.5, -1.0, 2.0, 0.0], [1.5, 1.0, -0.5, 3.0]]
T = [[2.0, 0.0, 1.0, -1.0], [0.0, 2.5, 0.5, 1.0]]
Y = [2, 1]


def _scalar(x: float) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float32)


def _softmax(xs: list[float], temp: float = 1.0) -> list[float]:
    e = [math.exp(x / temp) for x in xs]
    z = sum(e)
    return [v / z for v in e]


def _kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# ---------------------------------------------------------------- DKD


def _dkd_terms_by_hand(s_rows, t_rows, targets, temp):
    tckd, nckd = [], []
    for s, t, g in zip(s_rows, t_rows, targets, strict=True):
        ps, pt = _softmax(s, temp), _softmax(t, temp)
        tckd.append(_kl([pt[g], 1 - pt[g]], [ps[g], 1 - ps[g]]))
        rest = [c for c in range(len(s)) if c != g]
        nckd.append(_kl(_softmax([t[c] for c in rest], temp), _softmax([s[c] for c in rest], temp)))
    return temp * temp * _mean(tckd), temp * temp * _mean(nckd)


def test_dkd_terms_by_hand_closed_form() -> None:
    # s = [1, 2, 3], t = [3, 2, 1], target 0, T = 1. Binary: b_t = (σ_t, 1 - σ_t) with σ_t = softmax(t)_0.
    # Non-target: p̂_t = softmax([2, 1]) = (a, 1 - a), p̂_s = softmax([2, 3]) = (1 - a), a), a = sigmoid(1),
    # so NCKD = a·ln(a/(1-a)) + (1-a)·ln((1-a)/a) = (2a - 1)·1 = tanh(1/2).
    e = math.e
    pt_g = e**3 / (e**3 + e**2 + e)
    ps_g = e / (e**3 + e**2 + e)
    tckd = pt_g * math.log(pt_g / ps_g) + (1 - pt_g) * math.log((1 - pt_g) / (1 - ps_g))
    got_tckd, got_nckd = dkd_terms(
        torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[3.0, 2.0, 1.0]]), torch.tensor([0]), 1.0
    )
    assert got_tckd.item() == pytest.approx(tckd, rel=1e-5)
    assert got_nckd.item() == pytest.approx(math.tanh(0.5), rel=1e-5)


@pytest.mark.parametrize("temp", [1.0, 2.0, 4.0])
def test_dkd_matches_plain_python(temp: float) -> None:
    tckd, nckd = _dkd_terms_by_hand(S, T, Y, temp)
    s, t, y = torch.tensor(S), torch.tensor(T), torch.tensor(Y)
    got_tckd, got_nckd = dkd_terms(s, t, y, temp)
    assert got_tckd.item() == pytest.approx(tckd, rel=1e-5)
    assert got_nckd.item() == pytest.approx(nckd, rel=1e-5)
    expected = 0.5 * tckd + 3.0 * nckd
    assert dkd_loss(s, t, y, alpha=0.5, beta=3.0, temperature=temp).item() == pytest.approx(expected, rel=1e-5)
    assert DKDLoss(alpha=0.5, beta=3.0)(s, t, y, temperature=temp).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("temp", [1.0, 4.0])
def test_dkd_terms_recombine_into_classical_kd(temp: float) -> None:
    # Paper Eq. 1-2: KL(p_t ‖ p_s) = TCKD + (1 - p_t,gt) · NCKD, per sample (the weight is per sample).
    s_all, t_all = torch.randn(6, 7) * 2, torch.randn(6, 7) * 2
    y_all = torch.randint(0, 7, (6,))
    for s, t, y in zip(s_all, t_all, y_all, strict=True):
        s, t, y = s[None], t[None], y[None]
        tckd, nckd = dkd_terms(s, t, y, temp)
        p_t_gt = torch.softmax(t / temp, dim=1)[0, y[0]]
        assert_close(kd_loss(s, t, temp), tckd + (1 - p_t_gt) * nckd, rtol=1e-5, atol=1e-6)


def test_dkd_zero_weights_and_identical_logits_give_zero() -> None:
    s, t, y = torch.randn(5, 6), torch.randn(5, 6), torch.randint(0, 6, (5,))
    assert dkd_loss(s, t, y, alpha=0.0, beta=0.0).item() == 0.0
    assert dkd_loss(t, t, y).item() == pytest.approx(0.0, abs=1e-6)


def test_dkd_extra_dims_are_more_samples() -> None:
    s, t, y = torch.randn(2, 5, 3), torch.randn(2, 5, 3), torch.randint(0, 5, (2, 3))
    flat = dkd_loss(s.movedim(1, -1).reshape(-1, 5), t.movedim(1, -1).reshape(-1, 5), y.reshape(-1))
    assert_close(dkd_loss(s, t, y), flat)


def test_dkd_stays_finite_for_a_confident_teacher_and_a_wrong_student() -> None:
    # p_s,gt = e^-500 underflows to 0 in fp32; forming b in log space keeps log b_s finite.
    # TCKD = 1 · (log 1 - log p_s,gt) = 500 + ln 3 (p_t,gt ≈ 1); NCKD = 0 (same non-target logits).
    s = torch.zeros(2, 4)
    s[:, 0] = -500.0
    s.requires_grad_(True)
    t = torch.zeros(2, 4)
    t[:, 0] = 500.0
    loss = dkd_loss(s, t, torch.tensor([0, 0]), temperature=1.0)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(500.0 + math.log(3.0), rel=1e-5)
    loss.backward()
    assert torch.isfinite(s.grad).all()


def test_dkd_warmup_and_module_scale() -> None:
    assert [dkd_warmup(step, 20) for step in (0, 1, 10, 20, 50)] == [0.0, 0.05, 0.5, 1.0, 1.0]
    assert dkd_warmup(3, 0) == 1.0
    s, t, y = torch.randn(4, 5), torch.randn(4, 5), torch.randint(0, 5, (4,))
    loss = DKDLoss()
    full = loss(s, t, y)
    assert_close(full, dkd_loss(s, t, y, alpha=1.0, beta=8.0, temperature=4.0))
    loss.scale = dkd_warmup(5, 20)  # what a callback does each epoch
    assert_close(loss(s, t, y), 0.25 * full)
    with pytest.raises(ValueError, match="warmup_steps must be >= 0.*warmup_steps=-1"):
        dkd_warmup(1, -1)


def test_dkd_errors() -> None:
    s, t, y = torch.randn(4, 5), torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    with pytest.raises(ValueError, match=r"alpha must be a finite number >= 0.*got -1\.0.*alpha=1\.0"):
        dkd_loss(s, t, y, alpha=-1.0)
    with pytest.raises(ValueError, match=r"beta must be a finite number >= 0.*got -0\.5.*beta=8\.0"):
        DKDLoss(beta=-0.5)
    with pytest.raises(ValueError, match=r"temperature must be a finite number > 0, got 0"):
        dkd_loss(s, t, y, temperature=0.0)
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(4, 6\).*same number of classes"):
        dkd_loss(s, torch.randn(4, 6), y)
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 5\).*from 0 to 5"):
        dkd_loss(s, t, torch.tensor([0, 1, 2, 5]))
    with pytest.raises(ValueError, match=r"from -1 to 2.*label mapping"):
        dkd_loss(s, t, torch.tensor([0, -1, 2, 1]))
    with pytest.raises(ValueError, match=r"integer class indices.*torch.float32"):
        dkd_loss(s, t, y.float())
    with pytest.raises(ValueError, match=r"targets \(3,\) do not match logits \(4, 5\).*\(4,\)"):
        dkd_loss(s, t, y[:3])
    with pytest.raises(ValueError, match="at least 2 classes"):
        dkd_loss(torch.randn(4, 1), torch.randn(4, 1), torch.zeros(4, dtype=torch.long))


# ---------------------------------------------------------------- DIST


def _pearson(u: list[float], v: list[float]) -> float:
    mu, mv = _mean(u), _mean(v)
    a, b = [x - mu for x in u], [x - mv for x in v]
    num = sum(x * y for x, y in zip(a, b, strict=True))
    return num / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def _dist_by_hand(s_rows, t_rows, beta, gamma, temp):
    ps = [_softmax(r, temp) for r in s_rows]
    pt = [_softmax(r, temp) for r in t_rows]
    inter = 1 - _mean([_pearson(a, b) for a, b in zip(ps, pt, strict=True)])
    columns = range(len(s_rows[0]))
    intra = 1 - _mean([_pearson([r[j] for r in ps], [r[j] for r in pt]) for j in columns])
    return temp * temp * (beta * inter + gamma * intra)


def test_dist_docstring_example_by_hand() -> None:
    s = [[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]]
    t = [[3.0, 2.0, 1.0], [0.0, 1.0, 0.0]]
    expected = _dist_by_hand(s, t, 1.0, 1.0, 1.0)
    assert dist_loss(torch.tensor(s), torch.tensor(t)).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("beta, gamma, temp", [(1.0, 0.0, 1.0), (0.0, 1.0, 1.0), (0.5, 2.0, 2.0), (1.0, 1.0, 4.0)])
def test_dist_matches_plain_python(beta: float, gamma: float, temp: float) -> None:
    s = S + [[0.0, 1.0, 0.0, -2.0]]
    t = T + [[1.0, 1.0, -1.0, 0.5]]
    expected = _dist_by_hand(s, t, beta, gamma, temp)
    got = dist_loss(torch.tensor(s), torch.tensor(t), beta=beta, gamma=gamma, temperature=temp)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    module = DISTLoss(beta=beta, gamma=gamma)
    assert module(torch.tensor(s), torch.tensor(t), temperature=temp).item() == pytest.approx(expected, rel=1e-5)


def test_dist_zero_for_identical_logits_and_per_sample_shift() -> None:
    t = torch.randn(8, 10)
    assert dist_loss(t, t).item() == pytest.approx(0.0, abs=1e-5)
    shift = torch.randn(8, 1) * 5  # softmax ignores a per-sample constant
    s = torch.randn(8, 10)
    assert_close(dist_loss(s + shift, t), dist_loss(s, t), rtol=1e-5, atol=1e-6)
    assert_close(dist_loss(s, t - shift), dist_loss(s, t), rtol=1e-5, atol=1e-6)


def test_dist_inter_class_term_only_asks_for_a_positive_linear_relation() -> None:
    # Paper §3: Pearson distance is invariant to positive affine maps. A student whose distributions are the
    # teacher's mixed with the uniform, p_s = a·p_t + (1 - a)/C, has zero inter-class loss where KD does not.
    t = torch.randn(6, 5) * 2
    p_t = torch.softmax(t, dim=1)
    s = torch.log(0.3 * p_t + 0.7 / 5)
    assert dist_loss(s, t, beta=1.0, gamma=0.0).item() == pytest.approx(0.0, abs=1e-5)
    assert kd_loss(s, t, temperature=1.0).item() > 0.1


def test_dist_single_sample_has_constant_intra_term() -> None:
    s, t = torch.randn(1, 5), torch.randn(1, 5)
    assert_close(dist_loss(s, t), dist_loss(s, t, gamma=0.0) + 1.0)


def test_dist_errors() -> None:
    s, t = torch.randn(4, 5), torch.randn(4, 5)
    with pytest.raises(ValueError, match=r"beta must be a finite number >= 0.*got -1"):
        dist_loss(s, t, beta=-1.0)
    with pytest.raises(ValueError, match=r"gamma must be a finite number >= 0.*got -2"):
        DISTLoss(gamma=-2.0)
    with pytest.raises(ValueError, match=r"temperature must be a finite number > 0, got -1"):
        dist_loss(s, t, temperature=-1.0)
    with pytest.raises(ValueError, match=r"dist_loss: .*\(4, 5\).*\(3, 5\)"):
        dist_loss(s, torch.randn(3, 5))
    with pytest.raises(ValueError, match=r"expected logits of shape \(N, C\).*unsqueeze"):
        dist_loss(torch.randn(5), torch.randn(5))


# ---------------------------------------------------------------- logit standardisation


def _zscore(xs: list[float]) -> list[float]:
    m = _mean(xs)
    std = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))  # Bessel's correction, as torch.std
    return [(x - m) / (std + 1e-7) for x in xs]


@pytest.mark.parametrize("temp", [1.0, 2.0, 3.0])
def test_ls_kd_matches_plain_python(temp: float) -> None:
    expected = temp * temp * _mean([_kl(_softmax(_zscore(t), temp), _softmax(_zscore(s), temp)) for s, t in zip(S, T)])
    s, t = torch.tensor(S), torch.tensor(T)
    assert logit_standardized_kd_loss(s, t, temperature=temp).item() == pytest.approx(expected, rel=1e-5)
    assert LogitStandardizedKDLoss()(s, t, temperature=temp).item() == pytest.approx(expected, rel=1e-5)
    # the authors' 9 : 0.1 beside CE is alpha = 0.9 with weight 10 on the module
    assert LogitStandardizedKDLoss(weight=10.0)(s, t, temperature=temp).item() == pytest.approx(10 * expected, rel=1e-5)


def test_ls_kd_by_hand() -> None:
    # z-scores of [1, 2, 3] (std 1 with Bessel's correction) are [-1, 0, 1]; of [6, 4, 2] (std 2) [1, 0, -1].
    # So the loss is KD between softmax([1, 0, -1]) and softmax([-1, 0, 1]) at T = 1: (p0 - p2)·2 = 1.1504.
    s, t = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[6.0, 4.0, 2.0]])
    p = _softmax([1.0, 0.0, -1.0])
    assert logit_standardized_kd_loss(s, t, temperature=1.0).item() == pytest.approx(2 * (p[0] - p[2]), rel=1e-5)


def test_ls_kd_invariant_to_per_sample_shift_and_positive_scale() -> None:
    s, t = torch.randn(6, 10), torch.randn(6, 10)
    scale = torch.rand(6, 1) * 5 + 0.2
    shift = torch.randn(6, 1) * 10
    base = logit_standardized_kd_loss(s, t)
    assert_close(logit_standardized_kd_loss(scale * s + shift, t), base, rtol=1e-4, atol=1e-6)
    assert_close(logit_standardized_kd_loss(s, scale * t + shift), base, rtol=1e-4, atol=1e-6)
    assert logit_standardized_kd_loss(t * 3.0 + 1.0, t).item() == pytest.approx(0.0, abs=1e-6)
    # ... whereas plain KD sees the change of magnitude.
    assert kd_loss(t * 3.0, t, 2.0).item() > 0.1


def test_ls_kd_errors() -> None:
    with pytest.raises(ValueError, match=r"weight must be a finite number >= 0 .* got -1.0. Use e.g. weight=10.0"):
        LogitStandardizedKDLoss(weight=-1.0)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        LogitStandardizedKDLoss()(torch.randn(4, 3), torch.randn(4, 3), temperature=0.0)
    with pytest.raises(ValueError, match="at least 2 classes"):
        logit_standardized_kd_loss(torch.randn(4, 1), torch.randn(4, 1))
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(4, 5\)"):
        logit_standardized_kd_loss(torch.randn(4, 3), torch.randn(4, 5))


# ---------------------------------------------------------------- reverse KL, Jensen-Shannon


def _js(p: list[float], q: list[float]) -> float:
    m = [(a + b) / 2 for a, b in zip(p, q, strict=True)]
    return 0.5 * _kl(p, m) + 0.5 * _kl(q, m)


@pytest.mark.parametrize("temp", [1.0, 2.0, 4.0])
def test_reverse_and_js_match_plain_python(temp: float) -> None:
    reverse = temp * temp * _mean([_kl(_softmax(s, temp), _softmax(t, temp)) for s, t in zip(S, T)])
    js = temp * temp * _mean([_js(_softmax(t, temp), _softmax(s, temp)) for s, t in zip(S, T)])
    s, t = torch.tensor(S), torch.tensor(T)
    assert reverse_kd_loss(s, t, temp).item() == pytest.approx(reverse, rel=1e-5)
    assert ReverseKDLoss()(s, t, temperature=temp).item() == pytest.approx(reverse, rel=1e-5)
    assert js_kd_loss(s, t, temp).item() == pytest.approx(js, rel=1e-5)
    assert JSKDLoss()(s, t, temperature=temp).item() == pytest.approx(js, rel=1e-5)


def test_reverse_and_js_by_hand() -> None:
    # p_s = (1/2, 1/2), p_t = (1, e²)/(1 + e²): KL(p_s ‖ p_t) = ln(1 + e²) - ln 2 - 1.
    s, t = torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 2.0]])
    assert reverse_kd_loss(s, t, 1.0).item() == pytest.approx(math.log(1 + math.e**2) - math.log(2) - 1, rel=1e-5)
    # Disjoint supports give the JS maximum ln 2 (times T²).
    s, t = torch.tensor([[50.0, -50.0]]), torch.tensor([[-50.0, 50.0]])
    assert js_kd_loss(s, t, 1.0).item() == pytest.approx(math.log(2), rel=1e-5)


def test_reverse_kd_is_kd_with_the_arguments_swapped() -> None:
    s, t = torch.randn(5, 7), torch.randn(5, 7)
    assert_close(reverse_kd_loss(s, t, 3.0), kd_loss(t, s, 3.0))


def test_js_is_symmetric_and_bounded_by_t2_ln2() -> None:
    s, t = torch.randn(5, 7) * 3, torch.randn(5, 7) * 3
    assert_close(js_kd_loss(s, t, 2.0), js_kd_loss(t, s, 2.0))
    for temp in (1.0, 2.0, 4.0):
        assert 0.0 <= js_kd_loss(s * 20, t * 20, temp).item() <= temp**2 * math.log(2) + 1e-6
    assert js_kd_loss(t, t, 4.0).item() == pytest.approx(0.0, abs=1e-6)


def test_reverse_and_js_errors() -> None:
    with pytest.raises(ValueError, match="temperature must be a finite number > 0, got 0"):
        reverse_kd_loss(torch.randn(2, 3), torch.randn(2, 3), 0.0)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0, got -2"):
        JSKDLoss()(torch.randn(2, 3), torch.randn(2, 3), temperature=-2.0)
    with pytest.raises(ValueError, match=r"js_kd_loss: .*\(2, 3\).*\(2, 4\)"):
        js_kd_loss(torch.randn(2, 3), torch.randn(2, 4))


# ---------------------------------------------------------------- label smoothing


def test_label_smoothing_by_hand() -> None:
    # z = [0, ln 3] -> p = [1/4, 3/4]; target 1, ε = 0.2:
    # 0.8 · (-ln 3/4) + 0.2 · ½ (-ln 1/4 - ln 3/4) = 0.8 · 0.287682 + 0.1 · (1.386294 + 0.287682) = 0.397544
    z = torch.tensor([[0.0, math.log(3.0)]])
    expected = 0.8 * -math.log(0.75) + 0.2 * 0.5 * (-math.log(0.25) - math.log(0.75))
    assert label_smoothing_loss(z, torch.tensor([1]), smoothing=0.2).item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.397544, abs=1e-6)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.5, 1.0])
def test_label_smoothing_equals_torch_cross_entropy(smoothing: float) -> None:
    z, y = torch.randn(6, 5), torch.randint(0, 5, (6,))
    expected = F.cross_entropy(z, y, label_smoothing=smoothing)
    assert_close(label_smoothing_loss(z, y, smoothing), expected)
    assert_close(LabelSmoothingLoss(smoothing)(z, y), expected)
    z, y = torch.randn(2, 5, 3, 3), torch.randint(0, 5, (2, 3, 3))  # segmentation-shaped
    assert_close(label_smoothing_loss(z, y, smoothing), F.cross_entropy(z, y, label_smoothing=smoothing))


def test_label_smoothing_errors() -> None:
    z = torch.randn(3, 4)
    with pytest.raises(ValueError, match=r"smoothing must be in \[0, 1\], got 1.5"):
        LabelSmoothingLoss(smoothing=1.5)
    with pytest.raises(ValueError, match=r"smoothing must be in \[0, 1\], got -0.1"):
        label_smoothing_loss(z, torch.tensor([0, 1, 2]), smoothing=-0.1)
    with pytest.raises(ValueError, match=r"label_smoothing_loss: targets must lie in \[0, 4\)"):
        label_smoothing_loss(z, torch.tensor([0, 4, 2]))
    with pytest.raises(ValueError, match="not one-hot"):
        label_smoothing_loss(z, F.one_hot(torch.tensor([0, 1, 2]), 4).float())

"""Feature-based losses: golden values re-derived with plain Python loops, invariances, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from lightning_kd.losses import (
    ATLoss,
    FeatureMatchLoss,
    FSPLoss,
    NSTLoss,
    VIDLoss,
    at_loss,
    feature_match_loss,
    fitnet_loss,
    fsp_loss,
    nst_loss,
    vid_loss,
)

# Tiny fixed inputs: 2 samples, 2 channels, 2x2 maps (student); the teacher has 3 channels.
S = [[[[1.0, -2.0], [0.5, 0.0]], [[0.0, 1.0], [3.0, -1.0]]], [[[2.0, 2.0], [-1.0, 0.5]], [[1.0, 0.0], [0.0, 4.0]]]]
T = [
    [[[0.5, 1.0], [2.0, -1.0]], [[1.0, 1.0], [0.0, 2.0]], [[-3.0, 0.0], [1.0, 1.0]]],
    [[[1.0, 0.0], [0.0, 1.0]], [[2.0, -1.0], [1.0, 0.0]], [[0.0, 0.5], [0.5, 3.0]]],
]


def _scalar(x: float) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float32)


def _positions(fmap: list) -> list[list[float]]:
    """(C, H, W) nested lists -> one list of the H*W values per channel."""
    return [[v for row in channel for v in row] for channel in fmap]


def _unit(v: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in v))
    return [x / norm for x in v]


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


# ---------------------------------------------------------------- FitNet / feature matching


def test_fitnet_golden_by_hand() -> None:
    # differences 1, 0, 0, -2 -> squares 1, 0, 0, 4 -> mean 5/4
    s = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    t = torch.tensor([[0.0, 2.0], [3.0, 6.0]])
    assert_close(fitnet_loss(s, t), _scalar(1.25))


def test_fitnet_shape_mismatch_suggests_connector() -> None:
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 4\).*connector"):
        fitnet_loss(torch.randn(2, 3), torch.randn(2, 4))


def test_feature_match_golden_by_hand() -> None:
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[1.0, 1.0], [0.0, 2.0]])
    # differences 0, -1, 0, -1
    assert_close(feature_match_loss(s, t, kind="mse"), _scalar(0.5))  # (0 + 1 + 0 + 1) / 4
    assert_close(feature_match_loss(s, t, kind="l1"), _scalar(0.5))  # (0 + 1 + 0 + 1) / 4
    # cos = 1/sqrt(2) for sample 0 and 1 for sample 1 -> mean(1 - 1/sqrt(2), 0)
    assert_close(feature_match_loss(s, t, kind="cosine"), _scalar((1 - 1 / math.sqrt(2)) / 2))
    assert_close(FeatureMatchLoss(kind="l1")(s, t), _scalar(0.5))


def test_feature_match_errors() -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        FeatureMatchLoss(kind="l2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(2, 8, 4, 4\).*\(2, 8, 2, 2\).*connector"):
        feature_match_loss(torch.randn(2, 8, 4, 4), torch.randn(2, 8, 2, 2), kind="l1")
    with pytest.raises(ValueError, match="cosine needs the same size per sample.*connector"):
        feature_match_loss(torch.randn(2, 8), torch.randn(2, 6), kind="cosine")


def test_feature_match_cosine_ignores_scale() -> None:
    f = torch.randn(3, 4, 2, 2)
    assert_close(feature_match_loss(f, 5 * f, kind="cosine"), _scalar(0.0), atol=1e-6, rtol=0)


# ---------------------------------------------------------------- AT


def _at_reference(s: list, t: list, p: float = 2.0) -> float:
    def attention(fmap: list) -> list[float]:
        channels = _positions(fmap)
        per_position = [sum(abs(ch[k]) ** p for ch in channels) / len(channels) for k in range(len(channels[0]))]
        return _unit(per_position)

    total, count = 0.0, 0
    for fs, ft in zip(s, t, strict=True):
        for a, b in zip(attention(fs), attention(ft), strict=True):
            total += (a - b) ** 2
            count += 1
    return total / count


def test_at_golden_by_hand() -> None:
    # at(s) = normalize([1, 0, 0, 0]) = [1, 0, 0, 0]; at(t) = normalize([1, 1, 1, 1]) = [.5, .5, .5, .5]
    # squared differences .25 each -> mean .25
    s = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    t = torch.ones(1, 1, 2, 2)
    assert_close(at_loss(s, t), _scalar(0.25))


def test_at_golden_loops() -> None:
    assert_close(at_loss(torch.tensor(S), torch.tensor(T)), _scalar(_at_reference(S, T)))
    assert_close(ATLoss(p=3.0)(torch.tensor(S), torch.tensor(T)), _scalar(_at_reference(S, T, p=3.0)))


def test_at_pools_the_larger_map() -> None:
    big = torch.randn(2, 2, 4, 4)
    # 2x2 block means of the 4x4 map, written out with loops
    pooled = [
        [
            [[big[n, c, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].mean().item() for j in range(2)] for i in range(2)]
            for c in range(2)
        ]
        for n in range(2)
    ]
    expected = _scalar(_at_reference(pooled, T))
    assert_close(at_loss(big, torch.tensor(T)), expected)
    assert_close(at_loss(torch.tensor(T), big), expected)  # symmetric: the teacher may be the larger one


def test_at_invariant_to_scaling_a_feature_map() -> None:
    s, t = torch.randn(3, 4, 5, 5), torch.randn(3, 6, 5, 5)
    assert_close(at_loss(7.5 * s, t), at_loss(s, t))
    assert_close(at_loss(s, 0.1 * t), at_loss(s, t))


def test_at_errors() -> None:
    with pytest.raises(ValueError, match="p must be > 0"):
        ATLoss(p=0.0)
    with pytest.raises(ValueError, match=r"feature maps \(N, C, H, W\)"):
        at_loss(torch.randn(2, 8), torch.randn(2, 8))
    with pytest.raises(ValueError, match="batch 2 != teacher batch 3"):
        at_loss(torch.randn(2, 4, 2, 2), torch.randn(3, 4, 2, 2))


# ---------------------------------------------------------------- NST


def _nst_reference(s: list, t: list, degree: int = 2, constant: float = 0.0) -> float:
    def mean_kernel(a: list[list[float]], b: list[list[float]]) -> float:
        return sum((_dot(x, y) + constant) ** degree for x in a for y in b) / (len(a) * len(b))

    per_sample = []
    for fs, ft in zip(s, t, strict=True):
        xs = [_unit(v) for v in _positions(fs)]
        xt = [_unit(v) for v in _positions(ft)]
        per_sample.append(mean_kernel(xt, xt) + mean_kernel(xs, xs) - 2 * mean_kernel(xs, xt))
    return sum(per_sample) / len(per_sample)


def test_nst_golden_by_hand() -> None:
    # one channel each: s -> e1, t -> e2. d=2, c=0: k(t,t)=1, k(s,s)=1, k(s,t)=0 -> 1 + 1 - 0 = 2
    s = torch.tensor([[[[3.0, 0.0], [0.0, 0.0]]]])
    t = torch.tensor([[[[0.0, 2.0], [0.0, 0.0]]]])
    assert_close(nst_loss(s, t), _scalar(2.0))
    # d=2, c=1: (1+1)^2 + (1+1)^2 - 2 (0+1)^2 = 6
    assert_close(NSTLoss(degree=2, constant=1.0)(s, t), _scalar(6.0))


def test_nst_golden_loops() -> None:
    assert_close(nst_loss(torch.tensor(S), torch.tensor(T)), _scalar(_nst_reference(S, T)))
    assert_close(nst_loss(torch.tensor(S), torch.tensor(T), 3, 0.5), _scalar(_nst_reference(S, T, 3, 0.5)))


def test_nst_zero_when_student_equals_teacher() -> None:
    f = torch.randn(3, 5, 4, 4)
    assert_close(nst_loss(f, f), _scalar(0.0), atol=1e-6, rtol=0)


def test_nst_errors() -> None:
    with pytest.raises(ValueError, match="degree must be an int >= 1"):
        NSTLoss(degree=0)
    with pytest.raises(ValueError, match="constant must be >= 0"):
        NSTLoss(constant=-1.0)
    with pytest.raises(ValueError, match="only 4-D"):
        nst_loss(torch.randn(2, 4, 6), torch.randn(2, 4, 3))


# ---------------------------------------------------------------- VID


def _vid_reference(mean: list, t: list, log_scale: list[float], eps: float) -> float:
    total, count = 0.0, 0
    for ms, ts in zip(mean, t, strict=True):
        for c, (mc, tc) in enumerate(zip(_positions(ms), _positions(ts), strict=True)):
            var = math.log(1 + math.exp(log_scale[c])) + eps
            for m, x in zip(mc, tc, strict=True):
                total += 0.5 * ((m - x) ** 2 / var + math.log(var))
                count += 1
    return total / count


def test_vid_golden_loops() -> None:
    mean, teacher = S, [[sample[0], sample[2]] for sample in T]  # both (2, 2, 2, 2)
    log_scale = [0.0, 1.5]
    got = vid_loss(torch.tensor(mean), torch.tensor(teacher), torch.tensor(log_scale), eps=1e-3)
    assert_close(got, _scalar(_vid_reference(mean, teacher, log_scale, 1e-3)))


def test_vid_loss_on_vectors_by_hand() -> None:
    # var = softplus(log(e - 1)) + eps = log(e) + 1e-12 = 1, so every element gives 0.5 * (2^2 / 1 + log 1) = 2
    log_scale = torch.full((3,), math.log(math.e - 1))
    assert_close(vid_loss(torch.full((2, 3), 2.0), torch.zeros(2, 3), log_scale, eps=1e-12), _scalar(2.0))


@pytest.mark.parametrize("init_pred_var", [5.0, 0.1, 200.0])
def test_vid_log_scale_initialised_to_init_pred_var(init_pred_var: float) -> None:
    loss = VIDLoss(4, 6, init_pred_var=init_pred_var, eps=1e-5)
    assert loss.log_scale.shape == (6,)
    assert_close(F.softplus(loss.log_scale) + 1e-5, torch.full((6,), init_pred_var))


def test_vid_module_regressor_and_shapes() -> None:
    loss = VIDLoss(student_channels=4, teacher_channels=6)
    convs = [m for m in loss.regressor if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (4, 6, (1, 1)),
        (6, 6, (1, 1)),
        (6, 6, (1, 1)),
    ]
    assert VIDLoss(4, 6, hidden_channels=9).regressor[0].out_channels == 9
    s, t = torch.randn(3, 4, 5, 5), torch.randn(3, 6, 5, 5)
    assert_close(loss(s, t), vid_loss(loss.regressor(s), t, loss.log_scale))
    vectors = loss(torch.randn(3, 4), torch.randn(3, 6))  # (N, C) inputs are 1x1 maps
    assert vectors.shape == ()
    pooled = loss(torch.randn(3, 4, 8, 8), torch.randn(3, 6, 4, 4))
    assert pooled.shape == ()


def test_vid_errors() -> None:
    with pytest.raises(ValueError, match="student_channels must be a positive int"):
        VIDLoss(0, 6)
    with pytest.raises(ValueError, match="hidden_channels must be a positive int"):
        VIDLoss(4, 6, hidden_channels=-2)
    with pytest.raises(ValueError, match="init_pred_var must be > eps"):
        VIDLoss(4, 6, init_pred_var=0.0)
    with pytest.raises(ValueError, match="eps must be a finite number > 0"):
        VIDLoss(4, 6, eps=0.0)
    with pytest.raises(ValueError, match="student has 5 channels.*student_channels=5"):
        VIDLoss(4, 6)(torch.randn(2, 5, 3, 3), torch.randn(2, 6, 3, 3))
    with pytest.raises(ValueError, match="teacher has 7 channels.*teacher_channels=7"):
        VIDLoss(4, 6)(torch.randn(2, 4, 3, 3), torch.randn(2, 7, 3, 3))
    with pytest.raises(ValueError, match=r"log_scale \(4,\) must be \(3,\)"):
        vid_loss(torch.randn(2, 3), torch.randn(2, 3), torch.zeros(4))


# ---------------------------------------------------------------- FSP


def _fsp_reference(a: list, b: list) -> list:
    return [
        [[_dot(x, y) / len(x) for y in _positions(fb)] for x in _positions(fa)] for fa, fb in zip(a, b, strict=True)
    ]


def test_fsp_golden_loops() -> None:
    # student layers: S (2 ch) and T (3 ch); teacher layers: T[:, :2] and S with an extra channel
    teacher_a = [sample[:2] for sample in T]
    teacher_b = [sample + [sample[0]] for sample in S]
    g_s = _fsp_reference(S, T)
    g_t = _fsp_reference(teacher_a, teacher_b)
    flat = [(x - y) ** 2 for gs, gt in zip(g_s, g_t) for rs, rt in zip(gs, gt) for x, y in zip(rs, rt)]
    expected = _scalar(sum(flat) / len(flat))  # 2 samples x 2 x 3 entries
    got = fsp_loss(*(torch.tensor(x) for x in (S, T, teacher_a, teacher_b)))
    assert_close(got, expected)


def test_fsp_pools_the_larger_layer() -> None:
    a, b = torch.randn(2, 2, 4, 4), torch.tensor(T)
    pooled = F.avg_pool2d(a, 2)  # for an exact 2x downsample adaptive pooling equals 2x2 average pooling
    ta, tb = torch.randn(2, 2, 2, 2), torch.randn(2, 3, 2, 2)
    assert_close(fsp_loss(a, b, ta, tb), fsp_loss(pooled, b, ta, tb))


def test_fsp_zero_when_student_equals_teacher() -> None:
    a, b = torch.randn(2, 3, 8, 8), torch.randn(2, 5, 4, 4)
    assert FSPLoss()(a, b, a, b).item() == 0.0


def test_fsp_channel_mismatch_error() -> None:
    with pytest.raises(ValueError, match=r"student FSP matrix \(2, 2, 3\) and teacher FSP matrix \(2, 2, 4\)"):
        fsp_loss(torch.randn(2, 2, 4, 4), torch.randn(2, 3, 4, 4), torch.randn(2, 2, 4, 4), torch.randn(2, 4, 4, 4))

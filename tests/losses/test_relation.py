"""Relation-based losses: golden values re-derived with plain Python loops, invariances, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from lightning_kd.losses import CCLoss, PKTLoss, RKDLoss, SPLoss, cc_loss, pkt_loss, rkd_loss, sp_loss

# 3 samples; the student embeds in 2-D, the teacher in 3-D.
S = [[1.0, 2.0], [-1.0, 0.5], [0.0, -3.0]]
T = [[0.5, 1.0, -1.0], [2.0, 0.0, 1.0], [-1.0, 1.0, 0.5]]


def _scalar(x: float) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float32)


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def _unit(v: list[float]) -> list[float]:
    norm = math.sqrt(_dot(v, v))
    return [x / norm for x in v] if norm > 0 else [0.0] * len(v)


def _huber(x: float) -> float:  # smooth L1 with beta = 1
    return 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5


# ---------------------------------------------------------------- SP


def _sp_reference(s: list, t: list) -> float:
    n = len(s)
    g_s = [_unit([_dot(a, b) for b in s]) for a in s]
    g_t = [_unit([_dot(a, b) for b in t]) for a in t]
    return sum((g_s[i][j] - g_t[i][j]) ** 2 for i in range(n) for j in range(n)) / n**2


def test_sp_golden_by_hand() -> None:
    # G_s = I (rows already unit); G_t = all ones -> rows 1/sqrt(2).
    # ||G_s - G_t||^2 = 2 (1 - 1/sqrt 2)^2 + 2 (1/sqrt 2)^2 = 4 - 2 sqrt 2, divided by N^2 = 4
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert_close(sp_loss(s, t), _scalar(1 - math.sqrt(2) / 2))


def test_sp_golden_loops() -> None:
    assert_close(SPLoss()(torch.tensor(S), torch.tensor(T)), _scalar(_sp_reference(S, T)))


def test_sp_invariant_to_spatial_size() -> None:
    s, t = torch.randn(4, 3, 2, 2), torch.randn(4, 5, 3, 3)
    up_s = F.interpolate(s, scale_factor=2, mode="nearest")  # every position replicated 4 times
    up_t = F.interpolate(t, scale_factor=2, mode="nearest")
    assert_close(sp_loss(up_s, t), sp_loss(s, t))
    assert_close(sp_loss(up_s, up_t), sp_loss(s, t))


def test_sp_batch_mismatch_error() -> None:
    with pytest.raises(ValueError, match="student batch 3 != teacher batch 4"):
        sp_loss(torch.randn(3, 8), torch.randn(4, 8))


# ---------------------------------------------------------------- RKD


def _rkd_reference(s: list, t: list, w_d: float, w_a: float) -> float:
    n = len(s)

    def distances(e: list) -> list[list[float]]:
        d = [[math.sqrt(sum((x - y) ** 2 for x, y in zip(e[i], e[j]))) for j in range(n)] for i in range(n)]
        nonzero = [d[i][j] for i in range(n) for j in range(n) if i != j and d[i][j] > 0]
        mu = sum(nonzero) / len(nonzero)
        return [[x / mu for x in row] for row in d]

    def angles(e: list) -> list[float]:  # cosine of the angle at e_j, for every (j, i, k)
        out = []
        for j in range(n):
            for i in range(n):
                for k in range(n):
                    u = _unit([a - b for a, b in zip(e[i], e[j])])
                    v = _unit([a - b for a, b in zip(e[k], e[j])])
                    out.append(_dot(u, v))
        return out

    d_s, d_t = distances(s), distances(t)
    loss_d = sum(_huber(d_s[i][j] - d_t[i][j]) for i in range(n) for j in range(n)) / n**2
    loss_a = sum(_huber(a - b) for a, b in zip(angles(s), angles(t))) / n**3
    return w_d * loss_d + w_a * loss_a


def test_rkd_golden_by_hand() -> None:
    # 1-D points s = 0, 1, 2 and t = 0, 1, 3. Off-diagonal distances s: 1, 2, 1 (mean 4/3) -> .75, 1.5, .75;
    # t: 1, 3, 2 (mean 2) -> .5, 1.5, 1. Differences .25, 0, -.25, each twice: huber .5 * .0625 four times
    # = .125, mean over 9 pairs = 1/72. Same ordering on a line -> every angle cosine agrees -> angle term 0.
    s = torch.tensor([[0.0], [1.0], [2.0]])
    t = torch.tensor([[0.0], [1.0], [3.0]])
    assert_close(rkd_loss(s, t, distance_weight=1.0, angle_weight=1.0), _scalar(1 / 72))


def test_rkd_golden_loops() -> None:
    s, t = torch.tensor(S), torch.tensor(T)
    assert_close(rkd_loss(s, t), _scalar(_rkd_reference(S, T, 25.0, 50.0)))
    assert_close(RKDLoss(distance_weight=1.0, angle_weight=0.0)(s, t), _scalar(_rkd_reference(S, T, 1.0, 0.0)))
    assert_close(RKDLoss(distance_weight=0.0, angle_weight=1.0)(s, t), _scalar(_rkd_reference(S, T, 0.0, 1.0)))


@pytest.mark.parametrize("weights", [(1.0, 0.0), (0.0, 1.0)], ids=["distance", "angle"])
def test_rkd_terms_invariant_to_scale(weights: tuple[float, float]) -> None:
    s, t = torch.randn(6, 8), torch.randn(6, 12)
    base = rkd_loss(s, t, *weights)
    assert_close(rkd_loss(3.7 * s, 3.7 * t, *weights), base)  # both embeddings
    assert_close(rkd_loss(0.2 * s, t, *weights), base)  # student alone
    assert_close(rkd_loss(s, 0.2 * t, *weights), base)  # teacher alone


def test_rkd_duplicate_samples_stay_finite() -> None:
    s = torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.0, 1.0]], requires_grad=True)
    loss = rkd_loss(s, torch.randn(3, 4))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()


def test_rkd_errors() -> None:
    with pytest.raises(ValueError, match="must be >= 0 and not both 0"):
        RKDLoss(distance_weight=-1.0)
    with pytest.raises(ValueError, match="not both 0"):
        RKDLoss(distance_weight=0.0, angle_weight=0.0)


# ---------------------------------------------------------------- PKT


def _pkt_reference(s: list, t: list, eps: float = 1e-7) -> float:
    def probs(e: list) -> list[list[float]]:
        x = [_unit(v) for v in e]
        k = [[(_dot(a, b) + 1) / 2 for b in x] for a in x]
        return [[v / sum(row) for v in row] for row in k]

    p_s, p_t = probs(s), probs(t)
    n = len(s)
    return sum(p_t[i][j] * math.log((p_t[i][j] + eps) / (p_s[i][j] + eps)) for i in range(n) for j in range(n)) / n**2


def test_pkt_golden_loops() -> None:
    assert_close(pkt_loss(torch.tensor(S), torch.tensor(T)), _scalar(_pkt_reference(S, T)))
    assert_close(PKTLoss(eps=1e-3)(torch.tensor(S), torch.tensor(T)), _scalar(_pkt_reference(S, T, 1e-3)))


def test_pkt_zero_for_identical_inputs() -> None:
    e = torch.randn(6, 5, 2, 2)
    assert_close(pkt_loss(e, e), _scalar(0.0), atol=1e-7, rtol=0)
    assert_close(pkt_loss(e, 4 * e), _scalar(0.0), atol=1e-6, rtol=0)  # cosine kernel ignores scale


def test_pkt_errors() -> None:
    with pytest.raises(ValueError, match="eps must be a finite number > 0"):
        PKTLoss(eps=0.0)


# ---------------------------------------------------------------- CC


def _cc_reference(s: list, t: list, kernel) -> float:
    def correlation(e: list) -> list[list[float]]:
        x = [_unit(v) for v in e]
        return [[kernel(a, b) for b in x] for a in x]

    c_s, c_t = correlation(s), correlation(t)
    n = len(s)
    return sum((c_s[i][j] - c_t[i][j]) ** 2 for i in range(n) for j in range(n)) / n**2


def _taylor_rbf(gamma: float, order: int):
    return lambda a, b: sum(
        math.exp(-2 * gamma) * (2 * gamma) ** p / math.factorial(p) * _dot(a, b) ** p for p in range(order + 1)
    )


def test_cc_golden_loops() -> None:
    s, t = torch.tensor(S), torch.tensor(T)
    assert_close(cc_loss(s, t), _scalar(_cc_reference(S, T, _taylor_rbf(0.4, 2))))
    assert_close(CCLoss(gamma=1.0, order=3)(s, t), _scalar(_cc_reference(S, T, _taylor_rbf(1.0, 3))))


def test_cc_high_order_approaches_the_exact_rbf_kernel() -> None:
    gamma = 0.4

    def rbf(a: list[float], b: list[float]) -> float:
        return math.exp(-gamma * sum((x - y) ** 2 for x, y in zip(a, b)))

    got = cc_loss(torch.tensor(S), torch.tensor(T), gamma=gamma, order=12)
    assert_close(got, _scalar(_cc_reference(S, T, rbf)), atol=1e-6, rtol=1e-4)


def test_cc_zero_when_student_equals_teacher() -> None:
    e = torch.randn(5, 7)
    assert cc_loss(e, e).item() == 0.0


def test_cc_errors() -> None:
    with pytest.raises(ValueError, match="gamma must be a finite number > 0"):
        CCLoss(gamma=0.0)
    with pytest.raises(ValueError, match="order must be an int >= 1"):
        CCLoss(order=0)
    with pytest.raises(ValueError, match="order must be an int >= 1"):
        CCLoss(order=2.5)  # type: ignore[arg-type]

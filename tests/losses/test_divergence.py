"""The divergence core (and its token forms): golden values re-derived with plain Python floats (math.exp /
math.log loops, the entropy form of the Jensen-Shannon divergence, closed forms for 2-entry vocabularies), the GKD
endpoint definitions and limits, the identities the papers state, masking, temperature, dtype, gradients, errors,
and one implementation shared by classifier and token losses."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch.testing import assert_close

from lightning_kd.losses import js_kd_loss, kd_loss, reverse_kd_loss
from lightning_kd.losses.divergence import Divergence, as_divergence
from lightning_kd.losses.token import (
    TOKEN_DIVERGENCES,
    forward_kl,
    generalized_jsd,
    reduce_token_loss,
    reverse_kl,
    skew_forward_kl,
    skew_reverse_kl,
    token_divergence,
    total_variation,
)

# 2 tokens, 3 vocabulary entries.
S = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
T = [[2.0, 0.0, 1.0], [1.0, 1.0, 0.0]]


def _softmax(xs: list[float], temp: float = 1.0) -> list[float]:
    e = [math.exp(x / temp) for x in xs]
    return [v / sum(e) for v in e]


def _kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))


def _mix(w: float, p: list[float], q: list[float]) -> list[float]:
    return [w * a + (1 - w) * b for a, b in zip(p, q, strict=True)]


def _entropy(p: list[float]) -> float:
    return -sum(x * math.log(x) for x in p)


def _per_row(fn, temp: float = 1.0) -> torch.Tensor:
    """``fn(p_t, p_s)`` for each row of (T, S), as an fp32 tensor."""
    return torch.tensor([fn(_softmax(t, temp), _softmax(s, temp)) for s, t in zip(S, T, strict=True)])


def _s() -> torch.Tensor:
    return torch.tensor(S)


def _t() -> torch.Tensor:
    return torch.tensor(T)


# ---------------------------------------------------------------- golden values


def test_forward_and_reverse_kl_golden() -> None:
    assert_close(forward_kl(_s(), _t()), _per_row(lambda pt, ps: _kl(pt, ps)))
    assert_close(reverse_kl(_s(), _t()), _per_row(lambda pt, ps: _kl(ps, pt)))


def test_two_entry_closed_forms() -> None:
    # p_s = (½, ½), p_t = (a, 1 - a) with a = 1 / (1 + e²):
    # KL(p_s ‖ p_t) = -ln 2 - ½ ln a - ½ ln(1 - a) = ln(1 + e²) - ln 2 - 1;  TV = |a - ½| = e²/(1 + e²) - ½.
    s, t = torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 2.0]])
    e2 = math.exp(2.0)
    assert reverse_kl(s, t).item() == pytest.approx(math.log(1 + e2) - math.log(2) - 1, rel=1e-6)
    assert total_variation(s, t).item() == pytest.approx(e2 / (1 + e2) - 0.5, rel=1e-6)
    # Symmetric JSD as entropies: H(m) - ½ H(p_s) - ½ H(p_t), with m the average of the probabilities.
    a = 1 / (1 + e2)
    m = [(0.5 + a) / 2, (0.5 + 1 - a) / 2]
    js = _entropy(m) - 0.5 * math.log(2) - 0.5 * _entropy([a, 1 - a])
    assert generalized_jsd(s, t, beta=0.5).item() == pytest.approx(js, rel=1e-5)


def test_jsd_half_is_the_classical_jensen_shannon() -> None:
    # Classical JS (Lin 1991) in its entropy form, a different formula from the KL form the code uses.
    def js(pt, ps):
        return _entropy(_mix(0.5, pt, ps)) - 0.5 * _entropy(pt) - 0.5 * _entropy(ps)

    assert_close(generalized_jsd(_s(), _t(), beta=0.5), _per_row(js))
    assert (generalized_jsd(_s(), _t(), beta=0.5) <= math.log(2)).all()


@pytest.mark.parametrize("beta", [0.1, 0.3, 0.9])
def test_jsd_mixes_probabilities_not_logits(beta: float) -> None:
    # Golden with m = β·p_t + (1 - β)·p_s; a mixture of logits or log-probs (TRL #2202) gives other values.
    def gjsd(pt, ps):
        m = _mix(beta, pt, ps)
        return beta * _kl(pt, m) + (1 - beta) * _kl(ps, m)

    assert_close(generalized_jsd(_s(), _t(), beta=beta), _per_row(gjsd))


def test_jsd_endpoints_are_the_full_kls() -> None:
    assert torch.equal(generalized_jsd(_s(), _t(), beta=0.0), forward_kl(_s(), _t()))
    assert torch.equal(generalized_jsd(_s(), _t(), beta=1.0), reverse_kl(_s(), _t()))
    # ... while just inside the endpoints the JSD is tiny: the documented jump.
    assert (generalized_jsd(_s(), _t(), beta=1e-4) < 1e-3 * forward_kl(_s(), _t())).all()


def test_jsd_limits_towards_the_endpoints() -> None:
    eps = 1e-4
    assert_close(generalized_jsd(_s(), _t(), beta=eps) / eps, forward_kl(_s(), _t()), rtol=2e-3, atol=0)
    assert_close(generalized_jsd(_s(), _t(), beta=1 - eps) / eps, reverse_kl(_s(), _t()), rtol=2e-3, atol=0)


@pytest.mark.parametrize("beta", [0.0, 0.2, 0.5, 0.7, 1.0])
def test_jsd_swap_symmetry(beta: float) -> None:
    # JSD_β(p_t, p_s) = JSD_{1-β}(p_s, p_t): swap the roles and the weight.
    swapped = generalized_jsd(_t(), _s(), beta=1 - beta)
    assert_close(generalized_jsd(_s(), _t(), beta=beta), swapped, rtol=1e-5, atol=1e-7)


def test_skew_kls_golden_and_zero_skew() -> None:
    a = 0.1
    assert_close(skew_forward_kl(_s(), _t(), skew=a), _per_row(lambda pt, ps: _kl(pt, _mix(a, pt, ps))))
    assert_close(skew_reverse_kl(_s(), _t(), skew=a), _per_row(lambda pt, ps: _kl(ps, _mix(a, ps, pt))))
    assert torch.equal(skew_forward_kl(_s(), _t(), skew=0.0), forward_kl(_s(), _t()))
    assert torch.equal(skew_reverse_kl(_s(), _t(), skew=0.0), reverse_kl(_s(), _t()))


def test_skew_kl_is_bounded_by_log_one_over_alpha() -> None:
    # The mixture holds at least α·p, so p / m <= 1 / α: SKL_α <= ln(1/α), even for disjoint distributions
    # where the plain KL is huge (DistiLLM, Ko et al. 2024, its motivation).
    s = torch.tensor([[0.0, 40.0, 0.0]])
    t = torch.tensor([[40.0, 0.0, 0.0]])
    assert forward_kl(s, t).item() > 30
    for a in (0.1, 0.5):
        assert skew_forward_kl(s, t, skew=a).item() <= math.log(1 / a) + 1e-5
        assert skew_forward_kl(s, t, skew=a).item() == pytest.approx(math.log(1 / a), rel=1e-4)
        assert skew_reverse_kl(s, t, skew=a).item() <= math.log(1 / a) + 1e-5


def test_total_variation_golden_and_bounds() -> None:
    tv = _per_row(lambda pt, ps: 0.5 * sum(abs(x - y) for x, y in zip(pt, ps, strict=True)))
    assert_close(total_variation(_s(), _t()), tv)
    same = torch.tensor([[0.3, -1.0, 2.0]])
    assert total_variation(same, same).item() == 0.0
    disjoint = total_variation(torch.tensor([[0.0, 60.0]]), torch.tensor([[60.0, 0.0]]))
    assert disjoint.item() == pytest.approx(1.0, abs=1e-6)
    random = total_variation(torch.randn(64, 9) * 5, torch.randn(64, 9) * 5)
    assert ((random > 0) & (random < 1)).all()


# ---------------------------------------------------------------- temperature, mask, dtype, shapes


@pytest.mark.parametrize("kind", TOKEN_DIVERGENCES)
def test_temperature_softens_and_scales_by_t_squared(kind: str) -> None:
    temp = 2.0
    golden = {
        "forward_kl": lambda pt, ps: _kl(pt, ps),
        "reverse_kl": lambda pt, ps: _kl(ps, pt),
        "jsd": lambda pt, ps: 0.5 * _kl(pt, _mix(0.5, pt, ps)) + 0.5 * _kl(ps, _mix(0.5, pt, ps)),
        "skew_forward_kl": lambda pt, ps: _kl(pt, _mix(0.1, pt, ps)),
        "skew_reverse_kl": lambda pt, ps: _kl(ps, _mix(0.1, ps, pt)),
        "tv": lambda pt, ps: 0.5 * sum(abs(x - y) for x, y in zip(pt, ps, strict=True)),
    }[kind]
    unscaled = _per_row(golden, temp)
    out = token_divergence(_s(), _t(), kind, temperature=temp)
    assert_close(out, temp**2 * unscaled)
    assert_close(token_divergence(_s(), _t(), kind, temperature=temp, scale_by_t2=False), unscaled)
    assert_close(token_divergence(_s(), _t(), kind, temperature=torch.tensor(temp)), out)


def test_mask_zeroes_rows_and_their_gradient() -> None:
    s = _s().requires_grad_(True)
    full = forward_kl(s, _t())
    out = forward_kl(s, _t(), mask=torch.tensor([False, True]))
    assert out[0].item() == 0.0 and out[1].item() == pytest.approx(full[1].item())
    out.sum().backward()
    assert (s.grad[0] == 0).all() and (s.grad[1] != 0).any()
    assert torch.equal(forward_kl(_s(), _t(), mask=torch.tensor([0, 1])), out.detach())


def test_masked_rows_with_non_finite_logits_give_zero() -> None:
    s = torch.tensor([[1.0, 2.0, 0.5], [float("nan")] * 3])
    out = forward_kl(s, _t(), mask=torch.tensor([True, False]))
    assert out[1].item() == 0.0 and torch.isfinite(out).all()


def test_leading_dims_are_tokens() -> None:
    s, t = torch.randn(2, 5, 7), torch.randn(2, 5, 7)
    out = token_divergence(s, t, "jsd", mask=torch.ones(2, 5, dtype=torch.bool))
    assert out.shape == (2, 5)
    assert_close(out.reshape(-1), token_divergence(s.reshape(10, 7), t.reshape(10, 7), "jsd"))


@pytest.mark.parametrize("kind", TOKEN_DIVERGENCES)
def test_bf16_inputs_give_fp32(kind: str) -> None:
    s, t = (torch.randn(4, 11) * 3).bfloat16(), (torch.randn(4, 11) * 3).bfloat16()
    out = token_divergence(s, t, kind)
    assert out.dtype == torch.float32
    assert_close(out, token_divergence(s.float(), t.float(), kind), rtol=0, atol=0)


@pytest.mark.parametrize("kind", TOKEN_DIVERGENCES)
def test_gradient_reaches_student_not_teacher(kind: str) -> None:
    s = torch.randn(4, 11, requires_grad=True)
    t = torch.randn(4, 11, requires_grad=True)
    token_divergence(s, t, Divergence(kind, beta=0.3)).sum().backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_vocab_size_drops_padding_columns_of_both() -> None:
    # Student head 5 wide, teacher head 4 wide, tokenizer of 3: the extra columns are padding ids.
    s = torch.cat([_s(), torch.full((2, 2), 9.0)], dim=1)
    t = torch.cat([_t(), torch.full((2, 1), -7.0)], dim=1)
    out = forward_kl(s, t, vocab_size=3)
    assert_close(out, _per_row(lambda pt, ps: _kl(pt, ps)))
    assert not torch.allclose(forward_kl(s[:, :4], t), out)  # keeping a padding column changes the value


# ---------------------------------------------------------------- reduction and module


def test_reduce_token_loss() -> None:
    values = torch.tensor([1.0, 0.0, 2.0, 3.0])
    mask = torch.tensor([True, False, True, True])
    assert reduce_token_loss(values, mask).item() == pytest.approx(2.0)
    assert reduce_token_loss(values).item() == pytest.approx(1.5)
    assert reduce_token_loss(values, mask, num_valid=12).item() == pytest.approx(0.5)
    assert reduce_token_loss(values, mask, num_valid=torch.tensor(6)).item() == pytest.approx(1.0)
    all_masked = reduce_token_loss(torch.zeros(3), torch.zeros(3, dtype=torch.bool))
    assert all_masked.item() == 0.0


def test_the_options_object_and_the_temperature_per_call() -> None:
    mask = torch.tensor([True, False])
    per_token = _per_row(lambda pt, ps: _kl(pt, ps), temp=2.0) * 4.0
    fkl = Divergence("forward_kl")
    assert fkl.rows(_s(), _t(), 2.0, mask=mask)[0].item() == pytest.approx(per_token[0].item(), rel=1e-5)
    assert fkl.rows(_s(), _t(), 1.0)[0].item() == pytest.approx(_kl(_softmax(T[0]), _softmax(S[0])), rel=1e-5)
    none = Divergence("jsd", beta=0.5).rows(_s(), _t(), 1.0, mask=mask)
    assert none.shape == (2,) and none[1].item() == 0.0
    assert as_divergence("tv") == Divergence("tv") and as_divergence({"kind": "jsd", "beta": 0.3}).beta == 0.3
    with pytest.raises(dataclasses.FrozenInstanceError):
        fkl.kind = "tv"  # type: ignore[misc]


def test_classifier_and_token_losses_share_the_one_implementation() -> None:
    """kd_loss with any divergence is the token rows' mean over samples (classes in dim 1 there, last here)."""
    s, t = torch.randn(6, 5), torch.randn(6, 5)
    for kind in TOKEN_DIVERGENCES:
        d = Divergence(kind, beta=0.3, skew=0.2)
        assert_close(kd_loss(s, t, 3.0, d), token_divergence(s, t, d, temperature=3.0).mean())
    assert_close(js_kd_loss(s, t, 2.0), token_divergence(s, t, "jsd", temperature=2.0).mean())
    assert_close(reverse_kd_loss(s, t, 2.0), reverse_kl(s, t, temperature=2.0).mean())
    # (N, C, H, W) logits: the class dim moves last and the pixels become rows
    s4, t4 = torch.randn(2, 5, 3, 3), torch.randn(2, 5, 3, 3)
    rows = token_divergence(s4.movedim(1, -1), t4.movedim(1, -1), "tv", temperature=2.0)
    assert_close(kd_loss(s4, t4, 2.0, "tv"), rows.mean())


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("beta", [-0.1, 1.5])
def test_beta_out_of_range(beta: float) -> None:
    with pytest.raises(ValueError, match=rf"beta must be in \[0, 1\], got {beta}"):
        generalized_jsd(_s(), _t(), beta=beta)
    with pytest.raises(ValueError, match="beta"):
        Divergence("jsd", beta=beta)


def test_other_bad_options() -> None:
    with pytest.raises(ValueError, match=r"skew must be in \[0, 1\), got 1.0"):
        skew_forward_kl(_s(), _t(), skew=1.0)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0, got 0"):
        forward_kl(_s(), _t(), temperature=0)
    with pytest.raises(TypeError, match=r"divergence must be a Divergence, a kind's name or a dict"):
        as_divergence(3)
    with pytest.raises(ValueError, match=r"mask \(3,\) does not match"):
        forward_kl(_s(), _t(), mask=torch.ones(3, dtype=torch.bool))


def test_unknown_kind_lists_the_valid_names() -> None:
    with pytest.raises(ValueError, match="kind='kl'") as info:
        token_divergence(_s(), _t(), "kl")
    assert all(name in str(info.value) for name in TOKEN_DIVERGENCES)


def test_mismatched_vocab_widths_need_vocab_size() -> None:
    s, t = torch.randn(2, 151936), torch.randn(2, 152064)
    with pytest.raises(ValueError, match=r"151936 .* 152064; pass vocab_size="):
        forward_kl(s, t)
    with pytest.raises(ValueError, match=r"vocab_size=152000 must be in \[1, 151936\]"):
        forward_kl(s, t, vocab_size=152000)
    assert forward_kl(s, t, vocab_size=151646).shape == (2,)


@pytest.mark.parametrize("kind", TOKEN_DIVERGENCES)
def test_an_extreme_temperature_never_gives_a_negative_loss(kind: str) -> None:
    """At T = 1e6 both softened distributions are uniform to fp32 precision: rounding once made KL ≈ -1e-8, which
    T² = 1e12 turned into a large negative loss; every divergence is floored at 0."""
    torch.manual_seed(0)
    s, t = torch.randn(64, 100) * 5, torch.randn(64, 100) * 5
    values = token_divergence(s, t, Divergence(kind, beta=0.3), temperature=1e6)
    assert (values >= 0).all() and kd_loss(s, t, 1e6, Divergence(kind)).item() >= 0

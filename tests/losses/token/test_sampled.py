"""Tokens drawn from the teacher: every divergence is estimated without bias, in value and gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lightning_kd.cache.lm_store import sampled_logprobs
from lightning_kd.losses.divergence import Divergence, divergence_kinds
from lightning_kd.losses.token import (
    chunked_sparse_distill_loss,
    sampled_distill_loss,
    topk_bucket_distill_loss,
)

KINDS = [Divergence(k) for k in divergence_kinds()] + [
    Divergence("jsd", beta=0.2),
    Divergence("skew_forward_kl", skew=0.3),
]


def _pair(v=40, t=2.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(v, generator=g) * 2
    z = torch.randn(v, generator=g) * 3
    return s, z, t


@pytest.mark.parametrize("d", KINDS, ids=lambda d: f"{d.kind}-{d.beta}-{d.skew}")
def test_every_divergence_is_a_sum_of_per_token_terms(d):
    s, z, t = _pair()
    log_s, log_t = torch.log_softmax(s / t, -1), torch.log_softmax(z / t, -1)
    whole = d.rows(s[None], z[None], temperature=t, scale_by_t2=False)[0]
    torch.testing.assert_close(d.pointwise(log_s, log_t).sum(), whole, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("d", KINDS, ids=lambda d: f"{d.kind}-{d.beta}-{d.skew}")
def test_the_expectation_over_one_draw_is_exactly_the_divergence_and_its_gradient(d):
    """E[D̂] = Σ_x p_t(x) · D̂({x}): the estimate of every possible single draw, weighted by its probability."""
    s, z, t = _pair()
    v = len(s)
    p = torch.softmax(z / t, -1)
    s_full = s.clone().requires_grad_(True)
    exact = d.rows(s_full[None], z[None], temperature=t)[0]  # T² included
    (g_exact,) = torch.autograd.grad(exact, s_full)
    s_each = s.clone().requires_grad_(True)
    ids = torch.arange(v)[:, None]  # draw x = 0 … V−1, one per row
    log_t_at = torch.log_softmax(z / t, -1)[ids]
    labels = torch.zeros(v, dtype=torch.long)
    rows = s_each.expand(v, v)
    per_draw = [sampled_distill_loss(rows[i : i + 1], log_t_at[i : i + 1], ids[i : i + 1], labels[i : i + 1],
                                     divergence=d, temperature=t, ce=False).div_sum for i in range(v)]  # fmt: skip
    expected = (torch.stack(per_draw) * p).sum()
    (g_expected,) = torch.autograd.grad(expected, s_each)
    torch.testing.assert_close(expected, exact, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_expected, g_exact, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind", ["forward_kl", "jsd", "tv"])
def test_many_draws_converge_to_the_full_divergence_and_gradient(kind):
    d = Divergence(kind)
    s, z, t = _pair(v=60, seed=3)
    s_ref = s.clone().requires_grad_(True)
    exact = d.rows(s_ref[None], z[None], temperature=t, scale_by_t2=False)[0]
    (g_ref,) = torch.autograd.grad(exact, s_ref)

    def estimate(n: int, seed: int):
        lp, ids = sampled_logprobs(z[None, None], n, t, [seed])
        s_req = s.clone().requires_grad_(True)
        log_s = torch.log_softmax(s_req / t, -1)
        terms = d.pointwise(log_s[ids[0, 0]], lp[0, 0]) * torch.exp(-lp[0, 0])
        (grad,) = torch.autograd.grad(terms.mean(), s_req)
        return terms.detach(), grad

    terms, g_est = estimate(40_000, 7)
    assert abs(terms.mean().item() - exact.item()) < 4 * (terms.std() / 40_000**0.5).item() + 1e-6
    # the gradient's error falls as 1/sqrt(draws): 16x the draws, about a quarter of the error (here: below half)
    error_many = (g_est - g_ref).norm()
    error_few = torch.stack([(estimate(2_500, seed)[1] - g_ref).norm() for seed in range(4)]).mean()
    assert error_many < 0.5 * error_few
    assert F.cosine_similarity(g_est, g_ref, dim=0) > (0.99 if kind == "forward_kl" else 0.9)


def test_the_draws_follow_the_seed_not_the_batch_and_carry_the_teachers_log_probabilities():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 30)
    lp, ids = sampled_logprobs(logits, 6, 2.0, [11, 12, 13])
    lp1, ids1 = sampled_logprobs(logits[1:2], 6, 2.0, [12])  # the same sequence, alone in its batch
    assert torch.equal(ids[1:2], ids1) and torch.equal(lp[1:2], lp1)
    torch.testing.assert_close(lp, torch.log_softmax(logits / 2.0, -1).gather(-1, ids))
    assert not torch.equal(sampled_logprobs(logits, 6, 2.0, [11, 12, 99])[1][2], ids[2])  # another seed, other draws
    with pytest.raises(ValueError, match=r"draws must be >= 1, got 0"):
        sampled_logprobs(logits, 0, 1.0, [0, 0, 0])


def test_the_loss_sums_valid_positions_with_t_squared_and_the_students_ce():
    torch.manual_seed(1)
    student, teacher = torch.randn(2, 4, 20), torch.randn(2, 4, 20)
    lp, ids = sampled_logprobs(teacher, 5, 2.0, [0, 1])
    labels = torch.tensor([[1, 2, 3, -100], [4, -100, 5, 6]])
    sums = sampled_distill_loss(student, lp, ids, labels, temperature=2.0)
    log_s = torch.log_softmax(student / 2.0, -1)
    per_pos = (lp - log_s.gather(-1, ids)).mean(-1)  # forward KL: log p_t(x) − log p_s(x), averaged over draws
    torch.testing.assert_close(sums.div_sum, 4.0 * per_pos[labels != -100].sum())
    torch.testing.assert_close(
        sums.ce_sum, F.cross_entropy(student.reshape(-1, 20), labels.reshape(-1), reduction="sum")
    )
    assert sums.num_valid == 6
    with pytest.raises(ValueError, match=r"must share their leading dimensions"):
        sampled_distill_loss(student, lp[:, :3], ids[:, :3], labels)


@pytest.mark.parametrize("which", ["sampled", "bucket"])
def test_the_chunked_sparse_loss_equals_the_full_logits_one_in_value_and_gradient(which):
    torch.manual_seed(2)
    h, w, b = torch.randn(2, 7, 8), torch.randn(25, 8), torch.randn(25)
    teacher = torch.randn(2, 7, 25)
    if which == "sampled":
        stored, loss = sampled_logprobs(teacher, 6, 1.5, [3, 4]), sampled_distill_loss
    else:
        stored, loss = torch.log_softmax(teacher / 1.5, -1).topk(5), topk_bucket_distill_loss
    labels = torch.randint(0, 25, (2, 7))
    labels[0, :2] = -100
    a_params = [x.clone().requires_grad_(True) for x in (h, w, b)]
    a = chunked_sparse_distill_loss(*a_params, *stored, labels, loss=loss, chunk_size=4, temperature=1.5,
                                    divergence="jsd")  # fmt: skip
    (a.ce_sum + a.div_sum).backward()
    b_params = [x.clone().requires_grad_(True) for x in (h, w, b)]
    full = F.linear(b_params[0], b_params[1], b_params[2])
    ref = loss(full, *stored, labels, temperature=1.5, divergence="jsd")
    (ref.ce_sum + ref.div_sum).backward()
    torch.testing.assert_close(a.div_sum, ref.div_sum)
    torch.testing.assert_close(a.ce_sum, ref.ce_sum)
    assert a.num_valid == ref.num_valid == 12
    for x, y in zip(a_params, b_params):
        torch.testing.assert_close(x.grad, y.grad, rtol=1e-4, atol=1e-5)

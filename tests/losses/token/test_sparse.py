"""The top-k bucket loss: the divergence between the k + 1 bucket distributions, worked out by hand; exact at
k = V; never above the full divergence (a coarse-graining); the CE over the full head; gradients to the student."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lightning_kd.losses.token import (
    TOKEN_DIVERGENCES,
    naive_token_distill_loss,
    topk_bucket_distill_loss,
    topk_bucket_logprobs,
)


def _teacher_topk(logits: torch.Tensor, k: int, t: float) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.log_softmax(logits / t, -1).topk(k, -1)


def test_forward_kl_over_buckets_is_the_formula_worked_out_by_hand():
    g = torch.Generator().manual_seed(0)
    s, z = torch.randn(5, 12, generator=g), torch.randn(5, 12, generator=g) * 2
    y = torch.tensor([3, -100, 0, 11, 7])
    t, k = 2.0, 4
    lp, ids = _teacher_topk(z, k, t)
    sums = topk_bucket_distill_loss(s, lp, ids, y, divergence="forward_kl", temperature=t)
    p_s, p_t = torch.softmax(s / t, -1), torch.softmax(z / t, -1)
    expected = 0.0
    for row in (0, 2, 3, 4):  # row 1 has no label
        top = ids[row].tolist()
        a = p_t[row, top]
        b = p_s[row, top]
        ra, rb = 1 - a.sum(), 1 - b.sum()
        expected += float((a * (a / b).log()).sum() + ra * (ra / rb).log())
    torch.testing.assert_close(sums.div_sum, torch.tensor(expected * t * t), atol=1e-5, rtol=1e-5)
    assert int(sums.num_valid) == 4
    torch.testing.assert_close(sums.ce_sum, F.cross_entropy(s, y, ignore_index=-100, reduction="sum"))


@pytest.mark.parametrize("temperature", [1.0, 1.5])
@pytest.mark.parametrize("kind", TOKEN_DIVERGENCES)
def test_k_equal_v_is_the_full_divergence(kind, temperature):
    g = torch.Generator().manual_seed(1)
    s, z = torch.randn(6, 9, generator=g, requires_grad=True), torch.randn(6, 9, generator=g)
    y = torch.tensor([1, 2, -100, 4, 5, 6])
    lp, ids = _teacher_topk(z, 9, temperature)
    bucket = topk_bucket_distill_loss(s, lp, ids, y, divergence=kind, temperature=temperature)
    full = naive_token_distill_loss(s, z, y, divergence=kind, temperature=temperature)
    torch.testing.assert_close(bucket.div_sum, full.div_sum, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(bucket.ce_sum, full.ce_sum)
    (grad_b,) = torch.autograd.grad(bucket.div_sum, s)
    (grad_f,) = torch.autograd.grad(full.div_sum, s)
    torch.testing.assert_close(grad_b, grad_f, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd", "tv"])
def test_buckets_never_exceed_the_full_divergence(kind):
    """Merging outcomes cannot increase an f-divergence (data-processing inequality): what the top-k teacher
    teaches is a coarse view of the full one, never more."""
    g = torch.Generator().manual_seed(2)
    s, z = torch.randn(64, 30, generator=g), torch.randn(64, 30, generator=g) * 3
    y = torch.zeros(64, dtype=torch.long)
    for k in (1, 4, 16):
        lp, ids = _teacher_topk(z, k, 1.0)
        per_k = topk_bucket_distill_loss(s, lp, ids, y, divergence=kind).div_sum
        assert per_k <= naive_token_distill_loss(s, z, y, divergence=kind).div_sum + 1e-5


def test_buckets_sum_to_one_and_only_the_student_gets_gradients():
    g = torch.Generator().manual_seed(3)
    s = torch.randn(2, 3, 20, generator=g, requires_grad=True)
    lp, ids = _teacher_topk(torch.randn(2, 3, 20, generator=g), 5, 1.0)
    log_s, log_t = topk_bucket_logprobs(s, lp.half(), ids.int())
    assert log_s.shape == log_t.shape == (2, 3, 6) and log_t.dtype == torch.float32
    torch.testing.assert_close(log_s.exp().sum(-1), torch.ones(2, 3))
    torch.testing.assert_close(log_t.exp().sum(-1), torch.ones(2, 3), atol=2e-3, rtol=0)  # fp16 store
    log_s.sum().backward()
    assert s.grad is not None and not lp.requires_grad


def test_a_padded_student_head_is_cut_to_the_store_vocabulary_and_shapes_are_checked():
    g = torch.Generator().manual_seed(4)
    s = torch.randn(3, 10, generator=g)
    padded = torch.cat([s, torch.full((3, 2), 5.0)], -1)  # two padding ids the tokenizer never produces
    lp, ids = _teacher_topk(torch.randn(3, 10, generator=g), 3, 1.0)
    y = torch.tensor([1, 2, 3])
    cut = topk_bucket_distill_loss(padded, lp, ids, y, vocab_size=10, ce=False).div_sum
    torch.testing.assert_close(cut, topk_bucket_distill_loss(s, lp, ids, y, ce=False).div_sum)
    with pytest.raises(ValueError, match=r"must share their leading dimensions"):
        topk_bucket_logprobs(s, lp[:2], ids[:2])
    with pytest.raises(ValueError, match=r"keeps k=3 tokens but the student's logits have only 2 columns"):
        topk_bucket_logprobs(s[:, :2], lp, ids)


def test_a_student_with_all_its_mass_in_the_top_k_gets_finite_gradients():
    """A confident student (its tail mass rounds to 0 in fp32) must not turn the tail bucket into 0 · inf."""
    s = torch.full((2, 50), -60.0)
    s[:, 3] = 60.0
    s.requires_grad_(True)
    lp, ids = _teacher_topk(torch.randn(2, 50), 8, 1.0)
    ids[:, 0] = 3  # the student's only token is among the teacher's top k
    for kind in TOKEN_DIVERGENCES:
        sums = topk_bucket_distill_loss(s, lp, ids, torch.tensor([3, 3]), divergence=kind)
        (grad,) = torch.autograd.grad(sums.div_sum + sums.ce_sum, s)
        assert torch.isfinite(sums.div_sum) and torch.isfinite(grad).all(), kind

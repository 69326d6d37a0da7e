"""Cross-tokenizer token losses: ULD against hand-computed values, span-aligned KL through a vocabulary map (by hand,
and equal to the same-tokenizer divergence when the map is the identity), chunked = unchunked, the teacher
untouched, and the errors."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_kd.losses.divergence import Divergence, divergence_kinds
from lightning_kd.losses.token.cross import cross_tokenizer_div_sum, mapped_logprobs, shared_ids, uld_rows


def test_uld_by_hand_pads_the_shorter_vector_and_ignores_token_identity():
    s = torch.tensor([[0.7, 0.2, 0.1]]).log()
    t = torch.tensor([[0.1, 0.5, 0.3, 0.1]]).log()
    # sorted: (0.7, 0.2, 0.1, 0) vs (0.5, 0.3, 0.1, 0.1): 0.2 + 0.1 + 0 + 0.1
    assert uld_rows(s, t).item() == pytest.approx(0.4, abs=1e-6)
    permuted = torch.tensor([[0.1, 0.7, 0.2]]).log()
    assert uld_rows(permuted, t).item() == pytest.approx(0.4, abs=1e-6)  # identities do not matter

    # at T = 2: softmax(log p / 2) ∝ sqrt(p)
    def soft(p):
        q = torch.tensor(p).sqrt()
        return sorted((q / q.sum()).tolist(), reverse=True)

    a, b = soft([0.7, 0.2, 0.1]) + [0.0], soft([0.1, 0.5, 0.3, 0.1])
    assert uld_rows(s, t, temperature=2.0).item() == pytest.approx(sum(abs(x - y) for x, y in zip(a, b)), abs=1e-6)


def test_uld_gradient_reaches_the_student_only():
    s = torch.randn(3, 5, requires_grad=True)
    t = torch.randn(3, 7, requires_grad=True)
    uld_rows(s, t).sum().backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None


def test_mapped_logprobs_by_hand():
    # student vocabulary a b c; teacher vocabulary a c d e (d, e unknown to the student; b unknown to the teacher)
    p_s, p_t = torch.tensor([[0.5, 0.3, 0.2]]), torch.tensor([[0.4, 0.1, 0.3, 0.2]])
    vocab_map = torch.tensor([0, 2, -1, -1])
    log_s, log_t = mapped_logprobs(p_s.log(), p_t.log(), shared_ids(vocab_map))
    assert log_s.exp().tolist()[0] == pytest.approx([0.5, 0.2, 0.3], abs=1e-6)  # a, c, other (= b)
    assert log_t.exp().tolist()[0] == pytest.approx([0.4, 0.1, 0.5], abs=1e-6)  # a, c, other (= d + e)
    kl = 0.4 * math.log(0.4 / 0.5) + 0.1 * math.log(0.1 / 0.2) + 0.5 * math.log(0.5 / 0.3)
    got = cross_tokenizer_div_sum(p_s.log(), p_t.log(), vocab_map=vocab_map, chunk_size=None)
    assert got.item() == pytest.approx(kl, abs=1e-6)


@pytest.mark.parametrize("kind", divergence_kinds())
def test_identity_map_gives_the_same_tokenizer_divergence(kind):
    torch.manual_seed(0)
    s, t = torch.randn(6, 11), torch.randn(6, 11)
    d = Divergence(kind, beta=0.3, skew=0.2)
    identity = torch.arange(11)
    for temperature in (1.0, 2.0):
        got = cross_tokenizer_div_sum(s, t, vocab_map=identity, divergence=d, temperature=temperature, chunk_size=4)
        want = d.rows(s, t, temperature).sum()
        assert got.item() == pytest.approx(want.item(), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("loss", ["uld", "span_kl"])
def test_chunked_heads_equal_full_logits_in_value_and_gradient(loss):
    torch.manual_seed(1)
    h_s, h_t = torch.randn(9, 4, requires_grad=True), torch.randn(9, 6)
    w_s, w_t = torch.randn(13, 4, requires_grad=True), torch.randn(17, 6)
    vocab_map = torch.full((17,), -1)
    vocab_map[torch.tensor([0, 3, 5, 8, 16])] = torch.tensor([2, 0, 12, 7, 5])
    options = dict(loss=loss, vocab_map=vocab_map, temperature=1.5)
    full = cross_tokenizer_div_sum(h_s @ w_s.T, h_t @ w_t.T, chunk_size=None, **options)
    g_full = torch.autograd.grad(full, (h_s, w_s))
    chunked = cross_tokenizer_div_sum(h_s, h_t, student_head=(w_s, None), teacher_head=(w_t, None), chunk_size=2,
                                      **options)  # fmt: skip
    g_chunked = torch.autograd.grad(chunked, (h_s, w_s))
    assert chunked.item() == pytest.approx(full.item(), rel=1e-5)
    for a, b in zip(g_full, g_chunked):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_no_pairs_gives_zero_that_still_backpropagates():
    s = torch.randn(0, 5, requires_grad=True)
    out = cross_tokenizer_div_sum(s, torch.randn(0, 7), loss="uld")
    out.backward()
    assert out.item() == 0.0 and s.grad is not None


def test_errors_name_the_fix():
    with pytest.raises(ValueError, match="'uld' or 'span_kl'"):
        cross_tokenizer_div_sum(torch.randn(2, 3), torch.randn(2, 3), loss="kl")
    with pytest.raises(ValueError, match="one row per aligned pair"):
        cross_tokenizer_div_sum(torch.randn(2, 3), torch.randn(3, 3), loss="uld")
    with pytest.raises(ValueError, match="needs the vocab_map"):
        cross_tokenizer_div_sum(torch.randn(2, 3), torch.randn(2, 3))


def test_a_many_to_one_map_sums_the_teachers_probabilities_in_probability_space():
    # student a b c; teacher a ab abc d: "ab" and "abc" start with the student's "ab"? no: with "a"; d unmapped
    p_s, p_t = torch.tensor([[0.5, 0.3, 0.2]]), torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    vocab_map = torch.tensor([0, 0, 0, -1])  # all three teacher tokens whose text starts with "a" -> student "a"
    log_s, log_t = mapped_logprobs(p_s.log(), p_t.log(), shared_ids(vocab_map))
    assert log_t.exp().tolist()[0] == pytest.approx([0.6, 0.4], abs=1e-6)  # a, other (= d)
    assert log_s.exp().tolist()[0] == pytest.approx([0.5, 0.5], abs=1e-6)  # a, other (= b + c)
    got = cross_tokenizer_div_sum(p_s.log(), p_t.log(), vocab_map=vocab_map, chunk_size=None)
    assert got.item() == pytest.approx(0.6 * math.log(0.6 / 0.5) + 0.4 * math.log(0.4 / 0.5), abs=1e-6)


def test_a_permuted_one_to_one_map_compares_the_right_columns():
    s, t = torch.randn(4, 5), torch.randn(4, 5)
    perm = torch.tensor([3, 0, 4, 1, 2])  # teacher id k is student id perm[k]
    want = Divergence().rows(s, t[:, torch.argsort(perm)], 1.0).sum()
    got = cross_tokenizer_div_sum(s, t, vocab_map=perm, chunk_size=None)
    assert got.item() == pytest.approx(want.item(), rel=1e-5)

"""The token-loss strategies: each computes the same sums its loss function does, asks the teacher for what it
needs, and says what is missing; the student alone gets the plain cross-entropy from any of them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

pytest.importorskip("transformers")

from lightning_kd.core.lm import (  # noqa: E402
    CausalLMTeacher,
    ChunkedTokenLoss,
    FullLogitsTokenLoss,
    StudentRows,
    TopKTokenLoss,
)
from lightning_kd.core.teacher import TeacherOutput  # noqa: E402
from lightning_kd.losses.divergence import Divergence  # noqa: E402
from lightning_kd.losses.token import naive_token_distill_loss, topk_bucket_distill_loss  # noqa: E402
from tests.lm_helpers import V, tiny  # noqa: E402

JSD = Divergence("jsd", beta=0.3)


def _batch(seed: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (2, 9), generator=g)
    labels = torch.cat([ids[:, 1:], torch.full((2, 1), -100)], 1)
    labels[0, :3] = -100
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, labels


def test_full_and_chunked_strategies_give_the_loss_functions_sums():
    inputs, labels = _batch()
    student, teacher = tiny(2), CausalLMTeacher(tiny(1, hidden=48))
    full, chunked = FullLogitsTokenLoss(), ChunkedTokenLoss(chunk_size=5)
    with torch.no_grad():
        s_logits, t_logits = student(**inputs).logits, teacher.model(**inputs).logits
    want = naive_token_distill_loss(s_logits, t_logits, labels, divergence=JSD, temperature=2.0)
    for strategy in (full, chunked):
        rows = strategy.student_rows(student, inputs)
        out = strategy.teacher_output(teacher, inputs, None)
        assert (out.hidden is not None) == (strategy is chunked) and (out.logits is not None) == (strategy is full)
        got = strategy.sums(rows, out, labels, divergence=JSD, temperature=2.0, vocab_size=None)
        assert_close(got.div_sum, want.div_sum, rtol=1e-4, atol=1e-5)
        assert_close(got.ce_sum, want.ce_sum, rtol=1e-4, atol=1e-5)
        assert got.num_valid.item() == (labels != -100).sum().item() == 13


def test_the_student_alone_gets_the_plain_cross_entropy():
    inputs, labels = _batch(1)
    model = tiny(2)
    with torch.no_grad():
        logits = model(**inputs).logits
    want = F.cross_entropy(logits.reshape(-1, V), labels.reshape(-1), ignore_index=-100, reduction="sum")
    for strategy in (FullLogitsTokenLoss(), ChunkedTokenLoss(chunk_size=4, student_name="model")):
        sums = strategy.sums(strategy.student_rows(model, inputs), None, labels)
        assert_close(sums.ce_sum, want, rtol=1e-4, atol=1e-4)
        assert sums.div_sum.item() == 0.0


def test_the_top_k_strategy_checks_the_stores_temperature_and_falls_back_to_live_logits():
    torch.manual_seed(0)
    s, t = torch.randn(2, 5, 12), torch.randn(2, 5, 12)
    labels = torch.randint(0, 12, (2, 5))
    lp, ids = torch.log_softmax(t / 2.0, -1).topk(4)
    rows = StudentRows(s)
    topk = TopKTokenLoss("bucket")
    stored = TeacherOutput(topk_logprobs=lp, topk_ids=ids, temperature=2.0)
    got = topk.sums(rows, stored, labels, divergence=JSD, temperature=2.0)
    want = topk_bucket_distill_loss(s, lp, ids, labels, divergence=JSD, temperature=2.0)
    assert_close(got.div_sum, want.div_sum)
    with pytest.raises(ValueError, match=r"temperature: store 2.0, this run 1.0 \(set the run's temperature"):
        topk.sums(rows, stored, labels, divergence=JSD, temperature=1.0)
    # generated text is in no store: the live model's logits are compared instead
    live = topk.sums(rows, TeacherOutput(logits=t), labels, divergence=JSD, temperature=2.0)
    full = naive_token_distill_loss(s, t, labels, divergence=JSD, temperature=2.0)
    assert_close(live.div_sum, full.div_sum)
    with pytest.raises(ValueError, match=r"TopKTokenLoss needs the teacher's stored tokens .*with_indices: true"):
        topk.sums(rows, TeacherOutput(), labels)
    with pytest.raises(ValueError, match="tail must be 'bucket' or 'uniform'"):
        TopKTokenLoss("flat")  # type: ignore[arg-type]


def test_a_chunked_strategy_without_the_teachers_head_says_the_fix():
    inputs, labels = _batch()
    rows = ChunkedTokenLoss(4).student_rows(tiny(2), inputs)
    with pytest.raises(ValueError, match="needs the teacher's final hidden states and lm head .*chunk_size: null"):
        ChunkedTokenLoss(4).sums(rows, TeacherOutput(logits=torch.zeros(2, 9, V)), labels)
    with pytest.raises(ValueError, match="chunk_size must be a positive int or None"):
        ChunkedTokenLoss(0)

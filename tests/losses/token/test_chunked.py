"""Chunked lm-head distillation against the naive full-logits reference: the same sums, count and gradients
for every divergence, with masks, T != 1, ragged chunks, tied embeddings, biased heads, padded vocabularies
and different hidden widths; no gradient into the teacher; no (tokens × vocab) tensor kept for backward."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from lightning_kd.losses.divergence import Divergence
from lightning_kd.losses.token import (
    TOKEN_DIVERGENCES,
    chunked_token_distill_loss,
    naive_token_distill_loss,
)
from tests.helpers import REPO

N, V, HS, HT = 300, 500, 32, 48
CHUNK = 64  # does not divide N: the last chunk has 44 rows


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _labels(n: int = N, vocab: int = V) -> torch.Tensor:
    labels = torch.randint(0, vocab, (n,))
    labels[torch.rand(n) < 0.2] = -100
    labels[CHUNK : 2 * CHUNK] = -100  # a whole chunk masked
    return labels


def _inputs(v_s: int = V, v_t: int = V, bias: bool = True) -> dict:
    return dict(
        h_s=torch.randn(N, HS, requires_grad=True),
        w_s=(torch.randn(v_s, HS) * 0.2).requires_grad_(True),
        b_s=(torch.randn(v_s) * 0.1).requires_grad_(True) if bias else None,
        h_t=torch.randn(N, HT, requires_grad=True),  # requires_grad only to check that none arrives
        w_t=(torch.randn(v_t, HT) * 0.3).requires_grad_(True),
        b_t=(torch.randn(v_t) * 0.1).requires_grad_(True) if bias else None,
    )


def _run(x: dict, labels: torch.Tensor, chunked: bool, **options):
    """Sums and the gradients of ``(ce_sum + 0.7 · div_sum) / num_valid`` w.r.t. the student tensors."""
    student = [x["h_s"], x["w_s"]] + ([x["b_s"]] if x["b_s"] is not None else [])
    if chunked:
        sums = chunked_token_distill_loss(
            x["h_s"], x["w_s"], x["b_s"], x["h_t"], x["w_t"], x["b_t"], labels, chunk_size=CHUNK, **options
        )
    else:
        s_logits = F.linear(x["h_s"], x["w_s"], x["b_s"])
        t_logits = F.linear(x["h_t"], x["w_t"], x["b_t"])
        sums = naive_token_distill_loss(s_logits, t_logits, labels, **options)
    loss = (sums.ce_sum + 0.7 * sums.div_sum) / sums.num_valid
    grads = torch.autograd.grad(loss, student)
    return sums, grads


def _assert_same(x: dict, labels: torch.Tensor, **options) -> None:
    naive, naive_grads = _run(x, labels, chunked=False, **options)
    chunked, chunked_grads = _run(x, labels, chunked=True, **options)
    assert chunked.num_valid.item() == naive.num_valid.item() == (labels != -100).sum().item()
    assert_close(chunked.ce_sum, naive.ce_sum, rtol=1e-5, atol=1e-5)
    assert_close(chunked.div_sum, naive.div_sum, rtol=1e-5, atol=1e-5)
    assert chunked.div_sum.dtype == chunked.ce_sum.dtype == torch.float32
    for got, want in zip(chunked_grads, naive_grads, strict=True):
        assert want.abs().sum() > 0
        assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", TOKEN_DIVERGENCES)
def test_chunked_equals_naive_for_every_kind(kind: str) -> None:
    _assert_same(_inputs(), _labels(), divergence=Divergence(kind, beta=0.3, skew=0.2), temperature=2.0)


@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_chunked_equals_naive_at_jsd_endpoints(beta: float) -> None:
    _assert_same(_inputs(bias=False), _labels(), divergence=Divergence("jsd", beta=beta), temperature=0.7)


def test_chunked_with_padded_vocabularies() -> None:
    # Student head 508 wide, teacher 512, shared tokenizer of 500: CE over the student's full head.
    _assert_same(_inputs(v_s=V + 8, v_t=V + 12), _labels(), divergence="forward_kl", vocab_size=V)


def test_masked_rows_add_nothing() -> None:
    x, labels = _inputs(), _labels()
    sums = chunked_token_distill_loss(x["h_s"], x["w_s"], x["b_s"], x["h_t"], x["w_t"], x["b_t"], labels)
    valid = labels != -100
    kept = {k: (v[valid] if k.startswith("h_") else v) for k, v in x.items()}
    only_valid = chunked_token_distill_loss(
        kept["h_s"], x["w_s"], x["b_s"], kept["h_t"], x["w_t"], x["b_t"], labels[valid]
    )
    assert_close(sums.ce_sum, only_valid.ce_sum, rtol=1e-5, atol=1e-5)
    assert_close(sums.div_sum, only_valid.div_sum, rtol=1e-5, atol=1e-5)
    # Garbage in the masked rows' hidden states changes nothing either.
    h_s = x["h_s"].detach().clone()
    h_s[~valid] = 1e4
    spoiled = chunked_token_distill_loss(h_s, x["w_s"], x["b_s"], x["h_t"], x["w_t"], x["b_t"], labels)
    assert_close(spoiled.div_sum, sums.div_sum, rtol=1e-5, atol=1e-5)


def test_teacher_gets_no_gradient() -> None:
    x, labels = _inputs(), _labels()
    sums = chunked_token_distill_loss(
        x["h_s"], x["w_s"], x["b_s"], x["h_t"], x["w_t"], x["b_t"], labels, divergence="reverse_kl", chunk_size=CHUNK
    )
    (sums.ce_sum + sums.div_sum).backward()
    assert x["h_s"].grad is not None and x["w_s"].grad is not None and x["b_s"].grad is not None
    assert x["h_t"].grad is None and x["w_t"].grad is None and x["b_t"].grad is None


def test_tied_embeddings_receive_both_gradients() -> None:
    # The lm head IS the input embedding: the gradient reaches it through the head and through the inputs.
    emb = torch.nn.Embedding(V, HS)
    mix = torch.nn.Linear(HS, HS)
    ids = torch.randint(0, V, (N,))
    h_t, w_t, labels = torch.randn(N, HT), torch.randn(V, HT) * 0.3, _labels()
    grads = []
    for chunked in (False, True):
        hidden = torch.tanh(mix(emb(ids)))
        if chunked:
            sums = chunked_token_distill_loss(hidden, emb.weight, None, h_t, w_t, None, labels, chunk_size=CHUNK)
        else:
            sums = naive_token_distill_loss(hidden @ emb.weight.T, h_t @ w_t.T, labels)
        loss = (sums.ce_sum + sums.div_sum) / sums.num_valid
        grads.append(torch.autograd.grad(loss, [emb.weight, mix.weight, mix.bias]))
    for got, want in zip(grads[1], grads[0], strict=True):
        assert want.abs().sum() > 0
        assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_ce_off_and_no_grad() -> None:
    x, labels = _inputs(), _labels()
    args = (x["h_s"], x["w_s"], x["b_s"], x["h_t"], x["w_t"], x["b_t"], labels)
    with_ce = chunked_token_distill_loss(*args, divergence="tv", chunk_size=CHUNK)
    without = chunked_token_distill_loss(*args, divergence="tv", chunk_size=CHUNK, ce=False)
    assert without.ce_sum is None
    assert_close(without.div_sum, with_ce.div_sum)
    with torch.no_grad():
        evaluated = chunked_token_distill_loss(*args, divergence="tv", chunk_size=CHUNK)
    assert not evaluated.div_sum.requires_grad
    assert_close(evaluated.ce_sum, with_ce.ce_sum.detach())


def test_leading_dims() -> None:
    x, labels = _inputs(), _labels()
    options = dict(divergence="skew_reverse_kl", temperature=1.5, chunk_size=CHUNK)
    flat = chunked_token_distill_loss(x["h_s"], x["w_s"], x["b_s"], x["h_t"], x["w_t"], x["b_t"], labels, **options)
    batched = chunked_token_distill_loss(
        x["h_s"].reshape(3, 100, HS), x["w_s"], x["b_s"], x["h_t"].reshape(3, 100, HT), x["w_t"], x["b_t"],
        labels.reshape(3, 100), **options,
    )  # fmt: skip
    assert_close(batched.div_sum, flat.div_sum, rtol=1e-5, atol=1e-5)
    assert_close(batched.ce_sum, flat.ce_sum, rtol=1e-5, atol=1e-5)


def test_bf16_hidden_states_give_fp32_sums() -> None:
    x, labels = _inputs(), _labels()
    bf = {k: (v.detach().bfloat16() if v is not None else None) for k, v in x.items()}
    sums = chunked_token_distill_loss(bf["h_s"], bf["w_s"], bf["b_s"], bf["h_t"], bf["w_t"], bf["b_t"], labels)
    assert sums.div_sum.dtype == sums.ce_sum.dtype == torch.float32
    reference = naive_token_distill_loss(
        F.linear(bf["h_s"], bf["w_s"], bf["b_s"]), F.linear(bf["h_t"], bf["w_t"], bf["b_t"]), labels
    )
    assert_close(sums.div_sum, reference.div_sum, rtol=1e-4, atol=1e-4)


def test_nothing_vocabulary_sized_is_kept_for_backward() -> None:
    # Bytes that autograd saves for backward outside the per-chunk checkpoints, not counting the inputs
    # themselves (the checkpoints hold references to them): the naive path saves (N, V) logits and
    # log-probabilities, the chunked one nothing of that size.
    def saved_bytes(chunked: bool) -> int:
        x, labels = _inputs(bias=False), _labels()
        inputs = {t.untyped_storage().data_ptr() for t in (*x.values(), labels) if t is not None}
        new: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            if t.untyped_storage().data_ptr() not in inputs:
                new[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            if chunked:
                chunked_token_distill_loss(
                    x["h_s"], x["w_s"], None, x["h_t"], x["w_t"], None, labels, divergence="jsd", chunk_size=CHUNK
                )
            else:
                naive_token_distill_loss(x["h_s"] @ x["w_s"].T, x["h_t"] @ x["w_t"].T, labels, divergence="jsd")
        return sum(new.values())

    full_logits = N * V * 4
    assert saved_bytes(chunked=False) >= full_logits
    assert saved_bytes(chunked=True) < CHUNK * V * 4


def test_errors_name_the_problem() -> None:
    x, labels = _inputs(v_t=V + 12), _labels()
    args = (x["h_s"], x["w_s"], x["b_s"], x["h_t"], x["w_t"], x["b_t"], labels)
    with pytest.raises(ValueError, match=r"500 .* 512; pass vocab_size="):
        chunked_token_distill_loss(*args)
    with pytest.raises(ValueError, match="chunk_size must be a positive int, got 0"):
        chunked_token_distill_loss(*args, vocab_size=V, chunk_size=0)
    with pytest.raises(ValueError, match=r"student_hidden \(300, 32\) does not fit student_weight \(500, 48\)"):
        chunked_token_distill_loss(x["h_s"], x["w_t"][:V], None, x["h_t"], x["w_t"], None, labels, vocab_size=V)
    with pytest.raises(ValueError, match=r"labels must be integer token ids of shape \(300,\)"):
        chunked_token_distill_loss(*args[:-1], labels[:-1], vocab_size=V)
    with pytest.raises(ValueError, match="unknown divergence kind='kld'"):
        chunked_token_distill_loss(*args, vocab_size=V, divergence="kld")


def test_memory_benchmark_script_runs(tmp_path) -> None:
    out = tmp_path / "lm.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "lm_loss_memory.py"), "--vocab", "96", "--tokens", "40"]
    cmd += ["--hidden", "8", "--chunk", "16", "--json", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert "| 96 |" in result.stdout
    rows = json.loads(out.read_text())["results"]
    assert [(r["vocab"], r["method"]) for r in rows] == [(96, "naive"), (96, "chunked")]
    assert all(r["agrees"] for r in rows if r["method"] == "chunked")

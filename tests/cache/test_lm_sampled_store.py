"""Sampled LM teacher stores (tokens drawn from the teacher), the fidelity report of every store, and a sparse
teacher under the chunked loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from lightning_kd.cache.lm_build import build_lm_store  # noqa: E402
from lightning_kd.cache.lm_store import LMTeacherStore, draw_seed  # noqa: E402
from lightning_kd.cache.lm_teacher import CachedLMTeacher  # noqa: E402
from lightning_kd.modules.causal_lm import CausalLMDistillation  # noqa: E402
from tests.cache.test_lm_store import fit, make_dm, sgd  # noqa: E402
from tests.lm_helpers import tiny  # noqa: E402


def _teacher_logp(dm, split, temperature=1.0):
    with torch.no_grad():
        logits = tiny(1)(input_ids=torch.as_tensor(dm.splits[split].ids.astype("int64"))).logits
    return torch.log_softmax(logits[..., : dm.vocab_size].float() / temperature, -1)


def test_a_sampled_store_holds_seeded_draws_with_the_teachers_log_probabilities(tmp_path):
    dm = make_dm(tmp_path)
    dm.setup()
    store = build_lm_store(tiny(1), dm, tmp_path / "s", k=12, temperature=2.0, dtype="fp32", kind="sampled", seed=5)
    meta = LMTeacherStore.open(tmp_path / "s").meta
    assert (meta["kind"], meta["seed"], meta["k"]) == ("sampled", 5, 12)
    logp = _teacher_logp(dm, "train", 2.0)
    ids = torch.from_numpy(np.asarray(store.arrays["ids"])).long()
    torch.testing.assert_close(torch.from_numpy(np.asarray(store.arrays["logprobs"])), logp.gather(-1, ids))
    # each sequence's draws come from its own seed: built again in other batches, the same draws
    again = build_lm_store(tiny(1), dm, tmp_path / "t", k=12, temperature=2.0, dtype="fp32", kind="sampled",
                           seed=5, batch_size=3)  # fmt: skip
    assert np.array_equal(np.asarray(again.arrays["ids"]), np.asarray(store.arrays["ids"]))
    g = torch.Generator().manual_seed(draw_seed(5, 2))
    first = torch.multinomial(logp[2].exp(), 12, replacement=True, generator=g)
    assert torch.equal(ids[2], first)
    other = build_lm_store(tiny(1), dm, tmp_path / "u", k=12, temperature=2.0, kind="sampled", seed=6)
    assert not np.array_equal(np.asarray(other.arrays["ids"]), np.asarray(store.arrays["ids"]))


def test_the_fidelity_report_is_written_and_agrees_with_a_hand_computation(tmp_path):
    dm = make_dm(tmp_path)
    dm.setup()
    topk = build_lm_store(tiny(1), dm, tmp_path / "k", k=8, dtype="fp32")
    fid = LMTeacherStore.open(tmp_path / "k").meta["fidelity"]
    logp = _teacher_logp(dm, "train")
    mass = logp.exp().topk(8, -1).values.sum(-1).mean().item()
    assert fid["bytes_per_token"] == 8 * (4 + 4) and fid["captured_mass"] == pytest.approx(mass, abs=1e-5)
    assert fid["build_seconds"] > 0 and topk.meta["fidelity"] == fid
    # held out: the first validation sequences, the stored top-8 read with a uniform tail, against the full p
    p = _teacher_logp(dm, "val")[:16].exp()
    top, ids = p.topk(8, -1)
    q = torch.full_like(p, 0).scatter(-1, ids, top)
    rest = (1 - top.sum(-1, keepdim=True)) / (dm.vocab_size - 8)
    q = torch.where(q > 0, q, rest)
    kl = (q * (q.log() - p.log())).sum(-1).mean().item()
    held = fid["held_out"]
    assert held["positions"] == p.shape[0] * p.shape[1]
    assert held["kl_stored_to_full"] == pytest.approx(kl, rel=1e-3)
    assert held["tv"] == pytest.approx(0.5 * (q - p).abs().sum(-1).mean().item(), rel=1e-3)
    # k = V keeps everything: all the mass, nothing lost
    full = build_lm_store(tiny(1), dm, tmp_path / "v", k=dm.vocab_size, dtype="fp32").meta["fidelity"]
    assert full["captured_mass"] == pytest.approx(1.0, abs=1e-5)
    assert full["held_out"]["kl_stored_to_full"] == pytest.approx(0.0, abs=1e-4)
    # sampled: the mass of the distinct tokens drawn; more draws, a closer empirical distribution
    few = build_lm_store(tiny(1), dm, tmp_path / "s4", k=4, kind="sampled").meta["fidelity"]
    many = build_lm_store(tiny(1), dm, tmp_path / "s64", k=64, kind="sampled").meta["fidelity"]
    assert 0 < few["captured_mass"] < many["captured_mass"] <= 1
    assert many["held_out"]["tv"] < few["held_out"]["tv"]
    assert few["bytes_per_token"] == 4 * 6


@pytest.mark.parametrize("chunk_size", [None, 8])
def test_a_sampled_store_trains_a_student_and_the_chunked_loss_trains_it_alike(tmp_path, chunk_size):
    dm = make_dm(tmp_path)
    dm.setup()
    build_lm_store(tiny(1), dm, tmp_path / "store", k=16, temperature=2.0, kind="sampled")
    runs = {}
    for name, chunk in (("full", None), ("chunked", chunk_size)):
        module = CausalLMDistillation(
            teacher=CachedLMTeacher(str(tmp_path / "store"), model=tiny(1), kind="sampled"),
            student=tiny(2), chunk_size=chunk, temperature=2.0, alpha=0.7, optimizer=sgd,
        )  # fmt: skip
        trainer = fit(module, make_dm(tmp_path), tmp_path / name, steps=3)
        assert torch.isfinite(trainer.callback_metrics["train/loss"])
        runs[name] = module
    moved = [not torch.equal(a, b) for a, b in zip(runs["full"].student.parameters(), tiny(2).parameters())]
    assert all(moved)
    for a, b in zip(runs["full"].student.parameters(), runs["chunked"].student.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_a_top_k_store_under_the_chunked_loss_trains_as_with_full_logits(tmp_path):
    dm = make_dm(tmp_path)
    dm.setup()
    build_lm_store(tiny(1), dm, tmp_path / "store", k=8)
    students = []
    for chunk in (None, 5):
        module = CausalLMDistillation(
            teacher=CachedLMTeacher(str(tmp_path / "store"), model=tiny(1)), student=tiny(2), chunk_size=chunk,
            alpha=0.5, optimizer=sgd,
        )  # fmt: skip
        fit(module, make_dm(tmp_path), tmp_path / f"run{chunk}", steps=2)
        students.append(module.student)
    for a, b in zip(*(s.parameters() for s in students)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)

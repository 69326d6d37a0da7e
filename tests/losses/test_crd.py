"""CRD: memory-bank update and normalisation constants, NCE golden value, contract, errors, IndexedDataset."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close
from torch.utils.data import DataLoader

from lightning_kd.data.base import TensorClassificationDataset
from lightning_kd.data.with_index import IndexedDataset
from lightning_kd.losses.contrastive import ContrastMemory, CRDLoss, Embed, crd_nce_loss


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _unit(*shape: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape), dim=1)


# ---------------------------------------------------------------- memory bank


def test_momentum_update_rows_at_idx_only() -> None:
    memory = ContrastMemory(feat_dim=4, n_data=10, num_negatives=3)
    old_s, old_t = memory.bank_s.clone(), memory.bank_t.clone()
    v_s, v_t = _unit(3, 4), _unit(3, 4)
    idx = torch.tensor([7, 2, 5])
    memory(v_s, v_t, idx)
    for bank, old, v in ((memory.bank_s, old_s, v_s), (memory.bank_t, old_t, v_t)):
        for row, i in enumerate(idx.tolist()):
            mixed = [0.5 * a + 0.5 * b for a, b in zip(old[i].tolist(), v[row].tolist(), strict=True)]
            norm = math.sqrt(sum(x * x for x in mixed))
            assert_close(bank[i], torch.tensor([x / norm for x in mixed]))
        others = [i for i in range(10) if i not in idx.tolist()]
        assert torch.equal(bank[others], old[others])


def test_banks_initialised_uniformly_in_stdv() -> None:
    memory = ContrastMemory(feat_dim=12, n_data=500, num_negatives=3)
    stdv = 1.0 / math.sqrt(12 / 3)
    for bank in (memory.bank_s, memory.bank_t):
        assert bank.shape == (500, 12)
        assert bank.min() >= -stdv and bank.max() <= stdv
        assert bank.min() < -0.9 * stdv and bank.max() > 0.9 * stdv
    assert not torch.equal(memory.bank_s, memory.bank_t)


def test_eval_mode_leaves_banks_alone() -> None:
    memory = ContrastMemory(feat_dim=4, n_data=10, num_negatives=3).eval()
    old = memory.bank_s.clone()
    memory(_unit(2, 4), _unit(2, 4), torch.tensor([0, 1]))
    assert torch.equal(memory.bank_s, old)
    assert memory.z_s.item() == -1 and memory.z_t.item() == -1  # Z is fixed by the first *training* batch


def test_banks_in_state_dict_and_reload() -> None:
    loss = CRDLoss(student_dim=6, teacher_dim=5, n_data=20, feat_dim=4, num_negatives=5)
    loss(torch.randn(3, 6), torch.randn(3, 5), torch.tensor([1, 4, 9]))
    state = loss.state_dict()
    assert {"memory.bank_s", "memory.bank_t", "memory.z_s", "memory.z_t"} <= set(state)
    fresh = CRDLoss(student_dim=6, teacher_dim=5, n_data=20, feat_dim=4, num_negatives=5)
    assert not torch.equal(fresh.memory.bank_s, loss.memory.bank_s)
    fresh.load_state_dict(state)
    for name in ("bank_s", "bank_t", "z_s", "z_t"):
        assert torch.equal(getattr(fresh.memory, name), getattr(loss.memory, name))


def test_z_set_on_first_call_then_fixed() -> None:
    memory = ContrastMemory(feat_dim=4, n_data=10, num_negatives=3)
    assert memory.z_s.item() == -1 and memory.z_t.item() == -1
    v_s, v_t, idx = _unit(2, 4), _unit(2, 4), torch.tensor([3, 8])
    neg = memory.sample_negatives(2)
    all_idx = torch.cat([idx[:, None], neg], dim=1)
    # Independently: Z = mean(exp(bank · v / τ)) · n_data over the first batch, with the banks before update.
    raw_s = torch.exp(torch.einsum("nkd,nd->nk", memory.bank_t[all_idx], v_s) / 0.07)
    raw_t = torch.exp(torch.einsum("nkd,nd->nk", memory.bank_s[all_idx], v_t) / 0.07)
    out_s, out_t = memory(v_s, v_t, idx, neg)
    assert_close(memory.z_s, raw_s.mean() * 10)
    assert_close(memory.z_t, raw_t.mean() * 10)
    assert_close(out_s, raw_s / (raw_s.mean() * 10))
    assert_close(out_t, raw_t / (raw_t.mean() * 10))
    z_s, z_t = memory.z_s.clone(), memory.z_t.clone()
    for _ in range(3):
        memory(_unit(2, 4), _unit(2, 4), torch.tensor([0, 9]))
    assert torch.equal(memory.z_s, z_s) and torch.equal(memory.z_t, z_t)


def test_negatives_uniform_and_positive_in_column_0() -> None:
    memory = ContrastMemory(feat_dim=4, n_data=7, num_negatives=6)
    g = torch.Generator().manual_seed(1)
    neg = memory.sample_negatives(2000, generator=g)
    assert neg.shape == (2000, 6) and neg.min() == 0 and neg.max() == 6
    counts = torch.bincount(neg.flatten(), minlength=7).float()
    assert (counts / counts.mean() - 1).abs().max() < 0.1
    assert torch.equal(neg, memory.sample_negatives(2000, generator=torch.Generator().manual_seed(1)))
    # Column 0 scores the positive: with v equal to its own bank row it is exp(1/τ)/Z.
    memory.eval()
    idx = torch.tensor([2])
    v = F.normalize(memory.bank_t[idx], dim=1)
    out_s, _ = memory(v, v, idx, torch.tensor([[0, 1, 3, 4, 5, 6]]))
    expected = torch.exp((memory.bank_t[2] * v[0]).sum() / 0.07) / memory.z_s
    assert_close(out_s[0, 0], expected)


# ---------------------------------------------------------------- NCE loss golden value


def test_nce_loss_golden_by_hand() -> None:
    scores = [[0.9, 0.1, 0.3], [0.2, 0.05, 0.6]]
    n_data, eps = 4, 1e-7
    k_pn = 2 / n_data  # K = 2 negatives, P_n = 1/4
    total = 0.0
    for row in scores:
        total += math.log(row[0] / (row[0] + k_pn + eps))
        total += sum(math.log(k_pn / (p + k_pn + eps)) for p in row[1:])
    expected = -total / len(scores)
    assert_close(crd_nce_loss(torch.tensor(scores), n_data), torch.tensor(expected))
    # by hand: row 1 log(.9/1.4) + log(.5/.6) + log(.5/.8) = -1.094159;
    #          row 2 log(.2/.7) + log(.5/.55) + log(.5/1.1) = -2.136530; loss = 3.230689 / 2
    assert expected == pytest.approx(1.615345, abs=1e-5)


def test_crd_equals_sum_of_two_nce_terms() -> None:
    loss = CRDLoss(student_dim=6, teacher_dim=5, n_data=30, feat_dim=4, num_negatives=8)
    s, t, idx = torch.randn(4, 6), torch.randn(4, 5), torch.tensor([0, 3, 7, 29])
    neg = loss.memory.sample_negatives(4)
    loss(s, t, idx, neg)  # a training call fixes the normalisation constants Z
    loss.eval()  # from here on the banks stay put, so both sides see the same memory
    out_s, out_t = loss.memory(loss.embed_s(s), loss.embed_t(t), idx, neg)
    expected = crd_nce_loss(out_s, 30) + crd_nce_loss(out_t, 30)
    assert_close(loss(s, t, idx, neg), expected)


# ---------------------------------------------------------------- contract


def test_contract_gradients() -> None:
    loss_fn = CRDLoss(student_dim=3 * 2 * 2, teacher_dim=10, n_data=50, feat_dim=8, num_negatives=16)
    student = torch.randn(4, 3, 2, 2, requires_grad=True)
    teacher = torch.randn(4, 10, requires_grad=True)
    loss = loss_fn(student, teacher, torch.tensor([0, 11, 22, 49]))
    assert loss.shape == () and loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None
    for head in (loss_fn.embed_s, loss_fn.embed_t):
        for p in head.parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    assert not any(b.requires_grad for b in loss_fn.buffers())


def test_second_step_backward_after_bank_update() -> None:
    loss_fn = CRDLoss(student_dim=6, teacher_dim=5, n_data=20, feat_dim=4, num_negatives=5)
    opt = torch.optim.SGD(loss_fn.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        loss = loss_fn(torch.randn(3, 6), torch.randn(3, 5), torch.tensor([1, 2, 3]))
        loss.backward()
        opt.step()
    assert torch.isfinite(loss)


def test_bf16_autocast_gives_finite_fp32() -> None:
    loss_fn = CRDLoss(student_dim=6, teacher_dim=5, n_data=20, feat_dim=4, num_negatives=5)
    student = torch.randn(3, 6, dtype=torch.bfloat16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = loss_fn(student, torch.randn(3, 5, dtype=torch.bfloat16), torch.tensor([0, 1, 2]))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert student.grad is not None


def test_embed_flattens_and_normalises() -> None:
    embed = Embed(12)
    out = embed(torch.randn(5, 3, 2, 2))
    assert out.shape == (5, 128)
    assert_close(out.norm(dim=1), torch.ones(5))


@pytest.mark.parametrize("k", [20, 21])
def test_k_not_below_n_data_raises(k: int) -> None:
    with pytest.raises(ValueError, match="num_negatives.*n_data"):
        CRDLoss(student_dim=4, teacher_dim=4, n_data=20, num_negatives=k)


@pytest.mark.parametrize("bad", [[0, 20], [-1, 3]])
def test_index_out_of_range_raises(bad: list[int]) -> None:
    loss_fn = CRDLoss(student_dim=4, teacher_dim=4, n_data=20, feat_dim=4, num_negatives=5)
    with pytest.raises(IndexError, match=r"outside \[0, 20\)"):
        loss_fn(torch.randn(2, 4), torch.randn(2, 4), torch.tensor(bad))


def test_contrast_index_errors() -> None:
    loss_fn = CRDLoss(student_dim=4, teacher_dim=4, n_data=20, feat_dim=4, num_negatives=5)
    s, t, idx = torch.randn(2, 4), torch.randn(2, 4), torch.tensor([0, 1])
    with pytest.raises(ValueError, match=r"contrast_idx must be \(2, 5\)"):
        loss_fn(s, t, idx, torch.zeros(2, 6, dtype=torch.long))
    with pytest.raises(IndexError, match="contrast_idx"):
        loss_fn(s, t, idx, torch.full((2, 5), 20))


def test_feature_size_mismatch_raises() -> None:
    loss_fn = CRDLoss(student_dim=4, teacher_dim=4, n_data=20, feat_dim=4, num_negatives=5)
    with pytest.raises(ValueError, match="set the input dim to 6"):
        loss_fn(torch.randn(2, 6), torch.randn(2, 4), torch.tensor([0, 1]))


@pytest.mark.parametrize(
    "kwargs", [{"nce_t": 0.0}, {"momentum": 1.0}, {"momentum": -0.1}, {"feat_dim": 0}, {"n_data": 0}]
)
def test_bad_options_raise(kwargs: dict) -> None:
    options = {"student_dim": 4, "teacher_dim": 4, "n_data": 20, "num_negatives": 5} | kwargs
    with pytest.raises(ValueError):
        CRDLoss(**options)


def test_nce_loss_rejects_bad_scores() -> None:
    with pytest.raises(ValueError, match="1 \\+ K"):
        crd_nce_loss(torch.ones(3, 1), n_data=10)


# ---------------------------------------------------------------- IndexedDataset


def _dataset(n: int = 10) -> TensorClassificationDataset:
    return TensorClassificationDataset(torch.randn(n, 1, 2, 2), torch.arange(n) % 3)


def test_indexed_items_carry_their_index() -> None:
    base = _dataset()
    ds = IndexedDataset(base)
    assert len(ds) == 10
    x, y, i = ds[7]
    assert i == 7 and torch.equal(x, base.images[7]) and y == base.labels[7]


def test_indexed_keeps_fast_getitems() -> None:
    base = _dataset()
    x, y, idx = IndexedDataset(base).__getitems__([4, 0, 9])
    assert torch.equal(idx, torch.tensor([4, 0, 9])) and idx.dtype == torch.long
    assert torch.equal(x, base.images[idx]) and torch.equal(y, base.labels[idx])


def test_indexed_shuffled_loader_indices_match_samples() -> None:
    base = _dataset(23)
    loader = DataLoader(IndexedDataset(base), batch_size=5, shuffle=True, collate_fn=lambda batch: batch)
    seen = []
    for x, y, idx in loader:
        assert torch.equal(x, base.images[idx]) and torch.equal(y, base.labels[idx])
        seen += idx.tolist()
    assert sorted(seen) == list(range(23)) and seen != list(range(23))


def test_indexed_without_getitems_uses_default_collate() -> None:
    images = torch.randn(6, 3)
    plain = [(images[i], i % 2) for i in range(6)]  # a list: no __getitems__
    loader = DataLoader(IndexedDataset(plain), batch_size=4, shuffle=True)
    for x, y, idx in loader:
        assert torch.equal(x, images[idx]) and torch.equal(y, idx % 2)


def _ddp_bank_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.manual_seed(0)
    memory = ContrastMemory(feat_dim=4, n_data=10, num_negatives=3)  # same initial banks on both ranks
    idx = torch.tensor([0, 1]) if rank == 0 else torch.tensor([5, 6, 7])  # different samples and batch sizes
    v = F.normalize(torch.full((len(idx), 4), float(rank + 1)), dim=1)
    memory(v, v, idx)
    torch.save(memory.bank_s, f"{out_dir}/bank{rank}.pt")
    dist.destroy_process_group()


def test_memory_update_is_the_same_on_every_rank_under_ddp(tmp_path) -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_bank_worker, args=(2, port, str(tmp_path)), nprocs=2)
    bank0, bank1 = torch.load(tmp_path / "bank0.pt"), torch.load(tmp_path / "bank1.pt")
    assert torch.equal(bank0, bank1)  # each rank applied both ranks' rows, so DDP's broadcast loses nothing
    torch.manual_seed(0)
    fresh = ContrastMemory(feat_dim=4, n_data=10, num_negatives=3).bank_s
    changed = (bank0 != fresh).any(dim=1).nonzero().flatten().tolist()
    assert changed == [0, 1, 5, 6, 7]

"""DDP on CPU (gloo, 2 processes): a KD fit gives the same student as one process on the same global batch."""

from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from lightning_kd import DistillationModule
from lightning_kd.models import MLP
from tests.helpers import LeaveTogether

GLOBAL_BATCH, STEPS = 32, 6


def _data() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(GLOBAL_BATCH * STEPS, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (GLOBAL_BATCH * STEPS,), generator=g)
    return TensorDataset(x, y)


def _module() -> DistillationModule:
    torch.manual_seed(0)
    teacher, student = MLP(64, 10, (32,)), MLP(64, 10, (16,))  # no BatchNorm: per-rank statistics would differ
    return DistillationModule(teacher, student, optimizer=partial(torch.optim.SGD, lr=0.5), temperature=2.0)


class Ordered(L.LightningDataModule):
    """Rank r reads samples r, r + world, …: each global batch of 2 x 16 is the single process's batch of 32."""

    def __init__(self, per_rank: int) -> None:
        super().__init__()
        self.per_rank = per_rank

    def train_dataloader(self) -> DataLoader:
        data = _data()
        sampler = DistributedSampler(data, shuffle=False) if dist.is_initialized() else None
        return DataLoader(data, batch_size=self.per_rank, sampler=sampler)


def _fit(module: DistillationModule, devices: int, tmp_path) -> None:
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp_spawn" if devices > 1 else "auto",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        use_distributed_sampler=False,  # Lightning's own would shuffle; ours fixes the order on purpose
        callbacks=[LeaveTogether()],
    )
    trainer.fit(module, Ordered(GLOBAL_BATCH // devices))
    if devices == 1:  # after ddp_spawn the main process gets the weights back, not the loop counters
        assert trainer.global_step == STEPS


def test_two_process_ddp_matches_one_process(tmp_path):
    single, ddp = _module(), _module()
    start = {k: v.clone() for k, v in single.student.state_dict().items()}
    teacher_before = {k: v.clone() for k, v in ddp.teacher.model.state_dict().items()}
    _fit(single, 1, tmp_path / "single")
    _fit(ddp, 2, tmp_path / "ddp")
    for name, value in single.student.state_dict().items():
        assert not torch.equal(value, start[name]), f"{name} did not train"
        torch.testing.assert_close(ddp.student.state_dict()[name], value, rtol=1e-5, atol=1e-6)
    for name, value in ddp.teacher.model.state_dict().items():
        assert torch.equal(value, teacher_before[name])


class _RankBatches(L.LightningDataModule):
    """Rank r gets batch r; one process gets them all (as micro-batches, or merged into one)."""

    def __init__(self, batches: list[dict]) -> None:
        super().__init__()
        self.batches = batches

    def train_dataloader(self) -> DataLoader:
        mine = self.batches[dist.get_rank() :: dist.get_world_size()] if dist.is_initialized() else self.batches
        return DataLoader(mine, batch_size=None)


def _lm_batches() -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 64, (4, 10), generator=g)
    labels = ids.clone()
    labels[:2, :1] = -100  # rank 0: 18 valid next tokens
    labels[2:, :8] = -100  # rank 1: 2 valid next tokens
    mask = torch.ones_like(ids)
    b1 = {"input_ids": ids[:2], "attention_mask": mask[:2], "labels": labels[:2]}
    b2 = {"input_ids": ids[2:], "attention_mask": mask[2:], "labels": labels[2:]}
    return b1, b2


def _lm_module():
    from lightning_kd.models.language import llama_lm
    from lightning_kd.modules.causal_lm import CausalLMDistillation

    teacher = llama_lm(64, hidden_size=32, num_layers=1, num_heads=2, seed=1)
    student = llama_lm(64, hidden_size=16, num_layers=1, num_heads=2, seed=2)
    return CausalLMDistillation(teacher, student, chunk_size=8, optimizer=partial(torch.optim.SGD, lr=1.0))


def test_lm_token_normalisation_is_global_across_ranks(tmp_path):
    """Two ranks with 18 and 2 valid tokens give the update of one process on both (the mean over 20 tokens),
    not the mean of the two ranks' means."""
    pytest.importorskip("transformers")
    b1, b2 = _lm_batches()
    merged = {k: torch.cat([b1[k], b2[k]]) for k in b1}
    single, ddp = _lm_module(), _lm_module()
    args = dict(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    args.update(enable_model_summary=False, use_distributed_sampler=False, limit_val_batches=0)
    L.Trainer(**args, default_root_dir=tmp_path / "one").fit(single, _RankBatches([merged]))
    L.Trainer(
        **args, devices=2, strategy="ddp_spawn", default_root_dir=tmp_path / "two", callbacks=[LeaveTogether()]
    ).fit(ddp, _RankBatches([b1, b2]))
    for name, value in single.student.state_dict().items():
        torch.testing.assert_close(ddp.student.state_dict()[name], value, rtol=1e-5, atol=1e-6)

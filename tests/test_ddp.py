"""DDP on CPU (gloo, 2 processes): a KD fit gives the same student as one process on the same global batch."""

from __future__ import annotations

from functools import partial

import lightning as L
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from lightning_kd import DistillationModule
from lightning_kd.models import MLP

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

"""Each DDP rank trains on its own block of sequences and maps only that block of an offline teacher store."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from lightning_kd.data.rank_shards import RankShardSampler, rank_rows

pytest.importorskip("transformers")

from lightning_kd.cache.lm_build import build_lm_store  # noqa: E402
from lightning_kd.cache.lm_store import LMTeacherStore  # noqa: E402
from lightning_kd.cache.lm_teacher import CachedLMTeacher  # noqa: E402
from tests.cache.test_lm_store import make_dm  # noqa: E402
from tests.helpers import LeaveTogether  # noqa: E402
from tests.lm_helpers import tiny  # noqa: E402


def test_ranks_own_disjoint_blocks_shuffled_per_epoch_from_the_seed():
    blocks = [rank_rows(10, 3, r) for r in range(3)]
    assert blocks == [range(0, 3), range(3, 6), range(6, 9)]  # row 9 left out: every rank gets 3 steps' worth
    samplers = [RankShardSampler(range(10), 3, r, seed=4) for r in range(3)]
    for s in samplers:
        s.set_epoch(0)
    orders = [list(s) for s in samplers]
    assert [sorted(o) for o in orders] == [list(b) for b in blocks]
    again = RankShardSampler(range(10), 3, 1, seed=4)
    again.set_epoch(0)
    assert list(again) == orders[1]
    s = RankShardSampler(range(100), 2, 0, seed=4)
    s.set_epoch(1)
    epoch_1 = list(s)
    assert epoch_1 != orders[0] and sorted(epoch_1) == list(range(50))  # another epoch, another order of the block
    s.start = lambda epoch: 20  # a resumed run: the samples this rank had processed are skipped
    assert list(s) == epoch_1[20:] and len(s) == 50
    with pytest.raises(ValueError, match=r"3 training sequences cannot be shared among 4 ranks"):
        rank_rows(3, 4, 0)


def test_a_rank_maps_only_its_rows_of_the_store_and_reads_them_as_the_whole_store_does(tmp_path):
    dm = make_dm(tmp_path)
    dm.setup()
    build_lm_store(tiny(1), dm, tmp_path / "s", k=8)
    whole = LMTeacherStore.open(tmp_path / "s")
    n = len(dm.splits["train"])
    rows = rank_rows(n, 2, 1)
    view = LMTeacherStore.open(tmp_path / "s", rows=rows)
    assert view.arrays["logprobs"].shape == (len(rows), 16, 8) and isinstance(view.arrays["ids"], np.memmap)
    assert view.arrays["logprobs"].offset >= rows.start * 16 * 8 * 2  # mapped from the block's first byte
    index = torch.tensor([rows.start, rows.stop - 1, rows.start + 3])
    for a, b in zip(view.lookup(index), whole.lookup(index)):
        assert torch.equal(a, b)
    with pytest.raises(IndexError, match=rf"sequence index 0 is outside this process's rows {rows.start}\.\."):
        view.lookup(torch.tensor([0]))
    # a damaged value inside the block is found when the rank opens it (its rows are scanned)
    lp = np.load(tmp_path / "s" / "logprobs.npy", mmap_mode="r+")
    lp[rows.start + 1, 2, 0] = np.nan
    lp.flush()
    del lp
    with pytest.raises(ValueError, match=r"NaN or inf log-probabilities"):
        LMTeacherStore.open(tmp_path / "s", rows=rows)


def test_the_data_module_and_the_teacher_use_the_ranks_block_under_several_processes(tmp_path):
    dm = make_dm(tmp_path, rank_shards=True)
    dm.setup()
    build_lm_store(tiny(1), dm, tmp_path / "s", k=8)
    n = len(dm.splits["train"])
    assert dm.store_rows() is None  # one process: the whole store
    dm.trainer = types.SimpleNamespace(world_size=2, global_rank=1)
    sampler = dm.train_dataloader().sampler
    assert isinstance(sampler, RankShardSampler) and isinstance(sampler, torch.utils.data.DistributedSampler)
    sampler.set_epoch(0)
    assert sorted(sampler) == list(rank_rows(n, 2, 1)) == list(dm.store_rows())
    teacher = CachedLMTeacher(str(tmp_path / "s"))
    teacher.prepare_fit(dm)
    assert teacher.store.rows == rank_rows(n, 2, 1) and len(teacher.store.arrays["ids"]) == len(rank_rows(n, 2, 1))
    plain = make_dm(tmp_path)  # rank_shards off: Lightning's sampler, the whole store
    plain.setup()
    plain.trainer = types.SimpleNamespace(world_size=2, global_rank=1)
    assert plain.store_rows() is None


class _SeenIndices(__import__("lightning").Callback):
    def __init__(self, folder):
        self.folder = folder

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        with open(f"{self.folder}/rank{trainer.global_rank}.txt", "a") as f:
            f.write(" ".join(str(int(i)) for i in batch["index"]) + "\n")
        store = pl_module.teacher.store
        with open(f"{self.folder}/store{trainer.global_rank}.txt", "w") as f:
            f.write(f"{store.rows.start} {store.rows.stop} {len(store.arrays['ids'])}")


@pytest.mark.slow
def test_two_ddp_processes_train_each_on_its_block_from_its_block_of_the_store(tmp_path):
    import lightning as L

    from lightning_kd.modules.causal_lm import CausalLMDistillation

    dm = make_dm(tmp_path, rank_shards=True)
    dm.setup()
    build_lm_store(tiny(1), dm, tmp_path / "s", k=8)
    n = len(dm.splits["train"])
    module = CausalLMDistillation(teacher=CachedLMTeacher(str(tmp_path / "s"), model=tiny(1)), student=tiny(2),
                                  chunk_size=None)  # fmt: skip
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp_spawn", max_steps=3, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
        callbacks=[_SeenIndices(str(tmp_path)), LeaveTogether()],
    )  # fmt: skip
    trainer.fit(module, make_dm(tmp_path, rank_shards=True))
    for rank in range(2):
        block = rank_rows(n, 2, rank)
        seen = [int(x) for line in (tmp_path / f"rank{rank}.txt").read_text().split() for x in [line]]
        assert len(seen) == 3 * 4 and all(i in block for i in seen)
        start, stop, mapped = map(int, (tmp_path / f"store{rank}.txt").read_text().split())
        assert range(start, stop) == block and mapped == len(block)

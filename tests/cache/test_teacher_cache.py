"""Offline teacher cache: replayable augmentation, lookups of the exact view, a fit equal to live KD, refusals."""

from __future__ import annotations

import copy
import doctest
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, Sampler

from lightning_kd.cache import CachedTeacher, TeacherCache, decode_topk, encode_topk
from lightning_kd.cache import store as cache_module
from lightning_kd.cache.build import build_teacher_cache
from lightning_kd.data import DigitsDataModule, random_crop_flip
from lightning_kd.data.augment import apply_crop_flip, crop_flip_params, sample_hash
from lightning_kd.data.base import _keep_batch
from lightning_kd.data.with_index import IndexedDataset
from lightning_kd.losses import kd_loss
from lightning_kd.modules.distillation import DistillationModule
from tests.helpers import make_student, make_teacher

M64 = (1 << 64) - 1


def _splitmix(x: int) -> int:
    """Reference SplitMix64 step on unsigned Python ints (exact, no wrapping to trust)."""
    z = (x + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


# -- replayable augmentation ----------------------------------------------------------------------------
def test_sample_hash_is_splitmix64_with_wrapping_int64():
    idx = torch.tensor([0, 1, 7, 12345, 2**40, 59999])
    for seed, epoch in [(0, 0), (7, 3), (2**63 + 5, 14)]:
        expected = [_splitmix(int(i) ^ _splitmix(_splitmix(seed) ^ epoch)) for i in idx]
        got = [v & M64 for v in sample_hash(seed, epoch, idx).tolist()]
        assert got == expected


def test_crop_flip_params_are_a_pure_function_of_seed_epoch_index():
    idx = torch.arange(2000)
    dy, dx, f = crop_flip_params(0, 0, idx, padding=2, flip=True)
    again = crop_flip_params(0, 0, idx, padding=2, flip=True)
    assert all(torch.equal(a, b) for a, b in zip((dy, dx, f), again))
    # batch order and composition do not matter: any subset, in any order, gets the same values
    perm = torch.randperm(2000, generator=torch.Generator().manual_seed(0))[:300]
    sub = crop_flip_params(0, 0, idx[perm], padding=2, flip=True)
    assert all(torch.equal(a[perm], b) for a, b in zip((dy, dx, f), sub))
    # values cover the range, about uniformly, and vary over indices, epochs and seeds
    for v, n in ((dy, 5), (dx, 5), (f.long(), 2)):
        counts = torch.bincount(v, minlength=n)
        assert len(counts) == n and counts.min() > 0.8 * 2000 / n
    combo = lambda p: p[0] * 10 + p[1] * 2 + p[2].long()  # noqa: E731
    assert (combo((dy, dx, f)) != combo(crop_flip_params(0, 1, idx, 2, True))).float().mean() > 0.9
    assert (combo((dy, dx, f)) != combo(crop_flip_params(1, 0, idx, 2, True))).float().mean() > 0.9
    # no flip / no padding
    dy0, dx0, f0 = crop_flip_params(0, 0, idx, padding=0, flip=False)
    assert not dy0.any() and not dx0.any() and not f0.any()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_crop_flip_params_identical_on_cuda():
    idx = torch.arange(100_000)
    cpu = crop_flip_params(3, 7, idx, padding=4, flip=True)
    gpu = crop_flip_params(3, 7, idx.cuda(), padding=4, flip=True)
    assert all(torch.equal(a, b.cpu()) for a, b in zip(cpu, gpu))


def test_apply_crop_flip_is_random_crop_flips_geometry():
    x = torch.randn(16, 3, 6, 5)
    # random_crop_flip == apply_crop_flip on the parameters it draws (same generator, same order)
    g = torch.Generator().manual_seed(4)
    out = random_crop_flip(x, padding=2, flip=True, fill=-1.0, generator=g)
    g = torch.Generator().manual_seed(4)
    dy, dx = torch.randint(0, 5, (16,), generator=g), torch.randint(0, 5, (16,), generator=g)
    flipped = torch.rand(16, generator=g) < 0.5
    assert torch.equal(out, apply_crop_flip(x, dy, dx, flipped, padding=2, fill=-1.0))
    # and each output is the window at (dy, dx) of the padded image, mirrored where flipped
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), value=-1.0)
    for i in range(16):
        window = padded[i, :, dy[i] : dy[i] + 6, dx[i] : dx[i] + 5]
        assert torch.equal(out[i], window.flip(-1) if flipped[i] else window)


def test_datamodule_replays_the_view_of_each_sample(trainer_factory):
    with pytest.raises(ValueError, match="set with_indices=True"):
        DigitsDataModule(augment=True, augment_seed=0)
    dm = DigitsDataModule(batch_size=64, augment=True, with_indices=True, augment_seed=0)
    dm.setup()
    trainer = trainer_factory()
    dm.trainer, trainer.training = trainer, True
    batch = next(iter(dm.train_dataloader()))
    out = dm.on_after_batch_transfer(batch, 0)
    assert not torch.equal(out[0], batch[0])
    # sample i's view in epoch 0 is the same whichever batch brings it
    i = batch[2][:5]
    alone = dm.on_after_batch_transfer((dm.splits["train"].images[i], batch[1][:5], i), 0)
    assert torch.equal(alone[0], out[0][:5])
    assert torch.equal(out[0], dm.train_view(batch[0], batch[2], epoch=0))
    trainer.fit_loop.epoch_progress.current.completed = 1  # current_epoch: a new view
    assert not torch.equal(dm.on_after_batch_transfer(batch, 0)[0], out[0])


# -- the cache --------------------------------------------------------------------------------------------
def _digits(**kw) -> DigitsDataModule:
    kw = {"batch_size": 64, "augment": True, "with_indices": True, "augment_seed": 0} | kw
    return DigitsDataModule(**kw)


@pytest.fixture
def teacher() -> torch.nn.Module:
    torch.manual_seed(0)
    return make_teacher()


def test_cache_module_is_pure_torch_and_numpy_and_its_example_runs():
    source = Path(cache_module.__file__).read_text().replace("lightning_kd", "")
    assert "import lightning" not in source and "from lightning" not in source
    assert doctest.testmod(cache_module, extraglobs={"torch": torch}).failed == 0


def test_lookup_is_the_teacher_on_the_view_the_student_sees(tmp_path, teacher, trainer_factory):
    dm = _digits()
    cache = build_teacher_cache(teacher, dm, tmp_path / "c", epochs=2, batch_size=500, device="cpu")
    assert cache.arrays["logits"].shape == (2, 1258, 10) and cache.arrays["logits"].dtype.name == "float16"
    trainer = trainer_factory()
    dm.trainer, trainer.training = trainer, True
    teacher.eval()
    for epoch in range(2):
        trainer.fit_loop.epoch_progress.current.completed = epoch
        for batch in list(dm.train_dataloader())[:3]:
            images, _, idx = dm.on_after_batch_transfer(batch, 0)
            with torch.no_grad():
                live = teacher(images)
            torch.testing.assert_close(cache.lookup(epoch, idx), live, rtol=2e-3, atol=2e-3)  # fp16 storage
    assert not torch.allclose(cache.lookup(0, torch.arange(50)), cache.lookup(1, torch.arange(50)))
    with pytest.raises(ValueError, match="epoch 2 is not in teacher cache"):
        cache.lookup(2, torch.arange(3))


def test_without_augmentation_one_epoch_serves_all(tmp_path, teacher):
    cache = build_teacher_cache(teacher, _digits(augment=False), tmp_path / "c", epochs=5, device="cpu")
    assert cache.epochs == 1 and not cache.per_epoch
    torch.testing.assert_close(cache.lookup(0, torch.arange(8)), cache.lookup(40, torch.arange(8)))


class StepLog(L.Callback):
    def __init__(self):
        self.steps: list[tuple[int, torch.Tensor, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps.append((trainer.current_epoch, batch[2].clone(), outputs["loss"].detach().clone()))


def _fit(module, dm, trainer_factory, epochs=2, ckpt_path=None, callbacks=(), **kw):
    log = StepLog()
    trainer = trainer_factory(max_epochs=epochs, limit_val_batches=0, callbacks=[log, *callbacks], **kw)
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    return log.steps, trainer


@pytest.mark.parametrize("storage", ["fp32", "fp16"])
def test_cached_fit_equals_live_teacher_fit(tmp_path, teacher, trainer_factory, storage):
    build_teacher_cache(teacher, _digits(), tmp_path / "c", epochs=2, storage=storage, device="cpu")
    runs = {}
    for name in ("live", "cached"):
        L.seed_everything(0)
        student = make_student()
        t = copy.deepcopy(teacher)
        if name == "live":
            module = DistillationModule(t, student)
        else:
            module = DistillationModule(CachedTeacher(tmp_path / "c", model=t), student)
        runs[name] = _fit(module, _digits(), trainer_factory)[0], module.student.state_dict()
    (live, w_live), (cached, w_cached) = runs["live"], runs["cached"]
    assert len(live) == len(cached) == 2 * (1258 // 64)
    tol = {"fp32": 1e-5, "fp16": 2e-3}[storage]
    for (e1, i1, l1), (e2, i2, l2) in zip(live, cached):
        assert e1 == e2 and torch.equal(i1, i2)
        torch.testing.assert_close(l2, l1, rtol=tol, atol=tol)
    for k in w_live:
        torch.testing.assert_close(w_cached[k], w_live[k], rtol=tol, atol=tol)


# -- refusals ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "change, match",
    [
        ({"dm": {"augment_seed": None, "with_indices": True}}, "the cache would be wrong under random augmentation"),
        ({"dm": {"augment": False, "augment_seed": None, "with_indices": False}}, "with_indices=False"),
        ({"dm": {"augment_seed": 1}}, "augment_seed: cache 0, data module DigitsDataModule 1"),
        ({"dm": {"seed": 1}}, "training data"),
        ({"teacher_seed": 1}, "teacher weights"),
        ({"max_epochs": 3}, "max_epochs=3 but teacher cache .* holds 2 epochs"),
    ],
)
def test_mismatched_cache_is_refused(tmp_path, teacher, trainer_factory, change, match):
    build_teacher_cache(teacher, _digits(), tmp_path / "c", epochs=2, device="cpu")
    t = copy.deepcopy(teacher)
    if "teacher_seed" in change:
        torch.manual_seed(change["teacher_seed"])
        t = make_teacher()
    module = DistillationModule(CachedTeacher(tmp_path / "c", model=t), make_student())
    trainer = trainer_factory(max_epochs=change.get("max_epochs", 2))
    with pytest.raises(ValueError, match=match):
        trainer.fit(module, datamodule=_digits(**change.get("dm", {})))


def test_missing_or_unfinished_cache_is_refused(tmp_path, teacher, trainer_factory):
    module = DistillationModule(CachedTeacher(tmp_path / "none", model=teacher), make_student())
    with pytest.raises(FileNotFoundError, match="does not exist .*lightning-kd cache --config"):
        trainer_factory().fit(module, datamodule=_digits())
    (tmp_path / "half").mkdir()
    with pytest.raises(FileNotFoundError, match="unfinished build"):
        TeacherCache.open(tmp_path / "half")
    with pytest.raises(ValueError, match="the cache would be wrong under random augmentation"):
        build_teacher_cache(teacher, _digits(augment_seed=None), tmp_path / "c", epochs=1)


# -- top-k storage ----------------------------------------------------------------------------------------
def test_topk_keeps_topk_probabilities_and_spreads_the_rest():
    torch.manual_seed(0)
    logits = torch.randn(64, 100) * 3
    values, idx = encode_topk(logits, k=10, temperature=4.0)
    rebuilt = decode_topk(values, idx, 100)
    p, q = (logits / 4).softmax(-1), (rebuilt / 4).softmax(-1)
    torch.testing.assert_close(q.gather(1, idx), p.gather(1, idx))  # top-k probabilities exact at T
    rest = q.scatter(1, idx, 0.0)
    assert torch.allclose(rest.sum(1), 1 - p.gather(1, idx).sum(1), atol=1e-6)
    assert torch.equal(rebuilt.argmax(1), logits.argmax(1)) and torch.isfinite(rebuilt).all()


def test_topk_kd_error_is_bounded_by_the_dropped_mass():
    """KD's gradient in the student logits is ``T · (q − p) / B``: rebuilding the teacher's ``p`` moves it by
    ``|p̂ − p|₁ ≤ 2 · (tempered mass outside the top k)``, so KD is close whenever the top k hold most of it."""
    torch.manual_seed(0)
    b, c, k, temp = 256, 100, 10, 4.0
    teacher = torch.randn(b, c)
    teacher.scatter_add_(1, torch.randperm(c)[:k].expand(b, k), 20 + 2 * torch.randn(b, k))  # a confident top 10
    values, idx = encode_topk(teacher, k, temp)
    rebuilt = decode_topk(values.half(), idx, c)  # as stored: fp16
    p, p_hat = (teacher / temp).softmax(-1), (rebuilt / temp).softmax(-1)
    dropped = 1 - p.gather(1, idx).sum(1)
    assert dropped.mean() < 0.1
    assert ((p_hat - p).abs().sum(1) <= 2 * dropped + 1e-2).all()
    for student in (torch.randn(b, c), 0.5 * teacher + torch.randn(b, c)):
        s_full, s_topk = student.clone().requires_grad_(), student.clone().requires_grad_()
        exact, approx = kd_loss(s_full, teacher, temp), kd_loss(s_topk, rebuilt, temp)
        exact.backward()
        approx.backward()
        assert abs(approx - exact) / exact < 0.03
        assert torch.cosine_similarity(s_full.grad.flatten(), s_topk.grad.flatten(), dim=0) > 0.99


def test_topk_cache_is_smaller_and_stores_the_encoding(tmp_path, teacher):
    full = build_teacher_cache(teacher, _digits(), tmp_path / "full", epochs=2, storage="fp32", device="cpu")
    topk = build_teacher_cache(teacher, _digits(), tmp_path / "topk", epochs=2, storage="topk", k=3, device="cpu")
    size = lambda c: sum(f.stat().st_size for f in c.path.glob("*.npy"))  # noqa: E731
    assert size(topk) < 0.4 * size(full)  # 3 fp16 logits + a fill + 3 int16 classes = 14 bytes vs 40 (fp16: 20)
    idx = torch.arange(0, 1258, 7)
    torch.testing.assert_close(
        topk.lookup(1, idx), decode_topk(*encode_topk(full.lookup(1, idx), 3, 4.0), 10), rtol=2e-3, atol=2e-3
    )
    with pytest.raises(ValueError, match="1 <= k < num_classes=10"):
        build_teacher_cache(teacher, _digits(), tmp_path / "bad", epochs=1, storage="topk", k=10, device="cpu")


# -- resume -----------------------------------------------------------------------------------------------
class EpochSeededSampler(Sampler[int]):
    """Shuffles with a generator seeded by the epoch: a resumed run sees the same order as a straight one."""

    def __init__(self, n: int) -> None:
        self.n, self.epoch = n, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        return iter(torch.randperm(self.n, generator=torch.Generator().manual_seed(self.epoch)).tolist())

    def __len__(self) -> int:
        return self.n


class EpochSeededDigits(DigitsDataModule):
    def train_dataloader(self) -> DataLoader:
        train = self.splits["train"]
        return DataLoader(
            IndexedDataset(train),
            self.batch_size,
            sampler=EpochSeededSampler(len(train)),
            drop_last=True,
            collate_fn=_keep_batch,
        )


class RecordingCachedTeacher(CachedTeacher):
    def forward(self, inputs, index=None, epoch=None):
        out = super().forward(inputs, index, epoch)
        if index is not None:
            self.looked_up.append((epoch, out.logits.clone()))
        return out


def test_resume_after_an_epoch_looks_up_and_steps_as_a_straight_run(tmp_path, teacher, trainer_factory):
    build_teacher_cache(teacher, _digits(), tmp_path / "c", epochs=2, device="cpu")
    dm = lambda: EpochSeededDigits(batch_size=64, augment=True, with_indices=True, augment_seed=0)  # noqa: E731

    def module():
        L.seed_everything(0)
        t = RecordingCachedTeacher(tmp_path / "c", model=copy.deepcopy(teacher))
        t.looked_up = []
        return DistillationModule(t, make_student())

    straight = module()
    steps, _ = _fit(straight, dm(), trainer_factory, epochs=2)
    first = module()
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="e0")
    _fit(first, dm(), trainer_factory, epochs=1, callbacks=[ckpt], enable_checkpointing=True)
    resumed = module()
    steps_r, trainer = _fit(resumed, dm(), trainer_factory, epochs=2, ckpt_path=str(tmp_path / "ckpt" / "e0.ckpt"))
    assert trainer.current_epoch == 2
    second_half = [s for s in steps if s[0] == 1]
    assert len(steps_r) == len(second_half) == 1258 // 64
    for (e1, i1, l1), (e2, i2, l2) in zip(second_half, steps_r):
        assert e1 == e2 == 1 and torch.equal(i1, i2)
        torch.testing.assert_close(l2, l1)
    looked = [t for e, t in straight.teacher.looked_up if e == 1]
    assert len(resumed.teacher.looked_up) == len(looked)
    assert all(torch.equal(a, b) for (_, a), b in zip(resumed.teacher.looked_up, looked))
    for k, v in straight.student.state_dict().items():
        torch.testing.assert_close(resumed.student.state_dict()[k], v)


def test_cached_teacher_serves_no_feature_terms(tmp_path, teacher):
    from lightning_kd import FeatureTerm
    from lightning_kd.losses import FeatureMatchLoss

    term = FeatureTerm("hint", FeatureMatchLoss(), [""], [""])
    with pytest.raises(ValueError, match="need the teacher's intermediate features, which a CachedTeacher cannot"):
        DistillationModule(CachedTeacher(tmp_path / "c", model=teacher), make_student(), feature_terms=[term])

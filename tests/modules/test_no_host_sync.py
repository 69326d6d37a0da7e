"""No training step reads a device tensor's values on the host, over every module kind × teacher kind.

On a GPU such a read (``item``, ``bool``, ``tolist``, ``numpy``, a boolean-mask index, ``nonzero``) waits for the
queued kernels. A CPU has no device to wait for, so the test makes one up: Lightning's batch transfer is replaced
by one that *copies* the batch (the copy stands for the device batch; the loader's tensors are the host ones), and
a dispatch mode follows which tensors derive from host tensors only. A read of any other tensor inside a training
step is a sync on a GPU. Steps that log are left out (they read the logged values on purpose, every
``log_every_n_steps``) and the first step (checks made once, such as the chunked loss's head check), and so are
sampled batches (transformers' ``generate`` reads its stop criteria every token;
on-policy steps pay that by design) and a manually optimised module's optimizer step (torch's optimizers keep
their step counts on the host).
"""

from __future__ import annotations

import traceback
import weakref
from contextlib import contextmanager

import lightning as L
import pytest
import torch
from lightning.fabric.utilities.apply_func import apply_to_collection
from lightning.pytorch.plugins.precision import Precision
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

from lightning_kd import DistillationModule, FeatureTerm
from lightning_kd.cache import CachedTeacher
from lightning_kd.cache.build import build_teacher_cache
from lightning_kd.core.lm import Generation
from lightning_kd.data import DigitsDataModule
from lightning_kd.losses import CRDLoss, FeatureMatchLoss, FitNetLoss
from lightning_kd.models import SmallCNN
from lightning_kd.modules.adversarial import AdversarialDistillation
from lightning_kd.modules.classification import ClassificationModule
from lightning_kd.modules.multi_teacher import MultiTeacherDistillation
from lightning_kd.modules.mutual import MutualLearning
from tests.helpers import make_student, make_teacher
from tests.lm_helpers import V, tiny, write_corpus

aten = torch.ops.aten
# ops whose result (or result size) is a device value the host must have
SYNC_OPS = {
    aten._local_scalar_dense.default, aten.nonzero.default, aten.masked_select.default, aten.is_nonzero.default,
    aten.equal.default, aten._unique2.default, aten.unique_dim.default, aten.unique_consecutive.default,
}  # fmt: skip
BOOL_INDEX_OPS = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default}


class HostReads(TorchDispatchMode):
    """Records reads of non-host tensors (see the module docstring); ``host`` holds the host tensors by id."""

    def __init__(self) -> None:
        super().__init__()
        self.host: dict[int, weakref.ref] = {}
        self.reads: list[str] = []
        self.paused = 0
        self.active = False  # inside a spied training step (for the reads the dispatcher does not see)
        self.generated = False  # the current step sampled its batch
        self.checked = 0  # steps watched (not sampled)

    def is_host(self, t: Tensor) -> bool:
        ref = self.host.get(id(t))
        return ref is not None and ref() is t

    def mark(self, t: Tensor) -> None:
        self.host[id(t)] = weakref.ref(t)

    def read(self, what: str, tensors: list[Tensor]) -> None:
        if not self.paused and tensors and not all(self.is_host(t) for t in tensors):
            frames = [
                f for f in traceback.extract_stack() if "/tests/" not in f.filename and "/torch/" not in f.filename
            ]
            where = f"{frames[-1].filename.rsplit('/', 2)[-2:]}:{frames[-1].lineno}" if frames else "?"
            self.reads.append(f"{what} at {where}")

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        flat = [a for a in _flatten((args, kwargs)) if isinstance(a, Tensor)]
        if func in SYNC_OPS:
            self.read(str(func), flat)
        elif func in BOOL_INDEX_OPS and any(a.dtype == torch.bool for a in _flatten(args[1:2]) if a is not None):
            self.read(f"{func} with a boolean mask", flat)
        out = func(*args, **kwargs)
        if flat and all(self.is_host(t) for t in flat):
            for t in _flatten(out):
                if isinstance(t, Tensor):
                    self.mark(t)
        return out


def _flatten(x):
    if isinstance(x, (list, tuple)):
        for item in x:
            yield from _flatten(item)
    elif isinstance(x, dict):
        for item in x.values():
            yield from _flatten(item)
    else:
        yield x


def _paused(spy: HostReads, method, note: str | None = None):
    def run(*args, **kwargs):
        if note:
            setattr(spy, note, True)
        spy.paused += 1
        try:
            return method(*args, **kwargs)
        finally:
            spy.paused -= 1

    return run


def _optimizer_paused(spy: HostReads, method):
    """The optimizer's own work paused; the closure it calls (the training step, in automatic optimisation) not."""

    def run(self, optimizer, model, closure, **kwargs):
        def resumed():
            spy.paused -= 1
            try:
                return closure()
            finally:
                spy.paused += 1

        spy.paused += 1
        try:
            return method(self, optimizer, model, resumed, **kwargs)
        finally:
            spy.paused -= 1

    return run


@contextmanager
def spying(monkeypatch, module_cls):
    """A fit of a subclass of ``module_cls`` with the copying transfer and the spy on its training steps."""
    spy = HostReads()

    def copying_transfer(self, batch, device, dataloader_idx):
        for t in _flatten(batch):
            if isinstance(t, Tensor):
                spy.mark(t)
        return apply_to_collection(batch, Tensor, lambda t: t.clone())

    monkeypatch.setattr(L.LightningModule, "transfer_batch_to_device", copying_transfer)
    monkeypatch.setattr(Generation, "generate", _paused(spy, Generation.generate, note="generated"))
    monkeypatch.setattr(Precision, "optimizer_step", _optimizer_paused(spy, Precision.optimizer_step))
    for name in ("numpy", "tolist"):  # host reads that do not pass through the dispatcher
        original = getattr(Tensor, name)

        def spied(self, *args, _original=original, _name=name, **kwargs):
            if spy.active:
                spy.read(f"Tensor.{_name}", [self])
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(Tensor, name, spied)

    class Spied(module_cls):
        def training_step(self, batch, batch_idx):
            if self.trainer.global_step % 5 in (0, 4):  # the first step (checks made once) and logging steps
                return super().training_step(batch, batch_idx)
            spy.active, spy.generated, found = True, False, len(spy.reads)
            try:
                with spy:
                    return super().training_step(batch, batch_idx)
            finally:
                spy.active = False
                if spy.generated:  # a sampled batch: its padding is read by design
                    del spy.reads[found:]
                else:
                    spy.checked += 1

    Spied.__name__ = module_cls.__name__
    yield Spied, spy


def _fit(module, data, steps=6):
    L.Trainer(
        accelerator="cpu", max_steps=steps, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=5,
    ).fit(module, data)  # fmt: skip


def _digits(**kwargs) -> DigitsDataModule:
    return DigitsDataModule(batch_size=32, **kwargs)


def _cnn_student():
    return SmallCNN(1, 10, widths=(4, 8, 8))


IMAGE_CASES = {
    "classification": lambda cls, tmp: (cls(make_student()), _digits()),
    "kd, live teacher": lambda cls, tmp: (cls(make_teacher(), make_student(), alpha=0.5), _digits(augment=True)),
    "kd, feature terms (hint, CRD)": lambda cls, tmp: (
        cls(
            make_teacher(),
            _cnn_student(),
            feature_terms=[
                FeatureTerm("hint", FitNetLoss(), ["block2"], ["block2"], connector=True),
                FeatureTerm("crd", CRDLoss(8, 32, n_data=1258, feat_dim=16, num_negatives=64), ["pool"], ["pool"]),
            ],
        ),
        _digits(with_indices=True),
    ),  # fmt: skip
    "multi-teacher": lambda cls, tmp: (cls([make_teacher(), make_teacher()], make_student()), _digits()),
    "adversarial": lambda cls, tmp: (cls(make_teacher(), make_student(), adv_weight=0.3), _digits()),
    "mutual": lambda cls, tmp: (cls([make_student(), _cnn_student()]), _digits()),
}
IMAGE_CLASSES = {
    "classification": ClassificationModule, "multi-teacher": MultiTeacherDistillation,
    "adversarial": AdversarialDistillation, "mutual": MutualLearning,
}  # fmt: skip


@pytest.mark.parametrize("case", list(IMAGE_CASES))
def test_image_modules_read_nothing_from_the_device_in_a_training_step(case, monkeypatch, tmp_path):
    with spying(monkeypatch, IMAGE_CLASSES.get(case, DistillationModule)) as (cls, spy):
        module, data = IMAGE_CASES[case](cls, tmp_path)
        _fit(module, data)
    assert spy.checked and not spy.reads, spy.reads


@pytest.mark.parametrize("preload", [True, False])
def test_a_cached_teacher_is_read_with_the_host_indices(preload, monkeypatch, tmp_path):
    teacher = make_teacher()
    data = _digits(augment=True, augment_seed=3, with_indices=True)
    build_teacher_cache(teacher, data, tmp_path / "cache", epochs=1, device="cpu")
    with spying(monkeypatch, DistillationModule) as (cls, spy):
        module = cls(CachedTeacher(str(tmp_path / "cache"), preload=preload), make_student())
        _fit(module, _digits(augment=True, augment_seed=3, with_indices=True))
    assert spy.checked and not spy.reads, spy.reads


def test_the_spy_catches_a_device_read(monkeypatch):
    """The emulation is not vacuous: a step that reads a device value is caught."""
    with spying(monkeypatch, DistillationModule) as (cls, spy):

        class Reads(cls):
            def compute_losses(self, student_logits, teacher, batch):
                if bool(batch.targets.sum() < 0):  # a device read
                    raise AssertionError
                return super().compute_losses(student_logits, teacher, batch)

        _fit(Reads(make_teacher(), make_student()), _digits(), steps=2)
    assert spy.reads and all("_local_scalar_dense" in r for r in spy.reads), spy.reads


# -- causal LMs: the plain module, live and offline teachers, the chunked loss, hidden states, on-policy ----------
def _text(tmp_path, with_indices=False):
    from lightning_kd.data.text import PackedTextDataModule

    return PackedTextDataModule(
        text_dir=str(write_corpus(tmp_path / "corpus")), pattern="*.py", vocab_size=V, val_fraction=0.3,
        cache_dir=str(tmp_path / "cache"), seq_len=16, batch_size=4, with_indices=with_indices,
    )  # fmt: skip


def _hidden_term() -> FeatureTerm:
    return FeatureTerm("hid", FeatureMatchLoss("mse"), ["model.layers.0"], ["model.layers.0"], connector=True)


LM_CASES = {
    "plain LM": lambda cls, tmp: cls(tiny(2)),
    "live teacher, chunked": lambda cls, tmp: cls(tiny(1), tiny(2), chunk_size=8),
    "live teacher, full logits": lambda cls, tmp: cls(tiny(1), tiny(2), chunk_size=None, divergence="jsd"),
    "hidden-state term": lambda cls, tmp: cls(tiny(1), tiny(2, hidden=16), feature_terms=[_hidden_term()]),
    "on-policy half the steps": lambda cls, tmp: cls(
        tiny(1), tiny(2), generation=Generation(on_policy=0.5, prompt_len=6)
    ),
}


@pytest.mark.parametrize("case", list(LM_CASES))
def test_causal_lm_modules_read_nothing_from_the_device_in_a_training_step(case, monkeypatch, tmp_path):
    from lightning_kd.modules.causal_lm import CausalLMDistillation, CausalLMModule

    with spying(monkeypatch, CausalLMModule if case == "plain LM" else CausalLMDistillation) as (cls, spy):
        _fit(LM_CASES[case](cls, tmp_path), _text(tmp_path))
    assert spy.checked and not spy.reads, spy.reads


@pytest.mark.parametrize(
    "tail, kind, chunk",
    [("bucket", "topk", None), ("uniform", "topk", None), ("bucket", "sampled", None), ("bucket", "topk", 8),
     ("bucket", "sampled", 8)],
    ids=["bucket", "uniform", "sampled", "bucket-chunked", "sampled-chunked"],
)  # fmt: skip
def test_an_offline_lm_store_is_read_with_the_host_indices(tail, kind, chunk, monkeypatch, tmp_path):
    from lightning_kd.cache.lm_build import build_lm_store
    from lightning_kd.cache.lm_teacher import CachedLMTeacher
    from lightning_kd.modules.causal_lm import CausalLMDistillation

    data = _text(tmp_path, with_indices=True)
    data.setup()
    build_lm_store(tiny(1), data, tmp_path / "store", k=8, device="cpu", kind=kind)
    with spying(monkeypatch, CausalLMDistillation) as (cls, spy):
        module = cls(CachedLMTeacher(str(tmp_path / "store"), tail=tail, kind=kind), tiny(2), chunk_size=chunk)
        _fit(module, _text(tmp_path, with_indices=True))
    assert spy.checked and not spy.reads, spy.reads


@pytest.mark.parametrize("loss", ["span_kl", "uld"])
def test_cross_tokenizer_kd_gathers_the_aligned_rows_with_host_indices(loss, monkeypatch, tmp_path):
    from lightning_kd.data.text import PackedTextDataModule
    from lightning_kd.modules.cross_tokenizer import CrossTokenizerDistillation

    data = PackedTextDataModule(
        text_dir=str(write_corpus(tmp_path / "corpus")), pattern="*.py", vocab_size=V - 20, teacher_bpe_vocab_size=V,
        val_fraction=0.3, cache_dir=str(tmp_path / "cache"), seq_len=16, batch_size=4,
    )  # fmt: skip
    with spying(monkeypatch, CrossTokenizerDistillation) as (cls, spy):
        _fit(cls(tiny(1), tiny(2, vocab=V - 20), loss=loss, chunk_size=8), data)
    assert spy.checked and not spy.reads, spy.reads

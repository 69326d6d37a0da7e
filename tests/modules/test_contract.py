"""The contract every lightning-kd LightningModule keeps, parametrised over all of them (timm-style): a new
module class is tested the moment it exists, because `test_every_module_class_has_a_case` fails until it has
a case here.

Each case: two fit steps on CPU; no teacher parameter in any optimizer; teacher parameters and buffers
bit-identical after training; a checkpoint that `torch.load(weights_only=True)` reads and that reloads into a
fresh module with the same student outputs; no new entry in `warnings.filters` after construction.
"""

from __future__ import annotations

import copy
import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

import lightning_kd.modules as modules
from lightning_kd import (
    AdversarialDistillation,
    CachedTeacher,
    ClassificationModule,
    DistillationModule,
    FeatureTerm,
    MultiTeacherDistillation,
    MutualLearning,
)
from lightning_kd.cache import build_teacher_cache
from lightning_kd.core.teacher import TeacherBase
from lightning_kd.data import DigitsDataModule
from lightning_kd.losses import ATLoss, FitNetLoss
from lightning_kd.models import SmallCNN
from tests.helpers import make_student, make_teacher


def cnn_student() -> torch.nn.Module:
    return SmallCNN(1, 10, widths=(4, 8, 8))


def seasoned_teacher(seed: int = 0) -> torch.nn.Module:
    """A teacher whose BatchNorm statistics are not the defaults, so an accidental train-mode pass shows."""
    torch.manual_seed(seed)
    teacher = make_teacher()
    teacher.train()
    with torch.no_grad():
        teacher(torch.randn(32, 1, 8, 8))
    return teacher.eval()


def hint_term(teacher: int = 0) -> FeatureTerm:
    return FeatureTerm("hint", FitNetLoss(), ["block2"], ["block2"], weight=2.0, connector=True, teacher=teacher)


def at_term() -> FeatureTerm:
    return FeatureTerm("at", ATLoss(), ["block3"], ["block3"], weight=10.0)


@dataclass
class Case:
    build: Callable[[], L.LightningModule]  # a fresh module, same seeds → same models
    data: Callable[[], L.LightningDataModule] = lambda: DigitsDataModule(batch_size=32)
    students: Callable[[L.LightningModule], list[torch.nn.Module]] = lambda m: [m.student]
    run: Callable[[torch.nn.Module], torch.Tensor] = lambda net: net(torch.randn(3, 1, 8, 8))  # seeded by the test


def _lm_cases(tmp_path_factory) -> dict[str, Case]:
    """Causal LMs on a tiny text corpus (tokenizer of 300 ids), Llama models of one layer."""
    from lightning_kd.data.text import PackedTextDataModule
    from lightning_kd.models.language import llama_lm

    corpus = tmp_path_factory.mktemp("corpus")
    for i in range(12):
        (corpus / f"m{i}.py").write_text("".join(f"def f_{i}_{j}(x):\n    return x + {j}\n" for j in range(30)))
    cache = tmp_path_factory.mktemp("lm_cache")

    def data() -> PackedTextDataModule:
        return PackedTextDataModule(
            text_dir=str(corpus), pattern="*.py", vocab_size=300, val_fraction=0.3, cache_dir=str(cache),
            seq_len=16, batch_size=4,
        )  # fmt: skip

    def lm(seed: int, hidden: int = 16, vocab: int = 300) -> torch.nn.Module:
        return llama_lm(vocab, hidden_size=hidden, num_layers=1, num_heads=2, max_position=32, seed=seed)

    def cross_data() -> PackedTextDataModule:  # the student on a BPE of 280, the teacher on the one of 300
        return PackedTextDataModule(
            text_dir=str(corpus), pattern="*.py", vocab_size=280, teacher_bpe_vocab_size=300, val_fraction=0.3,
            cache_dir=str(cache), seq_len=16, batch_size=4,
        )  # fmt: skip

    def run(net: torch.nn.Module) -> torch.Tensor:
        return net(input_ids=torch.arange(12).reshape(2, 6)).logits

    return {
        "CausalLMDistillation": Case(
            lambda: modules.CausalLMDistillation(
                lm(0, 32), lm(1), chunk_size=8, teacher_vocab=data().vocab_fingerprint
            ),
            data=data,
            run=run,
        ),
        "CausalLMModule": Case(lambda: modules.CausalLMModule(lm(1)), data=data, students=lambda m: [m.model], run=run),
        "CrossTokenizerDistillation": Case(
            lambda: modules.CrossTokenizerDistillation(
                lm(0, 32), lm(1, vocab=280), chunk_size=8, teacher_vocab=cross_data().teacher_vocab_fingerprint
            ),
            data=cross_data,
            run=run,
        ),
    }


def _cached(tmp_path_factory) -> Case:
    path = tmp_path_factory.mktemp("cache") / "c"
    dm = DigitsDataModule(batch_size=32, with_indices=True)
    build_teacher_cache(seasoned_teacher(), dm, path, epochs=1, device="cpu")
    return Case(
        lambda: DistillationModule(CachedTeacher(str(path), model=seasoned_teacher()), make_student()),
        data=lambda: DigitsDataModule(batch_size=32, with_indices=True),
    )


def cases(tmp_path_factory) -> dict[str, Case]:
    return {
        "DistillationModule": Case(lambda: DistillationModule(seasoned_teacher(), make_student())),
        "DistillationModule+features": Case(
            lambda: DistillationModule(seasoned_teacher(), cnn_student(), feature_terms=[hint_term(), at_term()])
        ),
        "DistillationModule+CachedTeacher": _cached(tmp_path_factory),
        "MultiTeacherDistillation+features": Case(
            lambda: MultiTeacherDistillation(
                [seasoned_teacher(0), seasoned_teacher(1)], cnn_student(), feature_terms=[hint_term(teacher=1)]
            )
        ),
        "AdversarialDistillation+features": Case(
            lambda: AdversarialDistillation(seasoned_teacher(), cnn_student(), feature_terms=[at_term()])
        ),
        "MutualLearning": Case(
            lambda: MutualLearning([make_student(), make_student()]), students=lambda m: list(m.students)
        ),
        "ClassificationModule": Case(lambda: ClassificationModule(make_student()), students=lambda m: [m.model]),
        **_lm_cases(tmp_path_factory),
    }


# which case covers which class: every LightningModule class lightning_kd.modules exports needs one
COVERS = {
    DistillationModule: "DistillationModule",
    MultiTeacherDistillation: "MultiTeacherDistillation+features",
    AdversarialDistillation: "AdversarialDistillation+features",
    MutualLearning: "MutualLearning",
    ClassificationModule: "ClassificationModule",
    modules.CausalLMDistillation: "CausalLMDistillation",
    modules.CausalLMModule: "CausalLMModule",
    modules.CrossTokenizerDistillation: "CrossTokenizerDistillation",
}


def test_every_module_class_has_a_case():
    exported = {
        obj
        for _, obj in inspect.getmembers(modules, inspect.isclass)
        if issubclass(obj, L.LightningModule)
        and obj.__module__.startswith("lightning_kd.")
        and obj.__name__ != "BaseModule"
    }
    assert exported == set(COVERS), "add a contract case for every LightningModule in lightning_kd.modules"


@pytest.fixture(scope="module")
def all_cases(tmp_path_factory) -> dict[str, Case]:
    return cases(tmp_path_factory)


def _teacher_tensors(module: L.LightningModule) -> dict[str, torch.Tensor]:
    return {
        f"{name}.{key}": value.detach().clone()
        for name, teacher in module.named_modules()
        if isinstance(teacher, TeacherBase)
        for key, value in teacher.state_dict().items()
        if isinstance(value, torch.Tensor)
    }


CASE_NAMES = [
    "DistillationModule",
    "DistillationModule+features",
    "DistillationModule+CachedTeacher",
    "MultiTeacherDistillation+features",
    "AdversarialDistillation+features",
    "MutualLearning",
    "ClassificationModule",
    "CausalLMDistillation",
    "CausalLMModule",
    "CrossTokenizerDistillation",
]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_module_contract(name, all_cases, tmp_path):
    case = all_cases[name]
    case.build()  # first imports (transformers adds its own filters when imported) happen outside the check
    filters_before = list(warnings.filters)
    module = case.build()
    assert warnings.filters == filters_before, "constructing a module changed the process-wide warning filters"

    teacher_before = _teacher_tensors(module)
    ckpt = ModelCheckpoint(dirpath=tmp_path, filename="m", enable_version_counter=False)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=2,
        limit_val_batches=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ckpt],
        default_root_dir=tmp_path,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Found .* module\\(s\\) in eval mode")
        trainer.fit(module, datamodule=case.data())
    assert trainer.global_step == 2

    # no teacher parameter in any optimizer, and every teacher tensor untouched
    teacher_params = {id(p) for _, t in module.named_modules() if isinstance(t, TeacherBase) for p in t.parameters()}
    for optimizer in trainer.optimizers:
        in_opt = {id(p) for g in optimizer.param_groups for p in g["params"]}
        assert not in_opt & teacher_params
    after = _teacher_tensors(module)
    assert after.keys() == teacher_before.keys()
    for key, value in teacher_before.items():
        assert torch.equal(after[key], value), f"teacher tensor {key} changed"
    assert all(
        not p.requires_grad for _, t in module.named_modules() if isinstance(t, TeacherBase) for p in t.parameters()
    )

    # the checkpoint: weights-only readable, no teacher weights, reloads into a fresh module
    path = tmp_path / "m.ckpt"
    loaded = torch.load(path, weights_only=True)
    assert not [k for k in loaded["state_dict"] if k.startswith("teacher.")]
    fresh = case.build()
    fresh.load_state_dict(_with_teachers(fresh, loaded), strict=True)
    for a, b in zip(case.students(module), case.students(fresh)):
        a.eval(), b.eval()
        torch.manual_seed(0)
        out_a = case.run(a)
        torch.manual_seed(0)
        torch.testing.assert_close(case.run(b), out_a)


def _with_teachers(fresh: L.LightningModule, checkpoint: dict) -> dict:
    """What Lightning does on load: on_load_checkpoint puts the live teachers back, then load_state_dict."""
    checkpoint = copy.deepcopy(checkpoint)
    fresh.on_load_checkpoint(checkpoint)
    return checkpoint["state_dict"]


def test_no_module_constructor_takes_more_than_14_arguments():
    """Settings that belong together travel as one object (a teacher component, ``Divergence``, ``Generation``),
    so no constructor grows a long list; the schemes that extend DistillationModule take its arguments by name
    through ``**kwargs`` into that one signature."""
    for name in modules.__all__:
        cls = getattr(modules, name)
        if not (isinstance(cls, type) and issubclass(cls, L.LightningModule)):
            continue
        params = inspect.signature(cls.__init__).parameters.values()
        named = [p.name for p in params if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
        assert len(named) <= 14, f"{name} takes {len(named)} arguments: {named}"

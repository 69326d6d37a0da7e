"""DataFreeDistillation: each player moves only in its own step, the teacher never moves, the student never sees a
real training sample, checkpoints resume exactly, refusals name the fix, and a student learns from noise alone."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn

from lightning_kd import DataFreeDistillation, FeatureTerm
from lightning_kd.core.teacher import TeacherEnsemble
from lightning_kd.data import DataFreeDataModule, DigitsDataModule
from lightning_kd.losses import ATLoss
from lightning_kd.models import MLP, ImageGenerator, SmallCNN
from tests.helpers import MemoryLogger


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _params(module: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters only: a forward pass in train mode moves BatchNorm buffers, an update moves parameters."""
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def _same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def _module(kind: str = "dafl", **kwargs) -> DataFreeDistillation:
    torch.manual_seed(0)
    synthesis = {"kind": kind, **({"image_shape": [1, 8, 8], "steps": 3} if kind == "inversion" else {})}
    synthesis.update(kwargs.pop("synthesis", {}))
    generator = None if kind == "inversion" else ImageGenerator(16, 8, 1, 8)
    return DataFreeDistillation(SmallCNN(1, 10, [8, 16, 32]), MLP(64, 10, [16]), generator=generator,
                                synthesis=synthesis, **kwargs)  # fmt: skip


class NoTrainingData(DigitsDataModule):
    """Real digits for validation and test; asking for its training loader fails the test."""

    def train_dataloader(self):
        raise AssertionError("a data-free run asked for the real training data")


def _data(steps: int = 4) -> DataFreeDataModule:
    return DataFreeDataModule(NoTrainingData(batch_size=64), latent_dim=16, batch_size=16, steps_per_epoch=steps)


class Watch(L.Callback):
    def __init__(self):
        self.events: list[tuple[str, dict, dict]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.events.append(("start", _params(pl_module.student), _params(pl_module.generator)))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        who = "student" if optimizer is trainer.optimizers[0] else "generator"
        self.events.append((who, _params(pl_module.student), _params(pl_module.generator)))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.events.append(("end", _params(pl_module.student), _params(pl_module.generator)))


@pytest.mark.parametrize("kind", ["dafl", "adversarial"])
def test_each_player_moves_in_its_own_step_and_the_teacher_never(kind, trainer_factory):
    module = _module(kind, synthesis={"student_steps": 3, "bn_weight": 0.1})
    teacher = _state(module.teacher)
    watch, logger = Watch(), MemoryLogger()
    trainer = trainer_factory(max_epochs=1, callbacks=[watch], limit_val_batches=0, log_every_n_steps=1, logger=logger)
    trainer.fit(module, _data(steps=2))
    assert trainer.global_step == 2  # one per batch, whatever the extra updates
    names = [e[0] for e in watch.events]
    assert names == ["start", "generator", "student", "student", "student", "end"] * 2
    for i, (name, student, generator) in enumerate(watch.events[:-1]):
        nxt = watch.events[i + 1]
        if name == "start":  # nothing moved before the generator's update
            assert _same(student, nxt[1]) and _same(generator, nxt[2])
        if name == "generator":  # the generator's update moved the generator only
            assert _same(student, nxt[1]) and not _same(generator, nxt[2])
        if name == "student":  # a student update moves the student only
            assert not _same(student, nxt[1]) and _same(generator, nxt[2])
    assert _same(teacher, _state(module.teacher))
    logged = logger.keys()
    assert {"train/synth_loss", "train/synth_bn"} <= logged
    assert not any(k.startswith("_feature_layer") for k in module.state_dict())  # the teacher's layer, not ours
    assert {"dafl": "train/synth_oh", "adversarial": "train/synth_adv"}[kind] in logged


def test_resuming_at_an_epoch_boundary_continues_exactly(tmp_path, trainer_factory):
    """Generator, student and both optimizers are in the checkpoint; the noise of epoch 2 is the same in both
    runs (seeded by epoch and batch), so two epochs straight equal one epoch + a resumed one."""
    L.seed_everything(0)
    straight = _module()
    trainer_factory(max_epochs=2, limit_val_batches=0).fit(straight, _data())
    L.seed_everything(0)
    first = _module()
    trainer = trainer_factory(max_epochs=1, limit_val_batches=0)
    trainer.fit(first, _data())
    path = tmp_path / "epoch1.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=False)
    assert any(k.startswith("generator.") for k in checkpoint["state_dict"])
    assert len(checkpoint["optimizer_states"]) == 2
    L.seed_everything(0)
    resumed = _module()
    trainer_factory(max_epochs=2, limit_val_batches=0).fit(resumed, _data(), ckpt_path=path)
    assert _same(_state(straight.student), _state(resumed.student))
    assert _same(_state(straight.generator), _state(resumed.generator))


@pytest.fixture(scope="module")
def digits_teacher(tmp_path_factory) -> nn.Module:
    """A SmallCNN trained on the real digits (about 99 % test accuracy), as a data-free user's teacher."""
    from lightning_kd import ClassificationModule

    L.seed_everything(0)
    teacher = SmallCNN(1, 10, [16, 32, 64])
    trainer = L.Trainer(accelerator="cpu", max_epochs=8, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path_factory.mktemp("teacher"))  # fmt: skip
    trainer.fit(ClassificationModule(teacher), DigitsDataModule(batch_size=64))
    return teacher


def test_inversion_moves_noise_towards_its_labels_under_the_teacher(digits_teacher):
    module = DataFreeDistillation(digits_teacher, MLP(64, 10, [16]),
                                  synthesis={"kind": "inversion", "image_shape": [1, 8, 8], "steps": 30})  # fmt: skip
    y = torch.arange(10)
    torch.manual_seed(1)
    noise = torch.randn(10, 1, 8, 8)
    start = nn.functional.cross_entropy(module.teacher_logits(noise), y)
    torch.manual_seed(1)
    images = module.invert(y)
    assert images.shape == (10, 1, 8, 8) and not images.requires_grad
    end = nn.functional.cross_entropy(module.teacher_logits(images), y)
    assert float(end) < 0.5 * float(start)
    assert {"synth_ce", "synth_bn", "synth_tv", "synth_l2", "synth_loss"} <= set(module._records)


def test_refusals_name_the_fix(tmp_path):
    with pytest.raises(ValueError, match=r"optimises images directly: give image_shape \[C, H, W\]"):
        _module("inversion", synthesis={"image_shape": None})
    with pytest.raises(ValueError, match="drop `generator`"):
        DataFreeDistillation(SmallCNN(1, 10, [4, 8, 8]), MLP(64, 10), generator=ImageGenerator(16, 8, 1, 4),
                             synthesis={"kind": "inversion", "image_shape": [1, 8, 8]})  # fmt: skip
    with pytest.raises(ValueError, match=r"trains a generator: give one, e.g. generator: \{class_path"):
        DataFreeDistillation(SmallCNN(1, 10, [4, 8, 8]), MLP(64, 10), synthesis={"kind": "adversarial"})
    with pytest.raises(ValueError, match=r"Synthesis.kind must be one of \['dafl', 'adversarial', 'inversion'\]"):
        _module("gan")
    with pytest.raises(ValueError, match="Synthesis.student_steps must be an int >= 1, got 0"):
        _module(synthesis={"student_steps": 0})
    no_bn = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with pytest.raises(ValueError, match=r"has no BatchNorm layer: matching BatchNorm statistics \(DeepInversion\)"):
        DataFreeDistillation(no_bn, MLP(64, 10), synthesis={"kind": "inversion", "image_shape": [1, 8, 8]})
    no_linear = nn.Sequential(nn.Conv2d(1, 10, 8), nn.BatchNorm2d(10), nn.Flatten())
    with pytest.raises(ValueError, match="DAFL reads the features entering the teacher's classifier"):
        DataFreeDistillation(no_linear, MLP(64, 10), generator=ImageGenerator(16, 8, 1, 4))
    with pytest.raises(ValueError, match=r"teacher_features='head' is not a module of the teacher"):
        DataFreeDistillation(SmallCNN(1, 10, [4, 8, 8]), MLP(64, 10), generator=ImageGenerator(16, 8, 1, 4),
                             teacher_features="head")  # fmt: skip
    ensemble = TeacherEnsemble([SmallCNN(1, 10, [4, 8, 8]), SmallCNN(1, 10, [4, 8, 8])])
    with pytest.raises(ValueError, match="a TeacherEnsemble cannot answer for inputs it has not seen"):
        DataFreeDistillation(ensemble, MLP(64, 10), generator=ImageGenerator(16, 8, 1, 4))
    hint = FeatureTerm("hint", nn.MSELoss(), ["block2"], ["block2"], connector=True)
    with pytest.raises(ValueError, match="feature terms with connectors size them from a real example batch"):
        DataFreeDistillation(SmallCNN(1, 10, [8, 16, 32]), SmallCNN(1, 10, [4, 8, 16]),
                             generator=ImageGenerator(16, 8, 1, 4), feature_terms=[hint])  # fmt: skip


def test_a_generator_of_another_latent_size_is_named(trainer_factory):
    module = _module()
    data = DataFreeDataModule(latent_dim=8, batch_size=4, steps_per_epoch=1)
    with pytest.raises(ValueError, match=r"noise of length 8 but the generator takes latent_dim=16; set "):
        trainer_factory(limit_val_batches=0).fit(module, data)


def test_noise_batches_are_fresh_per_epoch_and_the_same_per_run():
    dm = DataFreeDataModule(latent_dim=4, batch_size=3, steps_per_epoch=2, seed=5)
    dm.setup("fit")
    loader = dm.train_dataloader()
    first = [z for z, _ in loader]
    again = [z for z, _ in dm.train_dataloader()]
    loader.sampler.set_epoch(1)
    later = [z for z, _ in loader]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], later[0]) and not torch.equal(first[0], first[1])
    with pytest.raises(ValueError, match="DataFreeDataModule has no test data: set evaluate_on"):
        dm.test_dataloader()


def test_a_dafl_student_learns_digits_from_noise_alone(digits_teacher, trainer_factory):
    """A trained digits teacher, then DAFL with the real training split out of reach: the student, which never saw
    a digit, scores far above chance (10 %) on the real test split."""
    L.seed_everything(0)
    module = DataFreeDistillation(digits_teacher, MLP(64, 10, [32]), generator=ImageGenerator(64, 8, 1, 32))
    data = DataFreeDataModule(NoTrainingData(batch_size=64), latent_dim=64, batch_size=64, steps_per_epoch=40)
    trainer = trainer_factory(max_epochs=4, limit_val_batches=0)
    trainer.fit(module, data)
    result = trainer.test(module, data, verbose=False)[0]
    assert result["test/teacher_acc"] > 0.95
    assert result["test/acc"] > 0.3, result


def test_at_terms_train_with_a_generator(trainer_factory):
    """ZSKT's student also matches attention maps: feature terms without connectors take part."""
    student = SmallCNN(1, 10, [4, 8, 16])
    at = FeatureTerm("at", ATLoss(), ["block1"], ["block1"], weight=10.0)
    module = DataFreeDistillation(SmallCNN(1, 10, [8, 16, 32]), student, generator=ImageGenerator(16, 8, 1, 8),
                                  synthesis={"kind": "adversarial"}, feature_terms=[at])  # fmt: skip
    logger = MemoryLogger()
    trainer_factory(limit_val_batches=0, log_every_n_steps=1, logger=logger).fit(module, _data(steps=2))
    assert "train/loss_at" in logger.keys()

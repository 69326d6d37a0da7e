"""AdversarialDistillation: each network moves only in its own step, the loss is what it says, resume works."""

from __future__ import annotations

import copy
import math
from functools import partial

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_kd.losses import kd_loss
from lightning_kd.modules.adversarial import (
    AdversarialDistillation,
    discriminator_loss,
    fooling_loss,
    mlp_discriminator,
)
from tests.helpers import LeaveTogether, MemoryLogger, make_student, make_teacher


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a)


def _grads(module: torch.nn.Module) -> list[torch.Tensor | None]:
    return [None if p.grad is None else p.grad.clone() for p in module.parameters()]


def _same_grads(a: list[torch.Tensor | None], b: list[torch.Tensor | None]) -> bool:
    return all(
        (x is None and y is None) or (x is not None and y is not None and torch.equal(x, y)) for x, y in zip(a, b)
    )


class StepWatch(L.Callback):
    """Student and discriminator weights (and grads) right before each optimizer step and at each batch end."""

    def __init__(self):
        self.events: list[tuple[str, dict, dict]] = []
        self.grads: list[tuple[list, list]] = []
        self.batches: list = []
        self.losses: list[torch.Tensor] = []

    def _snap(self, kind, pl_module):
        self.events.append((kind, _state(pl_module.student), _state(pl_module.discriminator)))
        self.grads.append((_grads(pl_module.student), _grads(pl_module.discriminator)))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self._snap("disc" if optimizer is trainer.optimizers[1] else "student", pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._snap("end", pl_module)
        self.batches.append(batch)
        self.losses.append(outputs["loss"])


def _bn_teacher() -> torch.nn.Module:
    teacher = make_teacher()
    teacher.train()  # non-trivial BN running stats, so an accidental train-mode pass would change them
    with torch.no_grad():
        teacher(torch.randn(32, 1, 8, 8))
    return teacher


@pytest.fixture(scope="module")
def fitted():
    """One short fit shared by the tests that only read what happened in it."""
    from lightning_kd.data import DigitsDataModule

    torch.manual_seed(0)
    teacher = _bn_teacher()
    teacher_before = _state(teacher)
    module = AdversarialDistillation(
        teacher,
        make_student(),
        temperature=3.0,
        alpha=0.7,
        adv_weight=0.5,
        lr_scheduler=partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.01),  # auto -> "step"
    )
    student_before, disc_before = _state(module.student), _state(module.discriminator)
    watch = StepWatch()
    logger = MemoryLogger()
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=4,
        limit_val_batches=1,
        logger=logger,
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[watch],
    )
    trainer.fit(module, DigitsDataModule(batch_size=64))
    return dict(
        logger=logger,
        module=module,
        trainer=trainer,
        watch=watch,
        teacher_before=teacher_before,
        student_before=student_before,
        disc_before=disc_before,
    )


def test_both_networks_learn_teacher_untouched_and_out_of_both_optimizers(fitted):
    module, trainer = fitted["module"], fitted["trainer"]
    assert _changed(fitted["student_before"], _state(module.student))
    assert _changed(fitted["disc_before"], _state(module.discriminator))
    after = module.teacher.model.state_dict()
    for k, v in fitted["teacher_before"].items():
        assert torch.equal(v, after[k]), f"teacher tensor {k} changed"
    assert not module.teacher.training and all(not p.requires_grad for p in module.teacher.parameters())
    assert all(p.grad is None for p in module.teacher.parameters())

    opt_student, opt_disc = ({id(p) for g in o.param_groups for p in g["params"]} for o in trainer.optimizers)
    assert opt_student == {id(p) for p in module.student.parameters()}
    assert opt_disc == {id(p) for p in module.discriminator.parameters()}
    assert not (opt_student | opt_disc) & {id(p) for p in module.teacher.parameters()}
    # global_step counts student steps only (one per batch); the step-interval scheduler ran once per batch
    assert trainer.global_step == 4
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == 4


def test_metrics_logged_in_range(fitted):
    logger = fitted["logger"]
    expected = {"train/loss", "train/loss_ce", "train/loss_kd", "train/loss_adv", "train/disc_loss", "train/disc_acc"}
    assert expected <= logger.keys()
    assert [step for step, row in logger.rows if "train/loss" in row] == [0, 1, 2, 3]  # one row per student step
    assert 0.0 <= logger.last("train/disc_acc") <= 1.0
    assert 0.0 < logger.last("train/disc_loss") < 10.0
    assert 0.0 < logger.last("train/loss_adv") < 10.0


def test_each_step_updates_only_its_own_network(fitted):
    watch = fitted["watch"]
    events = watch.events
    assert [kind for kind, _, _ in events] == ["disc", "student", "end"] * 4
    for i in range(0, len(events), 3):
        (_, s0, d0), (_, s1, d1), (_, s2, d2) = events[i : i + 3]
        assert not _changed(s0, s1), "the discriminator step moved the student"
        assert _changed(d0, d1), "the discriminator step did not move the discriminator"
        assert not _changed(d1, d2), "the student step moved the discriminator"
        assert _changed(s1, s2), "the student step did not move the student"
        # toggle_optimizer: each backward leaves the other network's gradients exactly as they were
        (s_grad_d, d_grad_d), (s_grad_s, d_grad_s) = watch.grads[i], watch.grads[i + 1]
        assert _same_grads(d_grad_d, d_grad_s), "the student's backward reached the discriminator"
        assert all(g is not None for g in s_grad_s) and all(g is not None for g in d_grad_d)
        if i:
            assert _same_grads(watch.grads[i - 2][0], s_grad_d), "the discriminator's backward reached the student"
        else:
            assert all(g is None for g in s_grad_d)


def test_losses_match_the_formulas_by_hand(fitted):
    module, watch = fitted["module"], fitted["watch"]
    student, disc = copy.deepcopy(module.student), copy.deepcopy(module.discriminator)
    t_model = module.teacher.model
    for b, (x, y) in enumerate(watch.batches):
        (_, _, d_before), (_, s_before, d_after) = watch.events[3 * b : 3 * b + 2]
        student.load_state_dict(s_before)
        with torch.no_grad():
            s, t = student(x), t_model(x)

            # the student step: D as updated by this batch's discriminator step
            disc.load_state_dict(d_after)
            d_s = disc(F.softmax(s / 3.0, dim=-1)).squeeze(-1)
            expected = (
                0.3 * F.cross_entropy(s, y)
                + 0.7 * kd_loss(s, t, 3.0)
                + 0.5 * F.binary_cross_entropy_with_logits(d_s, torch.ones_like(d_s))
            )
            torch.testing.assert_close(watch.losses[b], expected)

    # the discriminator step of the last batch: D before its update, teacher real, student fake
    disc.load_state_dict(d_before)
    with torch.no_grad():
        d_t, d_s = disc(F.softmax(t / 3.0, -1)).squeeze(-1), disc(F.softmax(s / 3.0, -1)).squeeze(-1)
    bce = F.binary_cross_entropy_with_logits
    expected_d = 0.5 * (bce(d_t, torch.ones_like(d_t)) + bce(d_s, torch.zeros_like(d_s)))
    logger = fitted["logger"]
    torch.testing.assert_close(torch.tensor(logger.last("train/disc_loss")), expected_d)
    acc = torch.cat([d_t > 0, d_s <= 0]).float().mean()
    torch.testing.assert_close(torch.tensor(logger.last("train/disc_acc")), acc)


def test_gan_loss_golden_values():
    zero = torch.zeros(4)
    torch.testing.assert_close(discriminator_loss(zero, zero), torch.tensor(math.log(2.0)))
    torch.testing.assert_close(fooling_loss(zero), torch.tensor(math.log(2.0)))
    # D(t) = 2, D(s) = -1: ½ [log(1 + e^-2) + log(1 + e^-1)]
    expected = 0.5 * (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-1.0)))
    torch.testing.assert_close(discriminator_loss(torch.tensor([-1.0]), torch.tensor([2.0])), torch.tensor(expected))
    torch.testing.assert_close(fooling_loss(torch.tensor([-1.0])), torch.tensor(math.log1p(math.e)))


def test_discriminator_input_and_default_shape():
    m = AdversarialDistillation(make_teacher(), make_student(), temperature=2.0)
    z = torch.randn(5, 10)
    torch.testing.assert_close(m.discriminate(z), m.discriminator((z / 2.0).softmax(-1)).squeeze(-1))
    m_logits = AdversarialDistillation(
        make_teacher(), make_student(), input="logits", discriminator=mlp_discriminator(10)
    )
    torch.testing.assert_close(m_logits.discriminate(z), m_logits.discriminator(z).squeeze(-1))
    assert m.loss_weights == pytest.approx({"ce": 0.1, "kd": 0.9, "adv": 0.1})


class ResumeWatch(L.Callback):
    def on_train_start(self, trainer, pl_module):
        self.global_step = trainer.global_step
        self.disc = _state(pl_module.discriminator)
        self.opt_states = [copy.deepcopy(o.state_dict()) for o in trainer.optimizers]
        self.scheduler_epoch = trainer.lr_scheduler_configs[0].scheduler.last_epoch


def _assert_same(a, b, where=""):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`")
def test_resume_restores_discriminator_optimizers_and_step(digits, trainer_factory, tmp_path):
    def build():
        return AdversarialDistillation(
            make_teacher(),
            make_student(),
            lr_scheduler=partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5),  # auto -> "epoch"
        )

    ckpt_cb = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="adv", enable_version_counter=False)
    first = trainer_factory(max_epochs=1, limit_train_batches=3, limit_val_batches=1, enable_checkpointing=True)
    first.callbacks.append(ckpt_cb)
    first.fit(build(), digits)
    path = tmp_path / "ckpt" / "adv.ckpt"
    ckpt = torch.load(path, weights_only=True)  # nothing pickled: modules and callables stay out of hparams
    assert ckpt["global_step"] == 3
    assert len(ckpt["optimizer_states"]) == 2
    assert not [k for k in ckpt["state_dict"] if k.startswith("teacher.")]
    assert [k for k in ckpt["state_dict"] if k.startswith("discriminator.")]
    assert "disc_optimizer" not in ckpt["hyper_parameters"]  # a callable: left out
    assert ckpt["hyper_parameters"].get("discriminator") is None  # None (the default MLP) is a plain value
    assert ckpt["lr_schedulers"][0]["last_epoch"] == 1, "the epoch scheduler must step before the checkpoint"

    watch = ResumeWatch()
    second = trainer_factory(max_epochs=2, limit_train_batches=3, limit_val_batches=1, callbacks=[watch])
    second.fit(build(), digits, ckpt_path=str(path))
    assert watch.global_step == 3 and second.global_step == 6
    saved_disc = {k.removeprefix("discriminator."): v for k, v in ckpt["state_dict"].items() if "discriminator." in k}
    _assert_same(saved_disc, watch.disc, "discriminator")
    _assert_same(ckpt["optimizer_states"], watch.opt_states, "optimizer_states")
    assert watch.scheduler_epoch == 1
    assert second.lr_scheduler_configs[0].scheduler.last_epoch == 2


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match=r"adv_weight must be a finite number >= 0 .*got -0.5"):
        AdversarialDistillation(make_teacher(), make_student(), adv_weight=-0.5)
    for steps in (0, -1):
        with pytest.raises(ValueError, match=rf"disc_steps must be an int >= 1 .*got {steps}"):
            AdversarialDistillation(make_teacher(), make_student(), disc_steps=steps)
    with pytest.raises(ValueError, match=r"input must be 'logits' or 'probs'"):
        AdversarialDistillation(make_teacher(), make_student(), input="softmax")
    m = AdversarialDistillation(make_teacher(), make_student(), discriminator=torch.nn.Linear(10, 2))
    with pytest.raises(ValueError, match=r"one real/fake logit per sample"):
        m.discriminate(torch.randn(4, 10))


class SaveRankWeights(L.Callback):
    """Each DDP rank writes its final weights to ``<folder>/rank<r>.pt``; the parent compares them.

    No collective runs at the end of training: a gloo ``all_gather`` in ``on_train_end`` raced the
    process-group teardown and aborted a rank now and then (CI, SIGABRT), which tested gloo, not us.
    """

    def __init__(self, folder):
        self.folder = folder

    def on_train_end(self, trainer, pl_module):
        state = {name: _state(getattr(pl_module, name)) for name in ("student", "discriminator")}
        torch.save({"state": state, "step": trainer.global_step}, self.folder / f"rank{trainer.global_rank}.pt")


@pytest.mark.slow
def test_ddp_with_find_unused_parameters_keeps_ranks_in_sync(digits, trainer_factory, tmp_path):
    module = AdversarialDistillation(make_teacher(), make_student())
    trainer = trainer_factory(
        devices=2,
        strategy="ddp_spawn_find_unused_parameters_true",  # each backward leaves one network unused
        limit_train_batches=2,
        limit_val_batches=1,
        callbacks=[SaveRankWeights(tmp_path), LeaveTogether()],
    )
    trainer.fit(module, digits)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert [r["step"] for r in ranks] == [2, 2]
    for name in ("student", "discriminator"):
        first, second = ranks[0]["state"][name], ranks[1]["state"][name]
        assert first.keys() == second.keys()
        for key in first:
            assert torch.equal(first[key], second[key]), f"{name}.{key} differs between ranks"

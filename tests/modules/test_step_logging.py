"""The per-step logging path: the same rows as Lightning would log, no host sync on the other steps, a
non-finite flag kept on the device, and a progress bar that reads the values at its own pace."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from lightning_kd import DistillationModule
from lightning_kd.apps.cli import build_cli
from lightning_kd.callbacks import KDProgressBar
from lightning_kd.losses import kd_loss
from tests.helpers import REPO, MemoryLogger, make_student, make_teacher


class LossPerStep(L.Callback):
    """The loss each training batch returned, by batch index."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


class PlainLogging(L.LightningModule):
    """What lightning-kd replaced: self.log on every step. Lightning decides which steps reach the logger."""

    def __init__(self) -> None:
        super().__init__()
        self.net = make_student()

    def training_step(self, batch, batch_idx):
        loss = F.cross_entropy(self.net(batch[0]), batch[1])
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _fit(module, digits, trainer_factory, every: int, accumulate: int = 1, batches: int = 10, **kw):
    logger, losses = MemoryLogger(), LossPerStep()
    trainer = trainer_factory(
        max_epochs=1,
        limit_train_batches=batches,
        limit_val_batches=0,
        logger=logger,
        log_every_n_steps=every,
        accumulate_grad_batches=accumulate,
        callbacks=[losses],
        **kw,
    )
    trainer.fit(module, digits)
    return logger, losses, trainer


def _train_rows(logger: MemoryLogger) -> list[tuple[int, dict]]:
    return [(step, row) for step, row in logger.rows if "train/loss" in row]


@pytest.mark.parametrize("accumulate", [1, 2])
def test_logger_gets_the_rows_lightning_would_log_with_the_steps_values(digits, trainer_factory, accumulate):
    reference, _, _ = _fit(PlainLogging(), digits, trainer_factory, every=3, accumulate=accumulate, batches=12)
    torch.manual_seed(0)
    m = DistillationModule(make_teacher(), make_student(), temperature=3.0, alpha=0.7)
    logger, losses, _ = _fit(m, digits, trainer_factory, every=3, accumulate=accumulate, batches=12)

    rows = _train_rows(logger)
    assert [s for s, _ in rows] == [s for s, _ in _train_rows(reference)]  # the steps Lightning picks
    assert len(rows) == (4 if accumulate == 1 else 2)
    for step, row in rows:
        assert set(row) == {"train/loss", "train/loss_ce", "train/loss_kd", "train/temperature", "train/alpha", "epoch"}
        # the last (micro-)batch of that optimizer step
        batch = (step + 1) * accumulate - 1
        assert row["train/loss"] == pytest.approx(losses.losses[batch] * accumulate, rel=1e-6)
        assert row["train/loss"] == pytest.approx(0.3 * row["train/loss_ce"] + 0.7 * row["train/loss_kd"], rel=1e-5)
        assert (row["train/temperature"], row["train/alpha"], row["epoch"]) == pytest.approx((3.0, 0.7, 0))


def test_the_logged_terms_are_the_terms_of_that_step(digits, trainer_factory):
    """Recompute CE and KD by hand on the batch of a logged step, with the student as it was then."""

    class Snapshot(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 4:
                self.batch = batch
                self.student = {k: v.clone() for k, v in pl_module.student.state_dict().items()}

    snap = Snapshot()
    torch.manual_seed(0)
    m = DistillationModule(make_teacher(), make_student(), temperature=2.0, alpha=0.5)
    logger = MemoryLogger()
    trainer = trainer_factory(
        max_epochs=1, limit_train_batches=5, limit_val_batches=0, logger=logger, log_every_n_steps=5, callbacks=[snap]
    )
    trainer.fit(m, digits)
    (step, row), *_ = _train_rows(logger)
    assert step == 4
    student = make_student()
    student.load_state_dict(snap.student)
    x, y = snap.batch
    with torch.no_grad():
        s, t = student(x), m.teacher.model(x)
    assert row["train/loss_ce"] == pytest.approx(F.cross_entropy(s, y).item(), rel=1e-5)
    assert row["train/loss_kd"] == pytest.approx(kd_loss(s, t, 2.0).item(), rel=1e-5)


def test_no_host_sync_in_training_step_between_logging_steps(digits, trainer_factory, monkeypatch):
    """Reading a tensor's value on the host (item, tolist, float, bool, int, numpy) would block on a GPU: none may
    happen in a training step that does not log."""
    reads: list[tuple[int, str]] = []
    current = {"step": None}
    for name in ("item", "tolist", "__float__", "__bool__", "__int__", "numpy"):
        original = getattr(torch.Tensor, name)

        def spy(self, *args, _original=original, _name=name, **kwargs):
            if current["step"] is not None:
                reads.append((current["step"], _name))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, spy)

    class Spied(DistillationModule):
        def training_step(self, batch, batch_idx):
            current["step"] = self.global_step
            try:
                return super().training_step(batch, batch_idx)
            finally:
                current["step"] = None

    m = Spied(make_teacher(), make_student())
    trainer = trainer_factory(
        max_epochs=1, limit_train_batches=12, limit_val_batches=0, log_every_n_steps=5, logger=MemoryLogger()
    )
    trainer.fit(m, digits)
    logging_steps = {4, 9}
    assert reads, "the spy saw nothing: it would not catch a sync either"
    assert {step for step, _ in reads} <= logging_steps, reads


def test_a_non_finite_loss_stops_the_run_and_names_the_term(digits, trainer_factory):
    from lightning_kd.modules.common import NonFiniteLossError

    class GoesNaN(DistillationModule):
        def compute_losses(self, student_logits, teacher, batch):
            terms = super().compute_losses(student_logits, teacher, batch)
            if self.global_step == 3:
                terms["kd"] = terms["kd"] * float("nan")
            return terms

    # no logging step after the NaN: the flag kept on the device is read at the epoch's end
    m = GoesNaN(make_teacher(), make_student())
    trainer = trainer_factory(max_epochs=2, limit_train_batches=6, limit_val_batches=0, log_every_n_steps=100)
    with pytest.raises(NonFiniteLossError, match=r"between step 0 and step 5 \(at the end of epoch 0\).*Try: lower"):
        trainer.fit(m, digits)
    assert trainer.current_epoch == 0 and trainer.global_step == 6  # stopped at the first check
    # the NaN step is a logging step: stopped right there, the KD term named, the teacher suspected
    m = GoesNaN(make_teacher(), make_student())
    trainer = trainer_factory(max_epochs=1, limit_train_batches=6, limit_val_batches=0, log_every_n_steps=2)
    with pytest.raises(
        NonFiniteLossError,
        match=r"between step 2 and step 3; non-finite at the last step: loss = nan, loss_kd = nan\. "
        r"Try: the KD term went non-finite first: check the teacher",
    ):
        trainer.fit(m, digits)
    assert trainer.global_step == 3  # the optimizer never stepped on the NaN loss


def test_a_finite_loss_that_soars_stops_the_run_and_a_falling_one_does_not(digits, trainer_factory):
    from lightning_kd.modules.common import DivergedLossError

    class Soars(DistillationModule):
        def compute_losses(self, student_logits, teacher, batch):
            terms = super().compute_losses(student_logits, teacher, batch)
            if self.global_step >= 3:
                terms = {name: value * 1e6 for name, value in terms.items()}  # finite, but 1e6 times higher
            return terms

    # no logging step: the mean of the epoch, read at its end, against the first step's loss
    trainer = trainer_factory(max_epochs=2, limit_train_batches=6, limit_val_batches=0, log_every_n_steps=100)
    with pytest.raises(
        DivergedLossError,
        match=r"the loss rose from [\d.]+ \(step 0\) to a mean of [\d.e+]+ between step 0 and step 5 \(at the end of "
        r"epoch 0\), over 100x where it started.*lower the learning rate \(now 0\.001\).*raise "
        r"Soars\.divergence_factor \(now 100\)",
    ):
        trainer.fit(Soars(make_teacher(), make_student()), digits)
    # at a logging step: stopped there, on the mean since the last check
    trainer = trainer_factory(max_epochs=1, limit_train_batches=6, limit_val_batches=0, log_every_n_steps=2)
    with pytest.raises(DivergedLossError, match=r"between step 2 and step 3, over 100x"):
        trainer.fit(Soars(make_teacher(), make_student()), digits)
    # switched off, or a healthy run: no alarm
    module = Soars(make_teacher(), make_student())
    module.divergence_factor = float("inf")
    trainer_factory(max_epochs=1, limit_train_batches=6, limit_val_batches=0, log_every_n_steps=2).fit(module, digits)
    healthy = DistillationModule(make_teacher(), make_student())
    trainer_factory(max_epochs=2, limit_train_batches=10, limit_val_batches=0, log_every_n_steps=1).fit(healthy, digits)


def test_train_loss_reaches_callback_metrics_at_each_epoch_end(digits, trainer_factory, tmp_path):
    """Fewer steps than log_every_n_steps: a checkpoint callback monitoring train/loss still finds it."""
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, monitor="train/loss", filename="best")
    m = DistillationModule(make_teacher(), make_student())
    trainer = trainer_factory(
        max_epochs=2, limit_train_batches=3, limit_val_batches=0, callbacks=[ckpt], enable_checkpointing=True
    )
    trainer.fit(m, digits)
    assert "train/loss" in trainer.callback_metrics and (tmp_path / "best.ckpt").is_file()


def test_progress_bar_refreshes_by_time_and_shows_loss_lr_rate_and_val_acc(digits, trainer_factory):
    with pytest.raises(ValueError, match="refresh_seconds must be >= 0"):
        KDProgressBar(refresh_seconds=-1)
    shown: list[dict] = []

    class Watched(KDProgressBar):
        def get_metrics(self, trainer, pl_module):
            items = super().get_metrics(trainer, pl_module)
            shown.append(items)
            return items

    bar = Watched(refresh_seconds=3600.0)  # never by time: only at each epoch's last batch
    m = DistillationModule(make_teacher(), make_student())
    trainer_factory(
        max_epochs=2, limit_train_batches=5, limit_val_batches=2, enable_progress_bar=True, callbacks=[bar]
    ).fit(m, digits)
    train_refreshes = [s for s in shown if "samples/s" in s]
    assert len(train_refreshes) >= 2  # the last batch of each epoch (and epoch ends)
    last = shown[-1]
    assert {"loss", "lr", "samples/s", "val/acc"} <= set(last)
    assert float(last["lr"]) == pytest.approx(1e-3)  # Adam's default
    assert float(last["samples/s"]) > 0


def test_the_cli_defaults_to_the_step_free_bar_unless_told_otherwise(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = ["--config", str(REPO / "configs/digits/base.yaml"), "--config", str(REPO / "configs/digits/kd.yaml")]
    base.append("--model.init_args.teacher_ckpt=null")
    cli = build_cli(base, run=False)
    assert sum(isinstance(c, KDProgressBar) for c in cli.trainer.callbacks) == 1
    cli = build_cli([*base, "--trainer.enable_progress_bar=false"], run=False)
    assert not any(isinstance(c, L.pytorch.callbacks.ProgressBar) for c in cli.trainer.callbacks)
    own = "--trainer.callbacks+=lightning.pytorch.callbacks.TQDMProgressBar"
    cli = build_cli([*base, own], run=False)
    bars = [c for c in cli.trainer.callbacks if isinstance(c, L.pytorch.callbacks.ProgressBar)]
    assert [type(b).__name__ for b in bars] == ["TQDMProgressBar"]

"""Temperature / loss-weight schedules: exact values at given steps, and the same curve after resume."""

from __future__ import annotations

import math

import lightning as L
import pytest
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_kd import DistillationModule
from lightning_kd.callbacks import LossWeightScheduler, TemperatureScheduler
from lightning_kd.core.schedules import schedule_value
from tests.helpers import make_student, make_teacher


@pytest.mark.parametrize(
    ("kind", "step", "expected"),
    [
        ("constant", 7, 8.0),
        ("linear", 0, 8.0),
        ("linear", 25, 6.5),  # 8 + (2 - 8) * 25/100
        ("linear", 100, 2.0),
        ("linear", 250, 2.0),  # clamped past the end
        ("cosine", 0, 8.0),
        ("cosine", 50, 5.0),  # midpoint of a half cosine
        ("cosine", 25, 2.0 + 6.0 * 0.5 * (1 + math.cos(math.pi / 4))),
        ("step", 49, 8.0),
        ("step", 50, 2.0),
    ],
)
def test_schedule_values(kind, step, expected):
    assert schedule_value(kind, step, 100, start=8.0, end=2.0, milestones=(0.5,)) == pytest.approx(expected)


def test_step_schedule_with_two_milestones_moves_evenly():
    vals = [schedule_value("step", s, 100, 0.9, 0.1, (0.25, 0.75)) for s in (0, 24, 25, 74, 75, 99)]
    assert vals == pytest.approx([0.9, 0.9, 0.5, 0.5, 0.1, 0.1])


def test_bad_schedule_arguments():
    with pytest.raises(ValueError, match="unknown schedule 'exp'"):
        TemperatureScheduler("exp")
    with pytest.raises(ValueError, match="temperatures must be finite numbers > 0.*; give both > 0, e.g. start=4.0"):
        TemperatureScheduler("linear", start=4.0, end=0.0)
    with pytest.raises(ValueError, match=r"alpha end must be in \[0, 1\]"):
        LossWeightScheduler("linear", start=0.5, end=1.5)
    with pytest.raises(ValueError, match="milestones must be increasing fractions"):
        TemperatureScheduler("step", milestones=[0.8, 0.2])
    with pytest.raises(ValueError, match="total_steps must be > 0"):
        schedule_value("linear", 0, 0, 1.0, 2.0)


class Record(L.Callback):
    def __init__(self):
        self.seen: dict[int, tuple[float, float]] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        # value in force during the step that just ran (global_step already incremented)
        self.seen[trainer.global_step - 1] = (pl_module.temperature, pl_module.alpha)


def _run(digits, tmp_path, epochs, ckpt_path=None):
    rec = Record()
    cbs = [
        TemperatureScheduler("cosine", start=8.0, end=2.0),
        LossWeightScheduler("linear", start=0.0, end=0.9),
        rec,
        ModelCheckpoint(dirpath=tmp_path, filename="last", enable_version_counter=False),
    ]
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        limit_train_batches=5,
        limit_val_batches=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=cbs,
    )
    module = DistillationModule(make_teacher(), make_student())
    trainer.fit(module, digits, ckpt_path=ckpt_path)
    return rec.seen, trainer


def test_schedules_drive_the_module_and_continue_exactly_on_resume(digits, tmp_path):
    full, trainer = _run(digits, tmp_path / "full", epochs=4)
    total = trainer.estimated_stepping_batches
    assert total == 20 and sorted(full) == list(range(20))
    for step, (temp, alpha) in full.items():
        assert temp == pytest.approx(schedule_value("cosine", step, 20, 8.0, 2.0))
        assert alpha == pytest.approx(schedule_value("linear", step, 20, 0.0, 0.9))

    # a run interrupted after 2 epochs (its checkpoint), resumed with the full budget of 4 epochs: the schedule
    # depends only on global_step and the total, so the resumed half must equal the uninterrupted run
    _run(digits, tmp_path / "half", epochs=2)
    resumed, _ = _run(digits, tmp_path / "resumed", epochs=4, ckpt_path=tmp_path / "half" / "last.ckpt")
    assert sorted(resumed) == list(range(10, 20))
    for step in range(10, 20):
        assert resumed[step] == pytest.approx(full[step])


def test_an_unknown_term_is_named_with_the_closest_one():
    from lightning_kd import FeatureTerm
    from lightning_kd.losses import FitNetLoss

    module = DistillationModule(
        make_teacher(), make_student(), feature_terms=[FeatureTerm("hint", FitNetLoss(), [""], [""])]
    )
    with pytest.raises(
        ValueError, match=r"no feature term named 'hnit'; the module has \['hint'\]: did you mean term='hint'"
    ):
        LossWeightScheduler("linear", 1.0, 0.0, term="hnit").on_fit_start(None, module)

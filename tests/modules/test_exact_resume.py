"""A run interrupted mid-epoch and resumed ends with exactly the weights of a run never interrupted: the position
in the epoch's order and the random generators (augmentation, dropout) come back from the checkpoint. Augmented
digits, random crops from the global generator; tolerance 0 on CPU."""

from __future__ import annotations

import signal

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from lightning_kd import DistillationModule
from lightning_kd.callbacks import RunCheckpoint
from lightning_kd.data import DigitsDataModule
from tests.helpers import make_teacher


def _student() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 10))


def _module() -> DistillationModule:
    L.seed_everything(0)
    return DistillationModule(make_teacher(), _student(), alpha=0.5)


def _data(**kwargs) -> DigitsDataModule:
    return DigitsDataModule(batch_size=64, augment=True, **kwargs)


def _trainer(tmp_path, callbacks, max_epochs=3) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu", max_epochs=max_epochs, logger=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path, num_sanity_val_steps=0, limit_val_batches=0, callbacks=callbacks,
    )  # fmt: skip


class StopAt(L.Callback):
    """Stops the run when batch ``step`` (counted over the run) starts, after it was fetched and augmented."""

    def __init__(self, step: int, exception: type[BaseException]) -> None:
        self.step, self.exception = step, exception

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise self.exception()


def _weights(module: DistillationModule) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.student.state_dict().items()}


@pytest.fixture
def straight(tmp_path):
    module = _module()
    _trainer(tmp_path / "straight", [RunCheckpoint(dirpath=str(tmp_path / "straight"), monitor=None)]).fit(
        module, _data()
    )
    return _weights(module), module.global_step


@pytest.mark.parametrize("stop", [KeyboardInterrupt, "checkpoint"], ids=["ctrl-c", "mid-epoch-checkpoint"])
def test_an_interrupted_run_resumed_mid_epoch_ends_with_the_uninterrupted_weights(tmp_path, straight, stop):
    weights, steps = straight
    folder = tmp_path / "run"
    first = _module()
    if stop is KeyboardInterrupt:
        handler = signal.getsignal(signal.SIGINT)  # Lightning ignores SIGINT after a Ctrl-C: put it back after
        try:
            with pytest.raises(SystemExit):
                callbacks = [RunCheckpoint(dirpath=str(folder), monitor=None), StopAt(25, KeyboardInterrupt)]
                _trainer(folder, callbacks).fit(first, _data())
        finally:
            signal.signal(signal.SIGINT, handler)
        resume_from = folder / "last.ckpt"
    else:  # a checkpoint every 7 steps, the run stopped later: resume from the one written mid-epoch 1 (step 21)
        saver = ModelCheckpoint(dirpath=folder, every_n_train_steps=7, save_top_k=-1, filename="{step}")
        _trainer(folder, [saver], max_epochs=2).fit(first, _data())
        resume_from = folder / "step=21.ckpt"
    saved = torch.load(resume_from, weights_only=True)
    assert 19 < saved["global_step"] < 38  # inside epoch 1 (19 batches per epoch)
    assert saved["DigitsDataModule"]["epoch"] == 1 and saved["DigitsDataModule"]["samples"] % 64 == 0
    resumed = _module()
    _trainer(tmp_path / "resumed", [RunCheckpoint(dirpath=str(tmp_path / "resumed"), monitor=None)]).fit(
        resumed, _data(), ckpt_path=str(resume_from)
    )
    assert resumed.global_step == steps
    for key, value in _weights(resumed).items():
        assert torch.equal(value, weights[key]), f"{key} differs by {(value - weights[key]).abs().max().item()}"


def test_a_resume_with_another_batch_size_or_other_data_says_so(tmp_path, caplog):
    folder = tmp_path / "run"
    saver = ModelCheckpoint(dirpath=folder, every_n_train_steps=5, save_top_k=-1, filename="{step}")
    _trainer(folder, [saver], max_epochs=1).fit(_module(), _data())
    ckpt = str(folder / "step=5.ckpt")
    with caplog.at_level("INFO"):
        _trainer(tmp_path / "a", [], max_epochs=1).fit(
            _module(), DigitsDataModule(batch_size=32, augment=True), ckpt_path=ckpt
        )
    assert "resuming with batch_size=32; the checkpoint was trained with batch_size=64" in caplog.text
    with pytest.raises(ValueError, match="the checkpoint was trained on other training data than DigitsDataModule"):
        _trainer(tmp_path / "b", [], max_epochs=1).fit(_module(), _data(val_fraction=0.3), ckpt_path=ckpt)

"""A full disk while a checkpoint is written is said as a full disk — where, how much is free, what to do — not as
the cross-device rename that failed first; the checkpoints written before are untouched and no temporary is
left."""

from __future__ import annotations

import errno

import pytest
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lightning_kd.apps.cli import main
from tests.helpers import REPO, untouched

RECIPE = [f"--config={REPO / 'configs/digits/base.yaml'}", f"--config={REPO / 'configs/digits/student.yaml'}"]
QUICK = ["--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false"]


def _full_disk(after: int):
    """TorchCheckpointIO.save_checkpoint that fails, after ``after`` saves, as fsspec does on a full disk: its
    temporary file cannot be renamed across disks (EXDEV) and the copy then runs out of space (ENOSPC)."""
    original, calls = TorchCheckpointIO.save_checkpoint, []

    def save(self, checkpoint, path, storage_options=None):
        calls.append(path)
        if len(calls) <= after:
            return original(self, checkpoint, path, storage_options)
        try:
            raise OSError(errno.EXDEV, "Invalid cross-device link", "/tmp/tmpk3x9", None, str(path))
        except OSError:
            raise OSError(errno.ENOSPC, "No space left on device", str(path)) from None

    return save


def test_a_full_disk_is_named_and_the_earlier_checkpoints_are_kept(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    main(["fit", *RECIPE, "--trainer.max_epochs=1", *QUICK])  # the first run: its files must survive
    published = tmp_path / "runs/digits/student/model.ckpt"
    last = tmp_path / "runs/digits/student/version_0/checkpoints/last.ckpt"
    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", _full_disk(after=0))
    with untouched(published, last), pytest.raises(SystemExit) as exit_:
        main(["fit", *RECIPE, "--trainer.max_epochs=1", *QUICK])
    assert exit_.value.code == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lightning-kd: error:")][0]
    assert "Invalid cross-device link" not in err
    assert err.startswith("lightning-kd: error: DiskFullError: could not write ")
    assert "no space left on the disk of " in err and " MB free)" in err
    assert "point trainer.default_root_dir (checkpoint.dirpath) at a disk with room" in err
    assert "the checkpoints already written are untouched" in err
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_full_disk_deep_in_a_chain_is_said_first(capsys):
    from lightning_kd.apps.cli_errors import short_message

    try:
        try:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        except OSError:
            raise OSError(errno.ENOSPC, "No space left on device", "/data/out.bin")  # noqa: B904 - as shutil does
    except OSError as err:
        message = short_message(err)
    assert message == (
        "no space left on the disk of /data/out.bin: No space left on device. Free space there (or point the run at "
        "a disk with room); what was written before is untouched."
    )

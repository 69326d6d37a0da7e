"""Unreadable or unsuitable checkpoint files (``core/weights.py``) fail with a message that names them and
says the fix, and the files are left byte-identical."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch

from lightning_kd.core.teacher import Teacher
from lightning_kd.core.weights import load_weights
from tests.helpers import REPO, make_student, untouched

REBUILD = re.escape("rebuild it with `lightning-kd cache --config <recipe.yaml> --overwrite`")


# -- checkpoints (core/weights.py) --------------------------------------------------------------------------
class Opaque:
    """A pickled object that a weights-only load refuses."""


@pytest.fixture
def ckpt(tmp_path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "teacher.pt"
    torch.save(make_student().state_dict(), path)
    return path


def test_a_directory_is_named_with_the_checkpoints_inside(tmp_path, ckpt):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(ckpt, run / "checkpoints" / "last.ckpt")
    shutil.copy(ckpt, run / "weights.pth")
    (run / "notes.txt").write_text("not a checkpoint")
    with untouched(run), pytest.raises(IsADirectoryError) as err:
        load_weights(make_student(), run, what="teacher_ckpt")
    msg = str(err.value)
    assert f"teacher_ckpt {str(run)!r} is a directory, not a checkpoint file; pass one of" in msg
    assert str(run / "checkpoints" / "last.ckpt") in msg and str(run / "weights.pth") in msg
    assert "notes.txt" not in msg and "does not exist" not in msg
    for i in range(6):
        shutil.copy(ckpt, run / f"e{i}.ckpt")
    with pytest.raises(IsADirectoryError, match=r"e3.ckpt and 3 more\.$"):  # 5 listed, the rest counted
        load_weights(make_student(), run)
    (tmp_path / "empty").mkdir()
    with pytest.raises(IsADirectoryError, match=r"is a directory.*holds no \*\.ckpt, \*\.pt or \*\.pth file"):
        load_weights(make_student(), tmp_path / "empty")


@pytest.mark.parametrize("allow_pickle", [False, True])
def test_a_truncated_checkpoint_is_named_as_such(tmp_path, ckpt, allow_pickle):
    half = tmp_path / "half.pt"
    half.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    with untouched(half), pytest.raises(ValueError) as err:
        load_weights(make_student(), half, what="teacher_ckpt", allow_pickle=allow_pickle)
    assert re.match(
        rf"teacher_ckpt {re.escape(repr(str(half)))} is not a readable PyTorch checkpoint \(truncated or "
        r"corrupted: .*central directory\); re-save it with torch\.save\(model\.state_dict\(\), path\), or "
        r"re-copy it",
        str(err.value),
    )
    legacy = tmp_path / "legacy.pt"  # torch.save's pre-1.6 format, cut short: a broken pickle stream
    torch.save(make_student().state_dict(), legacy, _use_new_zipfile_serialization=False)
    legacy.write_bytes(legacy.read_bytes()[:200])
    with untouched(legacy), pytest.raises(ValueError, match=r"is not a readable PyTorch checkpoint \(truncated"):
        load_weights(make_student(), legacy, allow_pickle=allow_pickle)


@pytest.mark.parametrize("allow_pickle", [False, True])
@pytest.mark.parametrize(
    "content, match",
    [
        (
            b"hello world\n",
            r"is not a PyTorch checkpoint \(torch\.save writes a zip archive; this file starts with "
            r"b'hello world\\n'\); point at the file",
        ),
        (
            b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\n",
            r"is a Git LFS pointer, not a PyTorch "
            r"checkpoint \(torch\.save writes a zip archive; this file starts with b'version https://'\); run `git lfs "
            r"pull`",
        ),
        (b"", r"is empty \(0 bytes\): the save or copy was interrupted; re-save it"),
    ],
    ids=["text", "lfs", "empty"],
)
def test_a_file_that_is_no_checkpoint_is_refused_before_unpickling(tmp_path, content, match, allow_pickle):
    path = tmp_path / "teacher.ckpt"
    path.write_bytes(content)
    with untouched(path), pytest.raises(ValueError, match=f"^checkpoint {re.escape(repr(str(path)))} {match}"):
        load_weights(make_student(), path, allow_pickle=allow_pickle)


def test_a_plain_pickle_and_a_zip_of_no_tensors_are_named(tmp_path):
    import pickle

    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps(make_student().state_dict()))
    with untouched(plain), pytest.raises(ValueError, match=r"is a plain Python pickle, not a PyTorch checkpoint"):
        load_weights(make_student(), plain, allow_pickle=True)
    notes = tmp_path / "notes.pt"
    torch.save({"epoch": 3, "note": "no weights here"}, notes)
    with untouched(notes), pytest.raises(ValueError) as err:
        load_weights(make_student(), notes, what="teacher_ckpt")
    assert str(err.value).startswith(
        f"teacher_ckpt {str(notes)!r} holds neither a Lightning checkpoint nor a state_dict of tensors; save the "
        "teacher with `torch.save(model.state_dict(), path)`"
    )
    other = tmp_path / "other.zip"  # a whole zip archive, not torch.save's
    shutil.make_archive(str(tmp_path / "other"), "zip", root_dir=tmp_path, base_dir="plain.pkl")
    with untouched(other), pytest.raises(ValueError, match=r"is a zip archive that torch\.save did not write"):
        load_weights(make_student(), other)


def test_a_checkpoint_that_needs_unpickling_keeps_asking_for_allow_pickle(tmp_path, ckpt):
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": torch.load(ckpt), "hyper_parameters": Opaque()}, path)
    with untouched(path), pytest.raises(ValueError) as err:
        Teacher(make_student(), ckpt=str(path))
    assert str(err.value) == (
        f"teacher_ckpt {str(path)!r}: not loaded: the file holds Python objects "
        "(tests.core.test_weights_files.Opaque), which could run code when loaded. If you trust it: "
        "Teacher(model=..., ckpt=path, allow_pickle=True); or re-save just the weights: "
        "torch.save(model.state_dict(), 'weights.pt')."
    )
    with untouched(path):
        teacher = Teacher(make_student(), ckpt=str(path), allow_pickle=True)  # asked for: it loads
    for k, v in torch.load(ckpt).items():
        assert torch.equal(teacher.model.state_dict()[k], v)


def test_non_finite_weights_are_refused_naming_the_tensors(tmp_path):
    net = make_student()
    with torch.no_grad():
        net.fc.weight[0, 0] = float("nan")
        net.fc.bias.fill_(float("inf"))
    path = tmp_path / "nan_teacher.pt"
    torch.save(net.state_dict(), path)
    with untouched(path), pytest.raises(ValueError) as err:
        load_weights(make_student(), path, what="teacher_ckpt")
    assert str(err.value).startswith(
        f"teacher_ckpt {str(path)!r} holds NaN or infinite weights in fc.weight, fc.bias (2 of 4 tensors)"
    )
    assert "Re-train or re-export it" in str(err.value)


# -- --ckpt_path: a run to resume or a model to evaluate (core/weights.py read_run_checkpoint) ------------------
def _run_folder(root: Path) -> Path:
    """A run's files: its published model and version_0/checkpoints/{best,last}.ckpt (Lightning-shaped dicts)."""
    (root / "version_0" / "checkpoints").mkdir(parents=True)
    ckpt = {"state_dict": {"w": torch.zeros(2)}, "epoch": 0, "global_step": 2}
    for name in ("model.ckpt", "version_0/checkpoints/best.ckpt", "version_0/checkpoints/last.ckpt"):
        torch.save(ckpt, root / name)
    return root


@pytest.mark.parametrize("fault", ["typo", "folder", "text", "cut", "state_dict", "no_folder"])
def test_a_checkpoint_to_resume_is_checked_before_lightning_reads_it(tmp_path, monkeypatch, fault):
    from lightning_kd.core.weights import read_run_checkpoint

    monkeypatch.chdir(tmp_path)
    run = _run_folder(Path("runs/kd"))
    last = "runs/kd/version_0/checkpoints/last.ckpt"
    path, error, match = {
        "typo": (
            "runs/kd/modle.ckpt",
            FileNotFoundError,
            r"does not exist\. Did you mean 'runs/kd/model\.ckpt'\? Pass one of the checkpoint files in runs/kd: "
            r"runs/kd/model\.ckpt, runs/kd/version_0/checkpoints/best\.ckpt",
        ),
        "folder": ("runs/kd", IsADirectoryError, r"is a directory, not a checkpoint file; pass one of"),
        "text": ("runs/kd/notes.ckpt", ValueError, r"is not a PyTorch checkpoint .*point at the file"),
        "cut": ("runs/kd/cut.ckpt", ValueError, rf"is not a readable .*resume from another checkpoint \(e\.g\. {last}"),
        "state_dict": ("runs/kd/w.pt", ValueError, r"holds bare weights \(a state_dict\).*start a new run"),
        "no_folder": ("runz/kd/model.ckpt", FileNotFoundError, r"does not exist\. Check the path: its folder 'runz"),
    }[fault]
    if fault == "text":
        Path(path).write_text("best epoch: 12\n")
    elif fault == "cut":
        data = (run / "model.ckpt").read_bytes()
        Path(path).write_bytes(data[: len(data) // 2])
    elif fault == "state_dict":
        torch.save(make_student().state_dict(), path)
    with untouched(run), pytest.raises(error, match=rf"^--ckpt_path {re.escape(repr(path))} {match}"):
        read_run_checkpoint(path)
    assert read_run_checkpoint(last)["global_step"] == 2


def test_a_pickled_ckpt_path_is_refused_in_one_line_unless_trusted(tmp_path, ckpt, monkeypatch, capsys):
    """--ckpt_path of a file holding Python objects (here argparse.Namespace, as old CLI checkpoints hold): one
    line naming the object and the way to load it anyway; the file untouched."""
    import argparse

    from lightning_kd.apps.cli import main

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": torch.load(ckpt), "hyper_parameters": argparse.Namespace(lr=1)}, path)
    recipe = [f"--config={REPO / 'configs/digits/base.yaml'}", f"--config={REPO / 'configs/digits/student.yaml'}"]
    with untouched(path), pytest.raises(SystemExit):
        main(["validate", *recipe, f"--ckpt_path={path}"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lightning-kd:")]
    assert err[0] == (
        f"lightning-kd: error: PickledCheckpointError: --ckpt_path {str(path)!r}: not loaded: the file holds Python "
        "objects (argparse.Namespace), which could run code when loaded. If you trust it, add --weights_only false."
    )

"""``lightning-kd report`` and ReportCallback on checkpoints of real (short) recipe runs, against figures worked out
here from the same weights; refusal to overwrite; missing optional extras."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from lightning_kd.apps import quickstart
from lightning_kd.apps.cli import build_cli
from lightning_kd.apps.report import main, report_from_checkpoints
from lightning_kd.data import DigitsDataModule
from lightning_kd.models import MLP, SmallCNN
from lightning_kd.modules.distillation import DistillationModule
from tests.helpers import REPO

RECIPE = [str(REPO / "configs" / "digits" / "base.yaml"), str(REPO / "configs" / "digits" / "kd.yaml")]
QUICK = ["--threads", "1", "--batch-sizes", "1", "8", "--max-time", "0.05"]
SHORT_FIT = {
    "trainer": {
        "max_epochs": 1,
        "limit_train_batches": 6,
        "limit_val_batches": 1,
        "log_every_n_steps": 1,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
}
REPORT_CALLBACK = {
    "trainer": {
        "callbacks": [
            {
                "class_path": "lightning_kd.callbacks.report.ReportCallback",
                "init_args": {"batch_sizes": [1, 8], "max_run_time": 0.05, "min_run_time": 0.01},
            }
        ]
    }
}
DIGIT_PARAMS = {"student": 64 * 32 + 32 + 32 * 10 + 10, "teacher": 94_186}  # MLP 64-32-10, SmallCNN 32/64/128


def _hide(monkeypatch: pytest.MonkeyPatch, package: str) -> None:
    """Make ``import package`` (and its submodules) fail, as when it is not installed."""
    for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, package, None)


def _fit(*configs: str) -> str:
    """Run ``lightning-kd fit`` with ``configs``; the run's ``trainer.log_dir``."""
    return build_cli(["fit", *(f"--config={c}" for c in configs)]).trainer.log_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """In a fresh folder: the digits teacher, then KD with a ReportCallback while onnxruntime is missing, then the
    student-alone baseline; each for a few steps, through the CLI, as the recipes' comments say."""
    root = tmp_path_factory.mktemp("runs")
    for name, config in (("short", SHORT_FIT), ("report_callback", REPORT_CALLBACK)):
        (root / f"{name}.yaml").write_text(yaml.safe_dump(config))
    base = RECIPE[0]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        _fit(base, str(REPO / "configs" / "digits" / "teacher.yaml"), "short.yaml")
        with pytest.MonkeyPatch.context() as hidden, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _hide(hidden, "onnxruntime")
            kd_log_dir = _fit(*RECIPE, "short.yaml", "report_callback.yaml")
        _fit(base, str(REPO / "configs" / "digits" / "student.yaml"), "short.yaml")
    return root, {"kd_log_dir": root / kd_log_dir, "warnings": [str(w.message) for w in caught]}


@pytest.fixture(scope="module")
def test_split() -> tuple[torch.Tensor, torch.Tensor]:
    dm = DigitsDataModule(batch_size=64, seed=0)  # the recipe's data
    dm.setup()
    return dm.splits["test"].images, dm.splits["test"].labels


def _weights(path: Path, prefix: str) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _predictions(model: torch.nn.Module, state: dict[str, torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    model.load_state_dict(state)
    with torch.no_grad():
        return model.eval()(images).argmax(1)


def _by_hand(
    root: Path, split, teacher_state=None, student_file="runs/digits/kd/model.ckpt", student_prefix="student."
):
    images, labels = split
    teacher_state = teacher_state or _weights(root / "runs/digits/teacher/model.ckpt", "model.")
    t = _predictions(SmallCNN(1, 10, widths=(32, 64, 128)), teacher_state, images)
    s = _predictions(MLP(64, 10, hidden=(32,)), _weights(root / student_file, student_prefix), images)
    return {
        "teacher": (t == labels).double().mean().item(),
        "student": (s == labels).double().mean().item(),
        "agreement": (t == s).double().mean().item(),
    }


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()
    }


def test_report_command_writes_everything_with_the_checkpoints_figures(runs, test_split, monkeypatch, capsys):
    root, _ = runs
    monkeypatch.chdir(root)
    # another teacher than the recipe's: the report must use --teacher-ckpt's weights
    teacher_state = _weights(root / "runs/digits/teacher/model.ckpt", "model.")
    generator = torch.Generator().manual_seed(1)
    other = {
        k: v + 0.1 * torch.randn(v.shape, generator=generator) if k.endswith(".0.weight") or k.startswith("fc.") else v
        for k, v in teacher_state.items()
    }
    assert other.keys() == teacher_state.keys() and any((other[k] != teacher_state[k]).any() for k in other)
    torch.save(other, root / "other_teacher.pt")
    main(
        [
            "--config",
            RECIPE[0],
            "--config",
            RECIPE[1],
            "--ckpt",
            "runs/digits/kd/model.ckpt",
            "--teacher-ckpt",
            "other_teacher.pt",
            *QUICK,
        ]
    )

    out = root / "runs/digits/kd/report"  # default: beside the checkpoint
    report = json.loads((out / "report.json").read_text())
    hand = _by_hand(root, test_split, other)
    assert hand != _by_hand(root, test_split)  # the other teacher predicts differently: the check can fail
    assert report["num_samples"] == len(test_split[1]) == 359
    assert report["student"]["top1"] == pytest.approx(hand["student"])
    assert report["teacher"]["top1"] == pytest.approx(hand["teacher"])
    assert report["agreement"]["top1"] == pytest.approx(hand["agreement"])
    assert report["student"]["params"] == DIGIT_PARAMS["student"] and report["teacher"]["params"] == 94_186
    assert report["ratios"]["params"] == pytest.approx(DIGIT_PARAMS["student"] / DIGIT_PARAMS["teacher"])
    assert report["student"]["file_bytes"] == (root / "runs/digits/kd/model.ckpt").stat().st_size
    assert report["teacher"]["file_bytes"] == (root / "other_teacher.pt").stat().st_size
    assert report["settings"]["threads"] == 1 and set(report["student"]["latency"]) == {"1", "8"}
    assert report["class_names"] == [str(i) for i in range(10)] and report["notes"] == []

    for name in ("confusion_matrices.png", "reliability.png", "per_class_accuracy.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    assert "1 torch thread(s)" in md and f"| {100 * hand['student']:.2f} % |" in md
    exports = report["exports"]
    assert exports["eager"]["top1"] == pytest.approx(hand["student"])
    for name in ("student.onnx", "student.fp16.onnx", "student.int8.onnx", "student.pt2"):
        assert (out / "export" / name).stat().st_size > 1_000
    deploy = json.loads((out / "export" / "deploy.json").read_text())
    assert deploy["class_names"] == [str(i) for i in range(10)]
    assert deploy["normalization"]["mean"] == [DigitsDataModule.mean]
    assert deploy["normalization"]["std"] == [DigitsDataModule.std]

    printed = capsys.readouterr().out
    assert "| top-1 agreement with teacher |" in printed and "| FLOPs / sample |" in printed
    assert "runs/digits/kd/report/report.md" in printed and "runs/digits/kd/report/export" in printed


def test_refuses_to_overwrite_unless_asked(runs, monkeypatch):
    root, _ = runs
    monkeypatch.chdir(root)
    args = ["--config", RECIPE[0], "--config", RECIPE[1], "--ckpt", "runs/digits/kd/model.ckpt", "--out", "again"]
    main([*args, "--no-export", *QUICK])
    before = _snapshot(root / "again")
    assert set(before) == {
        "report.md",
        "report.json",
        "confusion_matrices.png",
        "reliability.png",
        "per_class_accuracy.png",
    }
    with pytest.raises(SystemExit, match=r"report\.json already exists.*--overwrite"):
        main([*args, "--no-export", *QUICK])
    assert _snapshot(root / "again") == before  # byte-identical, not even rewritten

    main([*args, "--no-export", "--no-plots", "--overwrite", *QUICK[:2], "--batch-sizes", "2", "--max-time", "0.05"])
    assert json.loads((root / "again" / "report.json").read_text())["settings"]["batch_sizes"] == [2]
    assert (root / "again" / "reliability.png").read_bytes() == before["reliability.png"][0]  # not asked for: kept
    with pytest.raises(SystemExit):  # not a data setting: refused, not silently dropped
        main([*args, "--model.init_args.alpha=0.5", *QUICK])


def test_callback_writes_the_report_at_fit_end_and_warns_about_the_missing_extra(runs, test_split):
    root, fit = runs
    out = fit["kd_log_dir"] / "report"
    report = json.loads((out / "report.json").read_text())
    hand = _by_hand(root, test_split)
    assert report["student"]["top1"] == pytest.approx(hand["student"])  # the final weights, as published
    assert report["agreement"]["top1"] == pytest.approx(hand["agreement"])
    assert report["student"]["file_bytes"] == (root / "runs/digits/kd/model.ckpt").stat().st_size
    assert report["exports"] is None and not (out / "export").exists()
    assert (out / "per_class_accuracy.png").is_file()
    extra = 'pip install "lightning-kd[export]"'
    assert extra in (out / "report.md").read_text() and any(extra in report_note for report_note in report["notes"])
    assert any("ReportCallback" in m and extra in m for m in fit["warnings"])


def test_missing_extras_still_give_a_report_naming_them(runs, test_split, monkeypatch):
    root, _ = runs
    monkeypatch.chdir(root)
    for package in ("onnxruntime", "onnx", "matplotlib"):
        _hide(monkeypatch, package)
    # the student-alone baseline (a ClassificationModule checkpoint, model.*) against the recipe's teacher
    written = report_from_checkpoints(
        "runs/digits/student/model.ckpt", configs=RECIPE, batch_sizes=(1,), threads=1, max_run_time=0.05
    )
    out = root / "runs/digits/student/report"
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "report.md"]
    md = (out / "report.md").read_text()
    assert 'pip install "lightning-kd[export]"' in md and 'pip install "lightning-kd[plots]"' in md
    assert len(written["notes"]) == 2 and written["export_dir"] is None
    hand = _by_hand(root, test_split, student_file="runs/digits/student/model.ckpt", student_prefix="model.")
    assert json.loads((out / "report.json").read_text())["student"]["top1"] == pytest.approx(hand["student"])


def test_quickstart_report_replaces_its_own(tmp_path, test_split):
    torch.manual_seed(0)
    kd = DistillationModule(quickstart.make_teacher(), quickstart.make_student())
    files = {"teacher": tmp_path / "teacher.pt", "student": tmp_path / "student.pt"}
    torch.save(kd.teacher.model.state_dict(), files["teacher"])
    torch.save(kd.student.state_dict(), files["student"])
    # a new quickstart run replaces its checkpoints, so its report too
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "report.json").write_text("{}")
    written = quickstart.write_kd_report(kd, DigitsDataModule(batch_size=64), tmp_path / "report", *files.values())
    with torch.no_grad():
        images, labels = test_split
        expected = (kd.student.eval()(images).argmax(1) == labels).double().mean().item()
    assert json.loads((tmp_path / "report" / "report.json").read_text())["student"]["top1"] == pytest.approx(expected)
    assert (tmp_path / "report" / "export" / "student.onnx").is_file() and written["notes"] == []


def test_a_student_checkpoint_of_other_widths_is_blamed_on_the_student(runs, tmp_path, monkeypatch):
    """The recipe's student does not fit the --ckpt: the message names the student, not the teacher."""
    root, _ = runs
    monkeypatch.chdir(root)
    torch.save(MLP(64, 10, hidden=(16,)).state_dict(), tmp_path / "narrow.pt")
    args = ["--config", RECIPE[0], "--config", RECIPE[1], "--ckpt", str(tmp_path / "narrow.pt")]
    with pytest.raises(SystemExit) as err:
        main([*args, "--out", str(tmp_path / "r"), "--no-export", "--no-plots", *QUICK])
    message = str(err.value)
    assert (
        "does not match the recipe's student MLP: 3 with another shape (e.g. fc.weight: file (10, 16) vs model "
        "(10, 32)" in message
    )
    assert "Check that the recipe's student's class_path/init_args are the ones" in message
    assert "teacher" not in message

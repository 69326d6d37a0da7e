"""lightning_kd.report: metrics, cost and the teacher-vs-student report, against values worked out by hand."""

from __future__ import annotations

import ast
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning_kd.report
from lightning_kd.data import DigitsDataModule
from lightning_kd.models import MLP, SmallCNN
from lightning_kd.report import (
    MissingExtraError,
    accuracy,
    classification_summary,
    collect_logits,
    collect_pair,
    compare_models,
    confusion_matrix,
    count_parameters,
    expected_calibration_error,
    flops_per_sample,
    kl_teacher_student,
    measure_latency,
    per_class_accuracy,
    plot_confusion_matrices,
    reliability_bins,
    top1_agreement,
    write_report,
)

FAST = {"min_run_time": 0.01, "max_run_time": 0.2}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One torch thread: these tests run tiny ops, where a second thread on a busy machine mostly waits."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def log_probs(rows: list[list[float]]) -> torch.Tensor:
    """Logits whose softmax is exactly ``rows`` (each row sums to 1)."""
    return torch.tensor(rows, dtype=torch.float64).log().float()


# --------------------------------------------------------------------------------------------- cost


def test_flops_of_an_mlp_by_hand():
    # Linear(64, 32) -> ReLU -> Linear(32, 10) at batch 1: torch counts 2*M*N*K per matmul, ReLU/bias free
    expected = 2 * (64 * 32 + 32 * 10)
    assert expected == 4736
    model = MLP(64, 10, hidden=(32,))
    assert flops_per_sample(model, torch.randn(5, 1, 8, 8)) == expected  # per sample: batch 5 -> first sample


def test_flops_count_leaves_the_model_as_it_was():
    model = SmallCNN(1, 10, widths=(4, 8, 8)).train()
    stats = model.block1[1].running_mean.clone()
    flops_per_sample(model, torch.randn(2, 1, 8, 8) + 3)
    assert model.training and torch.equal(model.block1[1].running_mean, stats)  # counted in eval mode


def test_flops_of_a_conv_by_hand():
    # Conv2d(1 -> 4, 3x3, pad 1) on 8x8: 4*8*8 outputs, each 1*3*3 multiply-adds
    conv = nn.Conv2d(1, 4, 3, padding=1, bias=False)
    assert flops_per_sample(conv, torch.randn(2, 1, 8, 8)) == 2 * (4 * 8 * 8) * (1 * 3 * 3)


def test_count_parameters_by_hand():
    assert count_parameters(MLP(64, 10, hidden=(32,))) == (64 * 32 + 32) + (32 * 10 + 10)
    frozen = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    frozen[0].requires_grad_(False)
    assert count_parameters(frozen, trainable_only=True) == 3


def test_latency_record_and_threads_restored():
    threads_before = torch.get_num_threads()  # 1 (module fixture): timing with 2 must not leave 2 behind
    record = measure_latency(MLP(64, 10, hidden=(32,)), torch.randn(3, 1, 8, 8), 8, threads=2, **FAST)
    assert torch.get_num_threads() == threads_before
    assert record["batch_size"] == 8 and record["threads"] == 2
    assert record["median_ms"] > 0
    assert record["samples_per_s"] == pytest.approx(8 / (record["median_ms"] / 1e3))


# --------------------------------------------------------------------------------------------- metrics


def test_topk_accuracy_crafted():
    logits = torch.tensor(
        [
            [7.0, 6, 5, 4, 3, 2, 1],  # target 0: rank 1
            [7.0, 6, 5, 4, 3, 2, 1],  # target 4: rank 5
            [7.0, 6, 5, 4, 3, 2, 1],  # target 5: rank 6
        ]
    )
    targets = torch.tensor([0, 4, 5])
    assert accuracy(logits, targets, 1) == pytest.approx(1 / 3)
    assert accuracy(logits, targets, 5) == pytest.approx(2 / 3)
    assert accuracy(logits, targets, 6) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="top_k=8"):
        accuracy(logits, targets, 8)
    assert classification_summary(logits, targets)["top5"] == pytest.approx(2 / 3)
    assert classification_summary(logits[:, :5], torch.tensor([0, 4, 1]))["top5"] is None  # C = 5: no top-5


def test_confusion_and_per_class_by_hand():
    preds = torch.tensor([0, 1, 1, 1, 0, 2])
    targets = torch.tensor([0, 0, 1, 1, 2, 2])
    logits = nn.functional.one_hot(preds, 4).float()  # class 3 never appears
    assert confusion_matrix(logits, targets).tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    acc = per_class_accuracy(logits, targets)
    assert acc[:3].tolist() == [0.5, 1.0, 0.5] and math.isnan(acc[3])
    assert classification_summary(logits, targets)["per_class_accuracy"] == [0.5, 1.0, 0.5, None]


def test_agreement_and_kl_by_hand():
    teacher = [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.5, 0.3, 0.2]]  # argmax 0 1 2 0
    student = [[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3]]  # argmax 0 1 2 1
    assert top1_agreement(log_probs(student), log_probs(teacher)) == 0.75
    kl = sum(sum(p * math.log(p / q) for p, q in zip(pt, ps)) for pt, ps in zip(teacher, student)) / 4
    assert kl_teacher_student(log_probs(student), log_probs(teacher)) == pytest.approx(kl, rel=1e-5)
    # one sample: KL((1/2, 1/2) || (3/4, 1/4)) = 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3)
    assert kl_teacher_student(log_probs([[0.75, 0.25]]), log_probs([[0.5, 0.5]])) == pytest.approx(
        0.5 * math.log(4 / 3), rel=1e-5
    )
    # direction: KL(p_T || p_S), not KL(p_S || p_T)
    assert kl_teacher_student(log_probs([[0.5, 0.5]]), log_probs([[0.75, 0.25]])) != pytest.approx(
        0.5 * math.log(4 / 3), rel=1e-3
    )


def test_ece_and_reliability_by_hand():
    # confidences 0.9 (right), 0.9 (wrong), 0.62 (right), 0.68 (wrong), 0.96 (right); 15 bins of width 1/15:
    # bin 13 [0.867, 0.933): acc 1/2, conf 0.9  -> 2/5 * 0.40 = 0.160
    # bin  9 [0.600, 0.667): acc 1,   conf 0.62 -> 1/5 * 0.38 = 0.076
    # bin 10 [0.667, 0.733): acc 0,   conf 0.68 -> 1/5 * 0.68 = 0.136
    # bin 14 [0.933, 1.000]: acc 1,   conf 0.96 -> 1/5 * 0.04 = 0.008        ECE = 0.380
    # (10 bins would pool 0.62 and 0.68: ECE 0.160 + 2/5 * 0.15 + 0.008 = 0.228)
    logits = log_probs([[0.9, 0.1], [0.9, 0.1], [0.62, 0.38], [0.68, 0.32], [0.96, 0.04]])
    targets = torch.tensor([0, 1, 0, 1, 0])
    assert expected_calibration_error(logits, targets) == pytest.approx(0.38, abs=1e-6)
    rel = reliability_bins(logits, targets)
    assert rel["count"].tolist() == [0] * 9 + [1, 1, 0, 0, 2, 1]
    assert rel["accuracy"][[9, 10, 13, 14]].tolist() == [1.0, 0.0, 0.5, 1.0]
    assert rel["confidence"][[9, 10, 13, 14]].tolist() == pytest.approx([0.62, 0.68, 0.9, 0.96], abs=1e-6)
    assert torch.isnan(rel["accuracy"][0]) and len(rel["edges"]) == 16


def test_reliability_bins_reproduce_torchmetrics_ece():
    torch.manual_seed(0)
    logits, targets = torch.randn(500, 10) * 2, torch.randint(0, 10, (500,))
    rel = reliability_bins(logits, targets)
    full = rel["count"] > 0
    weights = rel["count"][full] / rel["count"].sum()
    ece = (weights * (rel["accuracy"][full] - rel["confidence"][full]).abs()).sum().item()
    assert ece == pytest.approx(expected_calibration_error(logits, targets), abs=1e-6)


class _Oracle(nn.Module):
    """Predicts the label written into the first input feature; has dropout so eval mode shows."""

    def __init__(self) -> None:
        super().__init__()
        self.drop = nn.Dropout(0.9)
        self.frozen = nn.BatchNorm1d(1).eval()

    def forward(self, x):
        return nn.functional.one_hot(x[:, 0].long(), 3).double() * 10 + self.drop(torch.ones(len(x), 3)).double()


def test_collect_logits_eval_fp32_flags_and_batch_forms():
    x = torch.zeros(10, 4)
    x[:, 0] = torch.arange(10) % 3
    y = (torch.arange(10) % 3).long()
    model = _Oracle().train()
    model.frozen.eval()
    loader = DataLoader(TensorDataset(x, y, torch.arange(10)), batch_size=4, shuffle=True)  # (x, y, index)
    logits, targets = collect_logits(model, loader)
    assert logits.dtype == torch.float32 and logits.shape == (10, 3)
    assert torch.equal(logits, nn.functional.one_hot(targets, 3).float() * 10 + 1)  # dropout off: eval mode
    assert model.training and model.drop.training and not model.frozen.training  # flags restored one by one
    logits2, targets2 = collect_logits(model, (x, y))  # a pair of tensors
    assert torch.equal(targets2, y) and accuracy(logits2, targets2) == 1.0
    logits3, none = collect_logits(model, x)  # inputs only
    assert none is None and torch.equal(logits3, logits2)
    # one pass for both models: a shuffled loader keeps student, teacher and targets aligned
    s, t, targets4 = collect_pair(model, _Oracle(), loader)
    assert accuracy(s, targets4) == 1.0 and accuracy(t, targets4) == 1.0


def test_collect_logits_rejects_non_logits():
    with pytest.raises(TypeError, match=r"\(N, C\) logits"):
        collect_logits(nn.Flatten(0), torch.randn(4, 3))


# --------------------------------------------------------------------------------------------- report


@pytest.fixture(scope="module")
def digits_test() -> tuple[torch.Tensor, torch.Tensor]:
    dm = DigitsDataModule(batch_size=128)
    dm.setup()
    split = dm.splits["test"]
    return split.images, split.labels


@pytest.fixture(scope="module")
def compared(digits_test, tmp_path_factory):
    torch.manual_seed(0)
    teacher, student = SmallCNN(1, 10, widths=(8, 16, 32)), MLP(64, 10, hidden=(32,))
    folder = tmp_path_factory.mktemp("ckpt")
    torch.save(teacher.state_dict(), folder / "teacher.ckpt")
    torch.save(student.state_dict(), folder / "student.ckpt")
    loader = DataLoader(TensorDataset(*digits_test), batch_size=100)
    result = compare_models(
        teacher,
        student,
        loader,
        class_names=[f"digit {i}" for i in range(10)],
        batch_sizes=(1, 16),
        threads=1,
        teacher_file=folder / "teacher.ckpt",
        student_file=folder / "student.ckpt",
        **FAST,
    )
    return teacher, student, result, folder


def test_compare_models_figures_and_ratios(compared, digits_test):
    teacher, student, r, folder = compared
    images, labels = digits_test
    with torch.no_grad():
        t_logits, s_logits = teacher.eval()(images), student.eval()(images)
    assert r["num_samples"] == len(labels) and r["num_classes"] == 10
    assert r["teacher"]["top1"] == pytest.approx((t_logits.argmax(1) == labels).double().mean().item())
    assert r["student"]["top1"] == pytest.approx((s_logits.argmax(1) == labels).double().mean().item())
    assert r["differences"]["top1"] == pytest.approx(r["student"]["top1"] - r["teacher"]["top1"])
    assert r["agreement"]["top1"] == pytest.approx((t_logits.argmax(1) == s_logits.argmax(1)).double().mean().item())
    assert r["student"]["params"] == 2410 and r["student"]["flops_per_sample"] == 4736
    assert r["ratios"]["params"] == pytest.approx(2410 / count_parameters(teacher))
    assert r["ratios"]["flops_per_sample"] == pytest.approx(4736 / r["teacher"]["flops_per_sample"])
    assert set(r["student"]["latency"]) == {"1", "16"} and r["settings"]["threads"] == 1
    ratio = r["student"]["latency"]["16"]["median_ms"] / r["teacher"]["latency"]["16"]["median_ms"]
    assert r["ratios"]["median_ms"]["16"] == pytest.approx(ratio)
    sizes = [(folder / f).stat().st_size for f in ("teacher.ckpt", "student.ckpt")]
    assert [r["teacher"]["file_bytes"], r["student"]["file_bytes"]] == sizes
    assert r["ratios"]["file_bytes"] == pytest.approx(sizes[1] / sizes[0])
    assert r["class_counts"] == torch.bincount(labels, minlength=10).tolist()
    assert sum(map(sum, r["student"]["confusion_matrix"])) == len(labels)


def test_write_report_files_and_no_overwrite(compared, tmp_path):
    result = compared[2]
    paths = write_report(result, tmp_path / "report")
    assert set(paths) == {"json", "markdown", "confusion", "reliability", "per_class"}
    for key in ("confusion", "reliability", "per_class"):
        assert paths[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(paths["json"].read_text())["student"]["flops_per_sample"] == 4736
    md = paths["markdown"].read_text()
    assert "| parameters |" in md and "| 2,410 |" in md and "FLOPs / sample" in md and "| digit 9 |" in md
    assert f"{100 * result['student']['top1']:.2f} %" in md
    before = paths["markdown"].read_text()
    with pytest.raises(FileExistsError, match=r"report\.json.*overwrite=True"):
        write_report(result, tmp_path / "report")
    assert paths["markdown"].read_text() == before
    assert write_report(result, tmp_path / "report", overwrite=True)["json"] == paths["json"]


def _hide(monkeypatch, package: str) -> None:
    """Make ``import package`` (and its submodules) fail, as when it is not installed."""
    for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, package, None)


def test_missing_matplotlib_names_the_extra(compared, tmp_path, monkeypatch):
    _hide(monkeypatch, "matplotlib")
    paths = write_report(compared[2], tmp_path / "report")
    assert set(paths) == {"json", "markdown"} and not list((tmp_path / "report").glob("*.png"))
    assert 'pip install "lightning-kd[plots]"' in paths["markdown"].read_text()
    with pytest.raises(MissingExtraError, match=r'pip install "lightning-kd\[plots\]"') as err:
        plot_confusion_matrices([[1]], [[1]], tmp_path / "cm.png")
    assert isinstance(err.value, ImportError)


def _module_level_imports(path: Path) -> set[str]:
    roots = set()
    for node in ast.parse(path.read_text()).body:  # module level only: imports inside functions are lazy
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots - {"__future__"} - set(sys.stdlib_module_names)


def test_optional_extras_are_imported_lazily():
    folder = Path(lightning_kd.report.__file__).parent
    for path in folder.glob("*.py"):
        assert not _module_level_imports(path) & {"matplotlib", "onnx", "onnxruntime", "onnxscript"}, path.name
    for name in ("metrics.py", "cost.py"):
        assert _module_level_imports(folder / name) <= {"torch", "numpy", "torchmetrics", "lightning_kd"}

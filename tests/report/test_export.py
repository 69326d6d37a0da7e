"""lightning_kd.report exports: ONNX (fp32/fp16/int8) and .pt2 match the eager student; deploy.json; refusals."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from lightning_kd.data import DigitsDataModule
from lightning_kd.models import SmallCNN
from lightning_kd.report import (
    ExportMismatchError,
    MissingExtraError,
    compare_models,
    export_onnx,
    export_student,
    verify_onnx,
    verify_pt2,
    write_report,
)

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

FAST = {"min_run_time": 0.01, "max_run_time": 0.2}
NAMES = [f"digit {i}" for i in range(10)]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One torch thread: these tests run tiny ops, where a second thread on a busy machine mostly waits."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits() -> DigitsDataModule:
    dm = DigitsDataModule(batch_size=128)
    dm.setup()
    return dm


@pytest.fixture(scope="module")
def student(digits) -> nn.Module:
    """A SmallCNN (conv + batch-norm + pooling) trained for a few full-batch steps: accuracies mean something."""
    torch.manual_seed(0)
    model = SmallCNN(1, 10, widths=(8, 16, 32))
    x, y = digits.splits["train"].images, digits.splits["train"].labels
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(40):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def exported(digits, student, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    result = export_student(
        student, digits.test_dataloader(), out, mean=digits.mean, std=digits.std, class_names=NAMES, threads=1, **FAST
    )
    return out, result


def eager(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(x).numpy()


def test_onnx_matches_student_at_two_batch_sizes(digits, student, exported):
    out, result = exported
    assert result["onnx"]["exporter"] == "dynamo" and result["onnx"]["fallback_reason"] is None
    session = ort.InferenceSession(str(out / "student.onnx"), providers=["CPUExecutionProvider"])
    images = digits.splits["test"].images
    for batch in (images[:1], images[:37]):  # two batch sizes: the batch dimension is dynamic
        got = session.run(None, {"input": batch.numpy()})[0]
        assert got.shape == (len(batch), 10)
        np.testing.assert_allclose(got, eager(student, batch), rtol=0, atol=1e-4)
    batch_dim = onnx.load(out / "student.onnx").graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param == "batch" and not batch_dim.HasField("dim_value")
    assert result["onnx"]["max_abs_diff"] <= 1e-4 and set(result["onnx"]["max_abs_diff_per_batch"]) == {"1", "16"}


def test_pt2_round_trip(digits, student, exported):
    out, result = exported
    loaded = torch.export.load(out / "student.pt2").module()
    images = digits.splits["test"].images
    for batch in (images[:1], images[:23]):
        np.testing.assert_allclose(loaded(batch).detach().numpy(), eager(student, batch), rtol=0, atol=1e-5)
    assert result["pt2"]["max_abs_diff"] <= 1e-4


def test_variants_accuracy_and_latency(digits, student, exported):
    out, result = exported
    images, labels = digits.splits["test"].images, digits.splits["test"].labels
    eager_top1 = (torch.from_numpy(eager(student, images)).argmax(1) == labels).double().mean().item()
    assert result["eager"]["top1"] == pytest.approx(eager_top1) and eager_top1 > 0.5  # trained: far above chance
    assert result["onnx"]["top1"] == pytest.approx(eager_top1)
    for key, file in (("onnx_fp16", "student.fp16.onnx"), ("onnx_int8", "student.int8.onnx")):
        session = ort.InferenceSession(str(out / file), providers=["CPUExecutionProvider"])
        assert session.get_inputs()[0].type == "tensor(float)"  # fp32 at the interface
        # batch by batch like the loader: int8 activations are quantised with a range per call (per batch)
        logits = np.concatenate([session.run(None, {"input": x.numpy()})[0] for x, _ in digits.test_dataloader()])
        top1 = (logits.argmax(1) == labels.numpy()).mean()
        assert result[key]["top1"] == pytest.approx(top1)  # the reported figure is the file's own
        assert set(result[key]["latency"]) == {"1", "64"} and result[key]["latency"]["64"]["median_ms"] > 0
        assert result[key]["bytes"] == os.path.getsize(out / file) < result["onnx"]["bytes"]
    assert abs(result["onnx_fp16"]["top1"] - eager_top1) <= 0.01  # fp16 close to fp32
    assert result["onnx_fp16"]["max_abs_diff"] < 1e-2
    assert abs(result["onnx_int8"]["top1"] - eager_top1) <= 0.05


def test_deploy_json(digits, exported):
    out, result = exported
    deploy = json.loads((out / "deploy.json").read_text())
    assert deploy["input"] == {
        "name": "input",
        "shape": ["batch", 1, 8, 8],
        "dynamic_axes": {"0": "batch"},
        "dtype": "float32",
    }
    assert deploy["normalization"]["mean"] == [digits.mean] and deploy["normalization"]["std"] == [digits.std]
    assert deploy["class_names"] == NAMES and deploy["output"]["shape"] == ["batch", 10]
    assert "logits" in deploy["output"]["meaning"] and deploy["exporter"] == "dynamo"
    model = onnx.load(out / "student.onnx")
    assert deploy["opset"] == next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    assert set(deploy["files"]) == {"onnx", "pt2", "onnx_fp16", "onnx_int8"}
    for entry in deploy["files"].values():
        data = (out / entry["file"]).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["bytes"] == len(data)


def test_onnx_runs_without_torch(digits, student, exported, tmp_path):
    out, _ = exported
    images = digits.splits["test"].images[:9].numpy()
    np.save(tmp_path / "x.npy", images)
    script = textwrap.dedent(
        f"""
        import json, sys
        import numpy as np
        import onnxruntime as ort
        deploy = json.load(open({str(out / "deploy.json")!r}))
        session = ort.InferenceSession({str(out)!r} + "/" + deploy["files"]["onnx"]["file"],
                                       providers=["CPUExecutionProvider"])
        logits = session.run(None, {{deploy["input"]["name"]: np.load({str(tmp_path / "x.npy")!r})}})[0]
        np.save({str(tmp_path / "y.npy")!r}, logits)
        assert "torch" not in sys.modules and "lightning_kd" not in sys.modules, "torch was imported"
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), eager(student, torch.from_numpy(images)), atol=1e-4)


def test_refuses_to_overwrite(digits, student, exported):
    out, _ = exported
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(FileExistsError, match=r"student\.onnx.*overwrite=True"):
        export_student(student, digits.test_dataloader(), out, threads=1, **FAST)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_onnx(student, digits.splits["test"].images[:4], out / "student.onnx")


def test_overwrite_when_asked(digits, student, tmp_path):
    x = digits.splits["test"].images[:4]
    (tmp_path / "m.onnx").write_bytes(b"old")
    export_onnx(student, x, tmp_path / "m.onnx", overwrite=True)
    assert verify_onnx(tmp_path / "m.onnx", student, x)["max_abs_diff"] <= 1e-4


def test_mismatch_names_file_difference_and_tolerance(digits, student, exported):
    out, _ = exported
    other = SmallCNN(1, 10, widths=(8, 16, 32)).eval()  # different weights: outputs must not match
    x = digits.splits["test"].images[:8]
    with pytest.raises(ExportMismatchError, match=r"student\.onnx.*max \|diff\| = .* > atol=0\.0001"):
        verify_onnx(out / "student.onnx", other, x)
    with pytest.raises(ExportMismatchError, match=r"student\.pt2.*atol=0\.0001"):
        verify_pt2(out / "student.pt2", other, x)


def test_dynamo_failure_falls_back_to_torchscript(digits, student, tmp_path, monkeypatch):
    real_export = torch.onnx.export

    def failing_dynamo(*args, dynamo, **kwargs):
        if dynamo:
            raise RuntimeError("simulated dynamo failure")
        return real_export(*args, dynamo=dynamo, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", failing_dynamo)
    x = digits.splits["test"].images[:4]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        info = export_onnx(student, x, tmp_path / "ts.onnx")
    assert info["exporter"] == "torchscript" and "simulated dynamo failure" in info["fallback_reason"]
    assert any("simulated dynamo failure" in str(w.message) for w in caught)
    assert verify_onnx(tmp_path / "ts.onnx", student, x, batch_sizes=(1, 5))["max_abs_diff"] <= 1e-4


def test_missing_onnxruntime_names_the_extra(digits, student, tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "onnxruntime" or m.startswith("onnxruntime.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingExtraError, match=r'pip install "lightning-kd\[export\]"') as err:
        export_student(student, digits.test_dataloader(), tmp_path / "out", threads=1)
    assert isinstance(err.value, ImportError) and not (tmp_path / "out").exists()  # nothing written


def test_report_includes_exports(digits, student, exported, tmp_path):
    _, result = exported
    report = compare_models(
        student, student, digits.test_dataloader(), batch_sizes=(1,), threads=1, exports=result, **FAST
    )
    assert report["agreement"]["top1"] == 1.0 and report["agreement"]["kl_teacher_student"] == pytest.approx(
        0, abs=1e-9
    )
    paths = write_report(report, tmp_path, plots=False)
    md = paths["markdown"].read_text()
    assert "## Exported student" in md and "exporter dynamo" in md
    for file in ("student.onnx", "student.fp16.onnx", "student.int8.onnx", "student.pt2"):
        assert f"| {file} |" in md
    assert "Figures not drawn" in md and set(paths) == {"json", "markdown"}
    assert json.loads(paths["json"].read_text())["exports"]["onnx_int8"]["sha256"] == result["onnx_int8"]["sha256"]

"""The Hinton et al. (2015) notebooks: committed without outputs, and each one, run with tiny parameters, writes a
valid figure and results that say what the notebook claims (checked here independently where the numbers allow)."""

from __future__ import annotations

import ast
import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tests.helpers import REPO

NOTEBOOKS = REPO / "notebooks"
NAMES = ["hinton_temperature", "hinton_few_data", "hinton_omitted_class", "hinton_label_smoothing"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def parameters_cell(nb) -> tuple[int, dict]:
    """Index of the one cell tagged ``parameters`` and the values it assigns."""
    tagged = [i for i, cell in enumerate(nb.cells) if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, f"expected one cell tagged 'parameters', found {len(tagged)}"
    values = {}
    for node in ast.parse(nb.cells[tagged[0]].source).body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1, "the parameters cell only assigns values"
        values[node.targets[0].id] = ast.literal_eval(node.value)
    return tagged[0], values


def run_notebook(name: str, tmp_path: Path, **params) -> tuple[dict, Path, str]:
    """Execute notebook ``name`` with ``params`` injected after its parameters cell (as papermill does), in the
    notebooks folder; return its results.json, the path of its figure and its printed output."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    at, defaults = parameters_cell(nb)
    figure = tmp_path / "figures" / f"{name}.png"
    params = {"OUT_DIR": str(tmp_path / "out"), "FIGURE": str(figure), **params}
    unknown = set(params) - set(defaults)
    assert not unknown, f"{name} has no parameters {sorted(unknown)}: the test would not change what it thinks"
    cell = nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in params.items()))
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(at + 1, cell)
    nbclient.NotebookClient(
        nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    return json.loads((tmp_path / "out" / "results.json").read_text()), figure, printed


def assert_png(path: Path) -> None:
    image = pytest.importorskip("matplotlib.image")
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    pixels = image.imread(path)  # decodes the whole file: a truncated PNG fails here
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 300
    assert pixels.std() > 0.01, "a blank figure"


def assert_accuracy(value) -> None:
    assert isinstance(value, float) and 0.0 <= value <= 1.0, value


def assert_summary(summary: dict, n_seeds: int) -> None:
    assert len(summary["per_seed"]) == n_seeds
    for value in summary["per_seed"]:
        assert_accuracy(value)
    assert summary["mean"] == pytest.approx(sum(summary["per_seed"]) / n_seeds)
    assert summary["std"] >= 0.0


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebooks_are_clean(name):
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "commit notebooks without outputs"
    assert nb.cells[0].cell_type == "markdown" and "1503.02531" in nb.cells[0].source
    at, params = parameters_cell(nb)
    assert at == 1, "the parameters cell follows the introduction"
    assert params["SEEDS"] == [0, 1, 2]
    assert params["OUT_DIR"] == f"runs/notebooks/{name}"
    assert params["FIGURE"] == f"docs/figures/{name}.png"


def test_temperature_notebook(tmp_path):
    temps, alphas = [1, 8], [0.5, 0.9]
    r, figure, printed = run_notebook(
        "hinton_temperature",
        tmp_path,
        SEEDS=[0],
        TEACHER_EPOCHS=2,
        EPOCHS=1,
        TEMPERATURES=temps,
        ALPHAS=alphas,
        SOFTMAX_TEMPERATURES=[1, 2, 4, 16],
    )
    assert_png(figure)
    assert "| student + KD |" in printed and "| student alone (MLP 64-32-10) |" in printed
    assert_accuracy(r["teacher_acc"])
    assert r["teacher_acc"] > 0.3, "two epochs of the SmallCNN teacher should beat chance (0.1) easily"
    assert_summary(r["student_alone"], 1)
    assert sorted((e["temperature"], e["alpha"]) for e in r["kd"]) == [(t, a) for t in temps for a in alphas]
    for entry in r["kd"]:
        assert_summary(entry, 1)

    # (a): the saved probabilities are softmax(logits / T), and soften (entropy rises) as T rises
    soft = r["softmax"]
    logits, probs = torch.tensor(soft["logits"]), torch.tensor(soft["probs"])
    assert soft["temperatures"] == [1, 2, 4, 16] and probs.shape == (4, 10)
    expected = torch.stack([torch.softmax(logits / t, -1) for t in soft["temperatures"]])
    torch.testing.assert_close(probs, expected, atol=1e-6, rtol=1e-5)
    entropy = -(probs * probs.clamp_min(1e-30).log()).sum(-1)
    assert torch.all(entropy[1:] > entropy[:-1]), f"entropy must rise with T: {entropy.tolist()}"
    torch.testing.assert_close(entropy, torch.tensor(soft["entropy"]), atol=1e-5, rtol=1e-5)
    assert 0 <= soft["label"] < 10


def test_few_data_notebook(tmp_path):
    fraction, epochs = 0.05, 3
    r, figure, printed = run_notebook(
        "hinton_few_data", tmp_path, SEEDS=[0], FRACTION=fraction, TEACHER_EPOCHS=1, EPOCHS=epochs
    )
    assert_png(figure)
    assert "| mean ± std | student alone |" in printed
    assert r["fraction"] == fraction and r["full_train_size"] == 1258
    for arm in ("alone", "kd"):
        for key in ("final_test_acc", "peak_test_acc", "final_train_acc"):
            assert_summary(r[key][arm], 1)
        assert r["peak_test_acc"][arm]["mean"] >= r["final_test_acc"][arm]["mean"]
        (run,) = r["runs"][arm]
        subset = run["subset"]
        # the student saw about 5 % of the training split, at least one image per class, no image twice
        assert len(subset) == run["train_size"] == len(set(subset))
        assert abs(len(subset) - fraction * 1258) <= 10 and all(0 <= i < 1258 for i in subset)
        curves = run["curves"]
        for split in ("train", "test"):
            assert len(curves[split]["acc"]) == len(curves[split]["loss"]) == epochs
            for value in curves[split]["acc"]:
                assert_accuracy(value)
        assert curves["test"]["acc"][-1] == r["final_test_acc"][arm]["per_seed"][0]
    # both students of a seed learn from the very same few images
    assert r["runs"]["alone"][0]["subset"] == r["runs"]["kd"][0]["subset"]


def margins_bias(val_logits: torch.Tensor, cls: int, share: float) -> float:
    """The share-matching rule written out again, without the notebooks' helper."""
    others = torch.cat([val_logits[:, :cls], val_logits[:, cls + 1 :]], 1).max(1).values
    margins = sorted((others - val_logits[:, cls]).tolist())
    n = round(share * len(margins))
    return (margins[n - 1] + margins[n]) / 2


def test_omitted_class_notebook(tmp_path):
    cls = 3
    r, figure, printed = run_notebook(
        "hinton_omitted_class", tmp_path, SEEDS=[0], OMITTED_CLASS=cls, TEACHER_EPOCHS=2, EPOCHS=2
    )
    assert_png(figure)
    assert f"class {cls} acc before" in printed
    assert r["omitted_class"] == cls and r["bias_chosen_on"] == "val"
    counts = r["transfer_class_counts"]
    assert counts[cls] == 0 and all(n > 0 for c, n in enumerate(counts) if c != cls), counts
    saved = torch.load(tmp_path / "out" / "logits.pt", weights_only=True)
    val_labels, test_labels = saved["val_labels"], saved["test_labels"]
    share = float((val_labels == cls).float().mean())
    assert r["val_target_share"] == pytest.approx(share)
    for arm in ("kd", "alone"):
        (run,) = r["runs"][arm]
        for key in ("class_acc_before", "class_acc_after", "test_acc_before", "test_acc_after"):
            assert_accuracy(run[key])
        assert math.isfinite(run["bias"])
        assert len(run["per_class_before"]) == len(run["per_class_after"]) == 10
        assert run["per_class_after"][cls] == run["class_acc_after"]
        # the bias is the one the validation logits give — recomputed here — and the test numbers follow from it
        logits = saved[f"{arm}_seed0"]
        assert run["bias"] == pytest.approx(margins_bias(logits["val"], cls, share), abs=1e-4)
        val_after = logits["val"].clone()
        val_after[:, cls] += run["bias"]
        assert run["val_share_after"] == pytest.approx(float((val_after.argmax(1) == cls).float().mean()), abs=1e-6)
        assert run["val_share_after"] == pytest.approx(share, abs=1.5 / len(val_labels))
        test_after = logits["test"].clone()
        test_after[:, cls] += run["bias"]
        of_cls = test_labels == cls
        assert run["class_acc_before"] == pytest.approx(float((logits["test"][of_cls].argmax(1) == cls).float().mean()))
        assert run["class_acc_after"] == pytest.approx(float((test_after[of_cls].argmax(1) == cls).float().mean()))
        assert run["test_acc_after"] == pytest.approx(float((test_after.argmax(1) == test_labels).float().mean()))
        assert r["summary"][arm]["class_acc_after"]["per_seed"] == [run["class_acc_after"]]


def test_share_matching_bias_predicts_the_share():
    spec = importlib.util.spec_from_file_location("hinton_common", NOTEBOOKS / "hinton_common.py")
    hc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hc)

    torch.manual_seed(0)
    logits = torch.randn(200, 10)
    logits[:, 3] -= 5.0  # a class the model under-predicts, like one missing from the training data
    for share in (0.1, 0.25, 0.5):
        bias = hc.share_matching_bias(logits, 3, share)
        shifted = logits.clone()
        shifted[:, 3] += bias
        assert hc.predicted_share(shifted, 3) == pytest.approx(share)
        assert bias == pytest.approx(margins_bias(logits, 3, share))
        assert bias > 0
    # an over-predicted class gets a negative bias; the ends of the range are reached too
    logits[:, 3] += 10.0
    assert hc.share_matching_bias(logits, 3, 0.1) < 0
    for share in (0.0, 1.0):
        shifted = logits.clone()
        shifted[:, 3] += hc.share_matching_bias(logits, 3, share)
        assert hc.predicted_share(shifted, 3) == share
    with pytest.raises(ValueError, match="share"):
        hc.share_matching_bias(logits, 3, 1.5)


def test_label_smoothing_notebook(tmp_path):
    eps = 0.1
    r, figure, printed = run_notebook(
        "hinton_label_smoothing", tmp_path, SEEDS=[0], TEACHER_EPOCHS=2, EPOCHS=2, EPSILON=eps
    )
    assert_png(figure)
    assert "student + label smoothing" in printed
    assert set(r["accuracy"]) == {"student_alone", "label_smoothing", "kd"}
    for summary in r["accuracy"].values():
        assert_summary(summary, 1)
    assert_accuracy(r["teacher_acc"])

    # label smoothing's targets are the ones the training uses: F.cross_entropy(label_smoothing=eps) is the
    # cross-entropy against them
    ls = r["targets"]["label_smoothing"]
    true_p, wrong_p = ls["true_class_prob"]["mean"], ls["wrong_class_prob"]["mean"]
    assert true_p == pytest.approx(1 - eps + eps / 10) and wrong_p == pytest.approx(eps / 10)
    assert ls["wrong_class_prob"]["min"] == pytest.approx(ls["wrong_class_prob"]["max"]), "uniform on wrong classes"
    assert ls["wrong_mass"]["mean"] == pytest.approx(eps * 9 / 10)
    assert ls["top_wrong_share"]["mean"] == pytest.approx(1 / 9)
    assert ls["wrong_entropy_ratio"]["mean"] == pytest.approx(1)
    z, y = torch.randn(16, 10), torch.randint(0, 10, (16,))
    q = torch.full((16, 10), wrong_p)
    q[torch.arange(16), y] = true_p
    assert F.cross_entropy(z, y, label_smoothing=eps).item() == pytest.approx(
        -(q * z.log_softmax(-1)).sum(-1).mean().item(), rel=1e-5
    )

    # the teacher's soft targets: probabilities, and not uniform over the wrong classes
    teacher = r["targets"]["teacher"]
    for key in ("true_class_prob", "wrong_mass", "wrong_class_prob", "top_wrong_share"):
        s = teacher[key]
        assert 0.0 <= s["min"] <= s["p10"] <= s["median"] <= s["p90"] <= s["max"] <= 1.0, (key, s)
    assert teacher["true_class_prob"]["mean"] + teacher["wrong_mass"]["mean"] == pytest.approx(1.0, abs=1e-5)
    assert teacher["top_wrong_share"]["mean"] > 1 / 9 and teacher["wrong_entropy_ratio"]["mean"] < 1.0
    for kind in ("teacher", "label_smoothing"):
        assert sum(r["histograms"][kind]["wrong_mass_counts"]) == r["train_size"] == 1258

"""benchmarks/kd_speed.py in smoke mode, resident data modules, and DistillationModule(compile=True)."""

from __future__ import annotations

import importlib
import json
import math
import statistics
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lightning_kd import DistillationModule, FeatureTerm
from lightning_kd.data import DigitsDataModule
from lightning_kd.losses import ATLoss
from lightning_kd.models import MLP, SmallCNN
from tests.helpers import FMNIST_DIR, REPO, make_student

FM_CASES = {"hand_loop", "default_fit", "fast_fit"}
IN_CASES = {
    "student_step",
    "teacher_inference",
    "online_kd_lightning",
    "online_kd_plain",
    "cached_kd_lightning",
    "cached_kd_plain",
}
KEYS = {
    "meta": {"timestamp", "smoke", "cpu_medium", "device", "threads", "torch", "lightning", "lightning_kd", "python"}
    | {"git_commit"}
    | {"precision", "outputs"},
    "fashion_mnist": {"config", "s_per_epoch", "samples_s_per_epoch", "ratios", "targets", "meets_target"}
    | {"host_syncs_per_step"},
    "imagenet_shape": {"config", "ms_per_step", "samples_ms_per_step", "peak_bytes", "teacher_weights_bytes"}
    | {"teacher_activation_bytes", "kd_memory_bound_bytes", "ratios", "targets", "meets_target"},
}
TARGETS = {  # the targets
    "default_fit_vs_hand_loop": 1.05,
    "fast_fit_vs_hand_loop": 0.8,
    "online_kd_vs_student_plus_teacher": 1.02,
    "cached_kd_vs_student": 1.02,
    "kd_peak_vs_bound": 1.0,
}


def _positive_finite(x) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    fmnist_dir = Path(FMNIST_DIR)
    if not (fmnist_dir / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST files not found in {fmnist_dir}")
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        kd_speed = importlib.import_module("kd_speed")
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    out = tmp_path_factory.mktemp("bench") / "smoke"
    result = kd_speed.main(["--smoke", "--out", str(out), "--data-dir", str(fmnist_dir)])
    return result, out


@pytest.mark.slow
def test_smoke_json_has_every_key_and_positive_timings(smoke):
    result, out = smoke
    on_disk = json.loads(out.with_name("smoke.json").read_text())
    assert on_disk == json.loads(json.dumps(result))
    for section, keys in KEYS.items():
        assert keys <= set(on_disk[section]), (section, keys - set(on_disk[section]))
    fm, im = on_disk["fashion_mnist"], on_disk["imagenet_shape"]
    assert on_disk["meta"]["smoke"] is True and fm["config"]["steps_per_epoch"] == 10
    assert set(fm["s_per_epoch"]) == FM_CASES and set(im["ms_per_step"]) == IN_CASES
    for timings, samples in (
        (fm["s_per_epoch"], fm["samples_s_per_epoch"]),
        (im["ms_per_step"], im["samples_ms_per_step"]),
    ):
        for case, value in timings.items():
            assert _positive_finite(value), (case, value)
            assert all(_positive_finite(s) for s in samples[case]) and len(samples[case]) == 2  # 2 repeats
            assert value == pytest.approx(statistics.median(samples[case]))
    # no CUDA: no memory or sync figures, but the teacher's weight bytes are known (resnet18: 11.7 M params)
    assert all(v is None for v in im["peak_bytes"].values()) and im["kd_memory_bound_bytes"] is None
    assert all(v is None for v in fm["host_syncs_per_step"].values())
    assert im["teacher_weights_bytes"] > 4 * 11_000_000


@pytest.mark.slow
def test_smoke_ratios_are_computed_from_the_timings(smoke):
    result, _ = smoke
    fm, im = result["fashion_mnist"], result["imagenet_shape"]
    s, ms = fm["s_per_epoch"], im["ms_per_step"]
    online = ms["student_step"] + ms["teacher_inference"]
    expected = {
        "default_fit_vs_hand_loop": s["default_fit"] / s["hand_loop"],
        "fast_fit_vs_hand_loop": s["fast_fit"] / s["hand_loop"],
        "online_kd_vs_student_plus_teacher": ms["online_kd_lightning"] / online,
        "online_kd_plain_vs_student_plus_teacher": ms["online_kd_plain"] / online,
        "cached_kd_vs_student": ms["cached_kd_lightning"] / ms["student_step"],
        "cached_kd_plain_vs_student": ms["cached_kd_plain"] / ms["student_step"],
    }
    ratios = {**fm["ratios"], **im["ratios"]}
    for key, value in expected.items():
        assert ratios[key] == pytest.approx(value), key
    assert ratios["kd_peak_vs_bound"] is None  # CPU: no peak memory
    assert {**fm["targets"], **im["targets"]} == TARGETS
    meets = {**fm["meets_target"], **im["meets_target"]}
    for key, target in TARGETS.items():
        assert meets[key] == (None if ratios[key] is None else ratios[key] <= target)


@pytest.mark.slow
def test_smoke_markdown_table_is_written_and_labelled(smoke):
    _, out = smoke
    md = out.with_name("smoke.md").read_text()
    assert "CPU smoke run" in md and "not** the GPU figures" in md
    assert "| run | s / epoch | × hand loop | target | met | host syncs / step |" in md
    for label in ("hand loop", "default `fit`", "fast path", *IN_CASES, "online_kd_vs_student_plus_teacher"):
        assert label in md


def test_resident_data_follows_the_trainers_root_device():
    dm = DigitsDataModule(batch_size=8, resident=True)
    dm.setup()
    assert dm.splits["train"].images.device.type == "cpu"  # no trainer: stays on the host
    # a stand-in trainer whose strategy's root device is "meta": setup moves every split there and the
    # loader's batches are gathered there
    dm.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("meta")))
    dm.setup("fit")
    assert {t.device.type for s in dm.splits.values() for t in (s.images, s.labels)} == {"meta"}
    x, y = next(iter(dm.train_dataloader()))
    assert x.device.type == "meta" and x.shape == (8, 1, 8, 8) and y.shape == (8,)
    with pytest.raises(ValueError, match="num_workers=0"):
        DigitsDataModule(resident=True, num_workers=2)


def test_resident_batches_equal_host_batches_and_fit_runs(trainer_factory):
    trainer = trainer_factory(max_steps=2)
    plain, resident = DigitsDataModule(batch_size=64), DigitsDataModule(batch_size=64, resident=True)
    for dm in (plain, resident):
        dm.trainer = trainer
        dm.setup("fit")
    assert resident.splits["train"].images.device == trainer.strategy.root_device
    torch.manual_seed(0)
    host = list(plain.train_dataloader())
    torch.manual_seed(0)
    on_device = list(resident.train_dataloader())
    assert len(host) == len(on_device) == 1258 // 64
    for (xa, ya), (xb, yb) in zip(host, on_device):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # a fit through it, feature term included (its dry run in setup takes a batch from the resident data)
    term = FeatureTerm("at", ATLoss(), ["block3"], ["block3"], weight=10.0)
    model = DistillationModule(SmallCNN(1, 10, (8, 16, 32)), SmallCNN(1, 10, (4, 8, 16)), feature_terms=[term])
    trainer_factory(max_steps=2).fit(model, DigitsDataModule(batch_size=64, resident=True))


def test_configure_model_registers_feature_hooks_then_compiles_in_place_once(monkeypatch):
    term = FeatureTerm("at", ATLoss(), ["block3"], ["block3"], weight=10.0)
    model = DistillationModule(
        SmallCNN(1, 10, (8, 16, 32)), SmallCNN(1, 10, (4, 8, 16)), feature_terms=[term], compile=True
    )
    hooks_active_at_compile = []

    def fake_compile(fn, *args, **kwargs):
        hooks_active_at_compile.append(model.feature_terms.attached)
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    model.configure_model()
    model.configure_model()  # Lightning calls the hook again on validate/test: no second compile
    assert hooks_active_at_compile == [True, True]  # student, teacher
    assert model.student._compiled_call_impl is not None and model.teacher.model._compiled_call_impl is not None
    assert not any("_orig_mod" in key for key in model.state_dict())
    plain = DistillationModule(MLP(64, 10, (16,)), make_student())
    plain.configure_model()
    assert plain.student._compiled_call_impl is None  # compile=False: untouched


def _compile_backend_errors() -> tuple[type[BaseException], ...]:
    import torch._dynamo.exc as dynamo_exc
    import torch._inductor.exc as inductor_exc

    names = [(dynamo_exc, "BackendCompilerFailed"), (inductor_exc, "InductorError"), (inductor_exc, "CppCompileError")]
    return tuple(getattr(mod, name) for mod, name in names if hasattr(mod, name))


@pytest.mark.slow
def test_compile_true_runs_a_fast_dev_run_step(digits, trainer_factory):
    model = DistillationModule(MLP(64, 10, (32,)), make_student(), compile=True)
    trainer = trainer_factory(fast_dev_run=True)
    try:
        trainer.fit(model, digits)
    except _compile_backend_errors() as err:
        pytest.skip(f"torch.compile's inductor backend does not work on this machine: {type(err).__name__}: {err}")
    assert trainer.global_step == 1
    assert model.student._compiled_call_impl is not None and model.teacher.model._compiled_call_impl is not None
    assert all(torch.isfinite(p).all() for p in model.student.parameters())


def test_step_overhead_benchmark_reports_every_case_and_ratio(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import step_overhead

    result = step_overhead.main(["--steps", "40", "--repeats", "1", "--json", str(tmp_path / "o.json")])
    cases = {"hand_loop", "minimal_bare", "minimal_logged", "kd_bare", "kd_logged", "kd_recipe"}
    assert set(result["ms_per_step"]) == cases
    assert all(v > 0 for v in result["ms_per_step"].values())
    assert set(result["ratios"]) == {
        "kd_bare_vs_minimal_bare",
        "kd_logged_vs_minimal_logged",
        "kd_recipe_vs_minimal_logged",
    }
    assert (tmp_path / "o.json").is_file()


def test_lm_offline_step_benchmark_times_both_paths_on_the_same_batches(tmp_path):
    pytest.importorskip("transformers")
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        bench = importlib.import_module("lm_offline_step")
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    out = tmp_path / "r.json"
    bench.main(["--vocab", "64", "--batch", "2", "--seq-len", "8", "--sequences", "4", "--steps", "1", "--repeats", "1",
                "--k", "8", "--json", str(out)])  # fmt: skip
    result = json.loads(out.read_text())
    assert result["bytes_per_token"] == 8 * 6 and result["tokens_per_step"] == 16
    cases = {"live", "live_chunked", "offline", "offline_uniform", "offline_sampled", "offline_chunked",
             "offline_sampled_chunked"}  # fmt: skip
    assert set(result["ms_per_step"]) == cases and all(v > 0 for v in result["ms_per_step"].values())
    assert result["offline_vs_live"] == pytest.approx(result["ms_per_step"]["offline"] / result["ms_per_step"]["live"])
    assert result["sampled_store_build_s"] > 0

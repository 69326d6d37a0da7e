"""Multi-stage pipelines: born-again generations and teacher -> assistant -> student."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from lightning_kd.apps.pipeline import expand_stages, main, run_pipeline
from tests.helpers import REPO

FAST = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=3",
    "--trainer.limit_val_batches=2",
    "--trainer.limit_test_batches=2",
    "--trainer.enable_progress_bar=false",
    "--trainer.logger=false",
]


def test_born_again_makes_one_checkpoint_per_generation(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # recipes name their files relative to the repository
    results = run_pipeline(REPO / "configs/pipelines/digits_born_again.yaml", FAST, out_dir=tmp_path)
    assert [r["stage"] for r in results] == ["gen0", "gen1", "gen2", "gen3"]
    for previous, r in zip(results, results[1:]):
        assert r["teacher_ckpt"] == previous["checkpoint"]  # each generation taught by the one before
    ckpts = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.glob("*/model.ckpt"))
    assert ckpts == ["gen0/model.ckpt", "gen1/model.ckpt", "gen2/model.ckpt", "gen3/model.ckpt"]
    assert not list(tmp_path.glob("*.ckpt"))  # every file of a stage stays in the stage's folder
    # generation k's checkpoint holds its student; generation k+1's teacher was loaded from it
    gen1 = torch.load(tmp_path / "gen1/model.ckpt", weights_only=True)["state_dict"]
    gen2 = torch.load(tmp_path / "gen2/model.ckpt", weights_only=True)
    assert gen2["hyper_parameters"]["teacher_ckpt"] == str(tmp_path / "gen1/model.ckpt")
    assert any(k.startswith("student.") for k in gen1) and not any(k.startswith("teacher.") for k in gen1)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(summary) == 4 and all(0.0 <= r["test_acc"] <= 1.0 for r in summary)
    assert "| gen3 |" in (tmp_path / "summary.md").read_text()


def test_teacher_assistant_chain_on_fashion_mnist(tmp_path, monkeypatch, fmnist_dir):
    monkeypatch.chdir(REPO)
    args = [
        *FAST,
        f"--data.init_args.data_dir={fmnist_dir}",
        "--data.init_args.batch_size=16",
        "--trainer.precision=32-true",
    ]
    main([str(REPO / "configs/pipelines/fashion_mnist_teacher_assistant.yaml"), "--out-dir", str(tmp_path), *args])
    results = json.loads((tmp_path / "summary.json").read_text())
    assert [r["stage"] for r in results] == ["teacher", "assistant", "student"]
    assert [r["params"] for r in results] == [2_776_522, 308_074, 24_058]
    assert results[2]["teacher_ckpt"] == str(tmp_path / "assistant/model.ckpt")


def test_reused_first_stage_and_bad_pipelines(tmp_path):
    with pytest.raises(ValueError, match="exactly one of `config`"):
        expand_stages([{"name": "a"}])
    with pytest.raises(ValueError, match="only the first stage may reuse"):
        expand_stages([{"name": "a", "config": "x"}, {"name": "b", "checkpoint": "y"}])
    with pytest.raises(ValueError, match="repeat must be >= 1"):
        expand_stages([{"name": "a", "config": "x", "repeat": 0}])
    with pytest.raises(ValueError, match="unknown keys \\['epochs'\\]"):
        expand_stages([{"name": "a", "config": "x", "epochs": 3}])
    assert [s["name"] for s in expand_stages([{"name": "g", "config": "x", "repeat": 2}])] == ["g1", "g2"]
    spec = tmp_path / "p.yaml"
    spec.write_text(yaml.safe_dump({"stages": [{"name": "t", "checkpoint": str(tmp_path / "missing.ckpt")}]}))
    with pytest.raises(FileNotFoundError, match="missing.ckpt' does not exist"):
        run_pipeline(spec, out_dir=tmp_path / "out")


def test_every_pipeline_file_is_valid():
    for path in (REPO / "configs" / "pipelines").glob("*.yaml"):
        stages = expand_stages(yaml.safe_load(path.read_text())["stages"])
        for stage in stages:
            if "checkpoint" in stage:  # a reused model (the first stage only): its path is made by another run
                assert stage is stages[0], f"{path.name}: only the first stage may reuse a checkpoint"
                continue
            configs = [stage["config"]] if isinstance(stage["config"], str) else stage["config"]
            for config in configs:
                assert Path(REPO, config).is_file(), f"{path.name}: {config} missing"

"""The CLI: every recipe runs a step, --print_config round-trips, bad input fails with its message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import FMNIST_DIR, REPO

from lightning_kd.cli import build_cli

RECIPES = sorted(str(p.relative_to(REPO)) for p in (REPO / "configs").rglob("*.yaml") if p.parent.name != "pipelines")
NEEDS_DOWNLOAD = ("cifar",)


def _overrides(recipe: str, tmp_path: Path) -> list[str]:
    cfg = yaml.safe_load((REPO / recipe).read_text())
    args = ["--trainer.fast_dev_run=true", "--trainer.accelerator=cpu", f"--trainer.default_root_dir={tmp_path}"]
    init = cfg["model"].get("init_args", {})
    for key in ("teacher_ckpt", "teacher_ckpts"):
        if init.get(key):
            args.append(f"--model.init_args.{key}=null")  # fast_dev_run: the teachers as built are enough
    if "FashionMNIST" in cfg["data"]["class_path"]:
        args.append(f"--data.init_args.data_dir={FMNIST_DIR}")
        args.append("--data.init_args.batch_size=32")  # one step proves the recipe; 256 images cost CPU minutes
    if init.get("teacher_cache"):  # build a 1-epoch cache first, for a tiny teacher (the recipe's: minutes on CPU)
        from lightning_kd.cache_build import build_from_recipe

        tiny = {"class_path": "lightning_kd.models.MLP", "init_args": {"in_features": 784, "hidden": [8]}}
        args.append(f"--model.init_args.teacher={yaml.safe_dump(tiny, default_flow_style=True).strip()}")
        args.append(f"--model.init_args.teacher_cache={build_from_recipe(REPO / recipe, 'cache', 1, args).path}")
    return args


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_runs_a_step(recipe, tmp_path, monkeypatch):
    if any(k in recipe for k in NEEDS_DOWNLOAD):
        pytest.skip("needs a download; parsed in test_download_recipes_parse")
    if "fashion_mnist" in recipe and not Path(FMNIST_DIR, "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST files not available")
    monkeypatch.chdir(tmp_path)
    cli = build_cli(["fit", "--config", str(REPO / recipe), *_overrides(recipe, tmp_path)])
    assert cli.trainer.global_step == 1
    assert cli.trainer.state.finished


@pytest.mark.parametrize("recipe", [r for r in RECIPES if any(k in r for k in NEEDS_DOWNLOAD)] or [None])
def test_download_recipes_parse(recipe, tmp_path):
    if recipe is None:
        pytest.skip("no recipe needs a download")
    cfg = yaml.safe_load((REPO / recipe).read_text())
    args = ["--config", str(REPO / recipe)]
    if "teacher_ckpt" in cfg["model"]["init_args"]:
        args.append("--model.init_args.teacher_ckpt=null")
    cli = build_cli(args, run=False)
    assert cli.model is not None and cli.datamodule is not None
    assert cli.datamodule.download  # these recipes fetch CIFAR themselves on a machine with a network


def test_print_config_round_trips(tmp_path):
    recipe = str(REPO / "configs/digits/kd.yaml")
    first = subprocess.run(
        [sys.executable, "-m", "lightning_kd", "fit", "--config", recipe, "--print_config"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    saved = tmp_path / "printed.yaml"
    saved.write_text(first)
    second = subprocess.run(
        [sys.executable, "-m", "lightning_kd", "fit", "--config", str(saved), "--print_config"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert first == second
    cfg = yaml.safe_load(first)
    assert cfg["model"]["class_path"] == "lightning_kd.DistillationModule"
    assert cfg["model"]["init_args"]["temperature"] == 4.0
    assert cfg["model"]["init_args"]["optimizer"]["class_path"] == "torch.optim.Adam"


def test_omegaconf_interpolation(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "interp.yaml"
    text = (REPO / "configs/digits/kd.yaml").read_text()
    recipe.write_text(
        text.replace("seed_everything: 0", "seed_everything: 7").replace("seed: 0}", "seed: '${seed_everything}'}")
    )
    cli = build_cli(["--config", str(recipe), "--model.init_args.teacher_ckpt=null"], run=False)
    assert cli.datamodule.seed == 7


def test_bad_value_in_recipe_is_reported():
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\] \(weight of the KD term\), got 1.5"):
        build_cli(
            ["--config", str(REPO / "configs/digits/kd.yaml"), "--model.init_args.teacher_ckpt=null"]
            + ["--model.init_args.alpha=1.5"],
            run=False,
        )


def test_missing_teacher_checkpoint_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        (FileNotFoundError, ValueError), match="runs/digits/teacher/teacher.ckpt' does not exist. Train a teacher"
    ):
        build_cli(["--config", str(REPO / "configs/digits/kd.yaml")], run=False)


def test_cli_checkpoint_reloads_without_passing_models(tmp_path, monkeypatch):
    """Under the CLI, hparams hold class_path configs, so load_from_checkpoint rebuilds teacher and student."""
    monkeypatch.chdir(tmp_path)
    build_cli(
        [
            "fit",
            "--config",
            str(REPO / "configs/digits/kd.yaml"),
            "--model.init_args.teacher_ckpt=null",
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=2",
            "--trainer.enable_progress_bar=false",
        ]
    )
    import torch

    from lightning_kd import DistillationModule

    path = tmp_path / "runs/digits/kd/kd.ckpt"
    ckpt = torch.load(path, weights_only=True)
    assert not [k for k in ckpt["state_dict"] if k.startswith("teacher.")]
    model = DistillationModule.load_from_checkpoint(path)
    assert type(model.student).__name__ == "MLP"
    assert model(torch.randn(3, 1, 8, 8)).shape == (3, 10)

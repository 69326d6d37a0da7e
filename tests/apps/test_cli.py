"""The CLI: every recipe runs a step, --print_config round-trips, bad input fails with its message."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lightning_kd.apps.cli import build_cli
from tests.helpers import FMNIST_DIR, REPO


def _deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _recipes() -> list[tuple[str, str]]:
    """(base, fragment) for every fragment beside a dataset's (or pair's) base.yaml."""
    pairs = []
    for base in sorted((REPO / "configs").rglob("base.yaml")):
        for fragment in sorted(base.parent.glob("*.yaml")):
            if fragment.name != "base.yaml":
                pairs.append((str(base.relative_to(REPO)), str(fragment.relative_to(REPO))))
    return pairs


RECIPES = _recipes()
NEEDS_DOWNLOAD = ("cifar",)


def _merged(recipe: tuple[str, ...]) -> dict:
    merged: dict = {}
    for f in recipe:  # later files override earlier ones, as --config does
        merged = _deep_merge(merged, yaml.safe_load((REPO / f).read_text()))
    return merged


def _accepted(class_path: str) -> set[str]:
    """Constructor arguments of a module class, its parent's included when it passes ``**kwargs`` on."""
    import importlib
    import inspect

    module, name = class_path.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    names = set()
    for klass in cls.__mro__:
        params = inspect.signature(klass.__init__).parameters if "__init__" in vars(klass) else {}
        names |= {n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()) and params:
            break
    return names


def _configs(recipe: tuple[str, str]) -> list[str]:
    return [a for f in recipe for a in ("--config", str(REPO / f))]


def _overrides(recipe: tuple[str, str], tmp_path: Path) -> list[str]:
    cfg = _merged(recipe)
    args = ["--trainer.fast_dev_run=true", "--trainer.accelerator=cpu", f"--trainer.default_root_dir={tmp_path}"]
    init = cfg["model"].get("init_args", {})
    accepted = _accepted(cfg["model"]["class_path"])
    for key in ("teacher_ckpt", "teacher_ckpts"):
        if init.get(key) and key in accepted:  # a class switch drops what the new class does not take
            args.append(f"--model.init_args.{key}=null")  # fast_dev_run: the teachers as built are enough
    if "FashionMNIST" in cfg["data"]["class_path"]:
        args.append(f"--data.init_args.data_dir={FMNIST_DIR}")
        args.append("--data.init_args.batch_size=32")  # one step proves the recipe; 256 images cost CPU minutes
    evaluate_on = cfg["data"].get("init_args", {}).get("evaluate_on") or {}
    if "FashionMNIST" in evaluate_on.get("class_path", ""):  # data-free: real images for evaluation only
        args.append(f"--data.init_args.evaluate_on.init_args.data_dir={FMNIST_DIR}")
        args.append("--data.init_args.batch_size=16")
    if cfg["data"]["class_path"].endswith("PackedTextDataModule"):  # a tiny corpus, not the standard library
        corpus = tmp_path / "corpus"
        corpus.mkdir(exist_ok=True)
        for i in range(12):
            (corpus / f"m{i}.py").write_text("".join(f"def f_{i}_{j}(x):\n    return x + {j}\n" for j in range(30)))
        args += [f"--data.init_args.text_dir={corpus}", "--data.init_args.pattern=*.py"]
        args += ["--data.init_args.vocab_size=300", "--data.init_args.seq_len=16", "--data.init_args.batch_size=4"]
        args += ["--data.init_args.val_fraction=0.3", f"--data.init_args.cache_dir={tmp_path / 'lm_data'}"]
    if cfg["data"]["class_path"].endswith("PromptResponseDataModule"):  # a user's folders and chat data
        args += _own_models(init, tmp_path)
    teacher = init.get("teacher") or {}
    if teacher.get("class_path") == "lightning_kd.CachedTeacher":  # a 1-epoch cache of a tiny teacher first
        from lightning_kd.apps.cache import build_from_recipe

        tiny = {"class_path": "lightning_kd.models.MLP", "init_args": {"in_features": 784, "hidden": [8]}}
        cached = {"path": str(tmp_path / "cache"), "model": tiny, "ckpt": None}
        teacher = {"class_path": "lightning_kd.CachedTeacher", "init_args": cached}
        args.append(f"--model.init_args.teacher={yaml.safe_dump(teacher, default_flow_style=True).strip()}")
        build_from_recipe([REPO / f for f in recipe], None, 1, args)
    if teacher.get("class_path") == "lightning_kd.CachedLMTeacher":  # a top-8 store of the untrained teacher first
        from lightning_kd.apps import cache_lm

        llama = {"vocab_size": 300, "hidden_size": 32, "num_layers": 1, "num_heads": 2, "max_position": 64}
        tiny = {"class_path": "lightning_kd.models.llama_lm", "init_args": llama}
        cached = {"path": str(tmp_path / "lm_store"), "model": tiny, "ckpt": None}
        args.append(
            "--model.init_args.teacher="
            + yaml.safe_dump(
                {"class_path": teacher["class_path"], "init_args": cached}, default_flow_style=True
            ).strip()
        )
        cache_lm.build_from_recipe([str(REPO / f) for f in recipe], args, k=8)
    return args


def _own_models(init: dict, tmp_path: Path) -> list[str]:
    """Tiny Qwen 2 model folders (ChatML tokenizer) and a chat JSONL where a recipe names a user's files."""
    import json

    from tests.lm_families import family_tokenizer, model_folder
    from tests.lm_helpers import write_corpus

    write_corpus(tmp_path / "corpus")
    tok = family_tokenizer("qwen", tmp_path / "corpus")
    teacher, student = (
        model_folder(tmp_path, "qwen2", 1, width=48, tok=tok),
        model_folder(tmp_path, "qwen2", 2, tok=tok),
    )

    def chat(i: int) -> list[dict]:
        return [{"role": "user", "content": f"Write f_{i}."}, {"role": "assistant", "content": f"def f_{i}(x): ..."}]

    data = tmp_path / "chat.jsonl"
    data.write_text("\n".join(json.dumps({"messages": chat(i)}) for i in range(8)), encoding="utf-8")
    args = [f"--model.init_args.teacher.init_args.path={teacher}"]
    student_args = init["student"]["init_args"]
    where = "student.init_args.model" if "model" in student_args else "student"  # a LoRA wrapper holds the model
    args += [f"--model.init_args.{where}.init_args.path={student}", f"--data.init_args.tokenizer={student}"]
    if init.get("loss") in ("span_kl", "uld"):  # cross-tokenizer: the teacher's own tokenizer for its side
        args.append(f"--data.init_args.teacher_tokenizer={teacher}")
    args += [
        f"--data.init_args.train_file={data}",
        f"--data.init_args.val_file={data}",
        "--data.init_args.batch_size=2",
    ]
    return args


@pytest.mark.parametrize("recipe", RECIPES, ids=[r[1] for r in RECIPES])
def test_every_recipe_runs_a_step(recipe, tmp_path, monkeypatch):
    if any(k in recipe[1] for k in NEEDS_DOWNLOAD):
        pytest.skip("needs a download; parsed in test_download_recipes_parse")
    if "fashion_mnist" in recipe[1] and not Path(FMNIST_DIR, "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST files not available")
    monkeypatch.chdir(tmp_path)
    cli = build_cli(["fit", *_configs(recipe), *_overrides(recipe, tmp_path)])
    assert cli.trainer.global_step == 1
    assert cli.trainer.state.finished


def _study_stacks() -> list[tuple[str, ...]]:
    """Config stacks of the shipped studies (runs and ``fit`` setup steps) that are not a (base, fragment) pair
    tested above: overlays such as configs/lm/full_size/ are only ever run this way."""
    stacks = set()
    for path in sorted((REPO / "configs/studies").glob("*.yaml")):
        study = yaml.safe_load(path.read_text())
        for run in study["runs"].values():
            stacks.add(tuple(run.get("configs", ())))
        for step in study.get("setup") or ():
            command = step["command"]
            if command[0] == "fit":
                stacks.add(tuple(c for prev, c in zip(command, command[1:]) if prev == "--config"))
    return sorted(s for s in stacks if len(s) > 2 or (s and s not in RECIPES))


STUDY_STACKS = _study_stacks()


@pytest.mark.parametrize("stack", STUDY_STACKS, ids=["+".join(Path(f).stem for f in s[1:]) for s in STUDY_STACKS])
def test_every_study_config_stack_runs_a_step(stack, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = build_cli(["fit", *_configs(stack), *_overrides(stack, tmp_path)])
    assert cli.trainer.global_step == 1


DOWNLOADS = [r for r in RECIPES if any(k in r[1] for k in NEEDS_DOWNLOAD)]


@pytest.mark.parametrize("recipe", DOWNLOADS or [None], ids=[r[1] for r in DOWNLOADS] or ["none"])
def test_download_recipes_parse(recipe, tmp_path):
    if recipe is None:
        pytest.skip("no recipe needs a download")
    args = _configs(recipe)
    merged = _merged(recipe)["model"]
    if merged["init_args"].get("teacher_ckpt") and "teacher_ckpt" in _accepted(merged["class_path"]):
        args.append("--model.init_args.teacher_ckpt=null")
    cli = build_cli(args, run=False)
    assert cli.model is not None and cli.datamodule is not None
    assert cli.datamodule.download  # these recipes fetch CIFAR themselves on a machine with a network


def test_fragments_are_short_and_bases_hold_what_is_shared():
    """A method fragment holds only what is its own: no trainer set-up, no data class, no logger."""
    for _, fragment in RECIPES:
        cfg = yaml.safe_load((REPO / fragment).read_text())
        assert set(cfg) <= {"trainer", "model", "data", "seed_everything"}, fragment
        assert set(cfg.get("trainer", {})) <= {"default_root_dir", "callbacks", "max_steps", "max_epochs"}, fragment
        assert "class_path" not in cfg.get("data", {}), fragment
        assert cfg["trainer"]["default_root_dir"].endswith("/" + Path(fragment).stem), fragment


def test_interpolation_resolves_across_files(tmp_path, monkeypatch):
    """The base's logger and checkpoint folders follow the fragment's default_root_dir (omegaconf+)."""
    monkeypatch.chdir(tmp_path)
    cli = build_cli(
        [*_configs(("configs/digits/base.yaml", "configs/digits/student.yaml")), "--trainer.max_epochs=1"], run=False
    )
    assert cli.trainer.default_root_dir == "runs/digits/student"
    assert cli.trainer.logger.save_dir == "runs/digits/student"
    assert cli.trainer.log_dir == "runs/digits/student/version_0"  # the run's own folder
    assert cli.trainer.checkpoint_callback.publish_path(cli.trainer) == "runs/digits/student/model.ckpt"
    assert type(cli.model).__name__ == "ClassificationModule"
    assert type(cli.model.model).__name__ == "MLP"


def test_print_config_round_trips(tmp_path):
    recipe = _configs(("configs/digits/base.yaml", "configs/digits/kd.yaml"))
    first = subprocess.run(
        [sys.executable, "-m", "lightning_kd", "fit", *recipe, "--print_config"],
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
    text = (REPO / "configs/digits/base.yaml").read_text()
    recipe.write_text(
        text.replace("seed_everything: 0", "seed_everything: 7").replace("seed: 0}", "seed: '${seed_everything}'}")
    )
    cli = build_cli(["--config", str(recipe), "--model.init_args.teacher_ckpt=null"], run=False)
    assert cli.datamodule.seed == 7


def test_bad_value_in_recipe_is_reported():
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\] \(weight of the KD term\), got 1.5"):
        build_cli(
            [*_configs(("configs/digits/base.yaml", "configs/digits/kd.yaml")), "--model.init_args.teacher_ckpt=null"]
            + ["--model.init_args.alpha=1.5"],
            run=False,
        )


def test_missing_teacher_checkpoint_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        (FileNotFoundError, ValueError), match="runs/digits/teacher/model.ckpt' does not exist. Train a teacher"
    ):
        build_cli(_configs(("configs/digits/base.yaml", "configs/digits/kd.yaml")), run=False)


def test_cli_checkpoint_reloads_without_passing_models(tmp_path, monkeypatch):
    """Under the CLI, hparams hold class_path configs, so load_from_checkpoint rebuilds teacher and student."""
    monkeypatch.chdir(tmp_path)
    build_cli(
        [
            "fit",
            *_configs(("configs/digits/base.yaml", "configs/digits/kd.yaml")),
            "--model.init_args.teacher_ckpt=null",
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=2",
            "--trainer.enable_progress_bar=false",
        ]
    )
    import torch

    from lightning_kd import DistillationModule

    path = tmp_path / "runs/digits/kd/model.ckpt"
    ckpt = torch.load(path, weights_only=True)
    assert not [k for k in ckpt["state_dict"] if k.startswith("teacher.")]
    model = DistillationModule.load_from_checkpoint(path)
    assert type(model.student).__name__ == "MLP"
    assert model(torch.randn(3, 1, 8, 8)).shape == (3, 10)


# -- what `lightning-kd` prints when it fails: the file, the option, the value and the fix (apps/cli_errors.py) ---
KD = ("configs/digits/base.yaml", "configs/digits/kd.yaml")


def _error(capsys, *args: str, code: int = 1) -> str:
    """What ``lightning-kd *args`` prints after ``lightning-kd: error:`` (in-process)."""
    from lightning_kd.apps.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    assert exit_.value.code == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.split("error: ", 1)[1].split("\n(set LIGHTNING_KD_DEBUG")[0].strip()


@pytest.mark.parametrize(
    "args, match",
    [
        (["--config", "broken.yaml"], r"^broken\.yaml line 2, column 6: .*; fix the YAML there"),
        (
            ["--model.init_args.student.class_path=lightning_kd.models.MLq"],
            r"did you mean 'lightning_kd\.models\.MLP'\?$",
        ),
        (
            ["--trainer.max_epochz=2"],
            r"^unrecognized argument: --trainer\.max_epochz=2; did you mean --trainer\.max_epochs\?",
        ),
        (["--trainer.max_epochs=abc"], r"expected a whole number \(int\), got 'abc'; give .*--trainer\.max_epochs=10$"),
        (["--model.init_args.alpha=1.5"], r"alpha must be in \[0, 1\] .*got 1\.5; set it between 0"),
        (["--ckpt_path=runs/kd/modle.ckpt"], r"'runs/kd/modle\.ckpt' does not exist\. Did you mean 'runs/kd/model"),
    ],
    ids=["yaml", "class_path", "trainer_flag", "type", "value", "ckpt_path"],
)
def test_a_failing_command_says_the_file_the_option_and_the_fix(tmp_path, monkeypatch, capsys, args, match):
    import torch

    monkeypatch.chdir(tmp_path)
    Path("broken.yaml").write_text("trainer: {max_epochs: 1\nmodel: [\n")
    Path("runs/kd").mkdir(parents=True)
    torch.save({"state_dict": {}}, "runs/kd/model.ckpt")
    message = _error(capsys, "fit", *_configs(KD), "--model.init_args.teacher_ckpt=null", *args)
    assert re.search(match, message), message


def test_a_command_without_a_subcommand_or_with_a_missing_recipe_says_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    message = _error(capsys, "--config", str(REPO / "configs/digits/base.yaml"))
    assert "but it was not provided. Start the command with one of them, e.g. `lightning-kd fit --config" in message
    message = _error(capsys, "fit", "--config", "nope.yaml")
    assert re.search(r"File does not exist: '.*nope\.yaml'; check the path \(relative to the folder", message)


def test_the_tools_fail_in_the_short_form_too(tmp_path, monkeypatch, capsys):
    from lightning_kd.apps.cli import main

    monkeypatch.chdir(tmp_path)
    message = _error(capsys, "pipeline", "nope.yaml")
    assert message == (
        "FileNotFoundError: pipeline file 'nope.yaml' does not exist; pass one of the pipelines (configs/pipelines/ "
        "of the repository)."
    )
    Path("p.yaml").write_text(yaml.safe_dump({"stages": [{"name": "teacher", "config": ["nope/base.yaml"]}]}))
    assert _error(capsys, "pipeline", "p.yaml").startswith(
        "FileNotFoundError: stage 'teacher' of 'p.yaml': its recipe file 'nope/base.yaml' does not exist; check"
    )
    assert "give it as for `lightning-kd fit`, e.g." in _error(capsys, "cache", code=2)
    monkeypatch.setenv("LIGHTNING_KD_DEBUG", "1")  # the traceback on request
    with pytest.raises(FileNotFoundError, match="pipeline file 'nope.yaml' does not exist"):
        main(["pipeline", "nope.yaml"])

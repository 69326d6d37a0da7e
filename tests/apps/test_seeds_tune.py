"""``lightning-kd seeds`` with a ``grid``: each point fitted once on the tuning seed and scored on the validation
split, the best chosen, only the chosen point run on the other seeds, and the table saying all of it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lightning_kd.apps.seeds import main as seeds_main
from lightning_kd.apps.seeds import read_study
from lightning_kd.apps.seeds_table import write_tables
from lightning_kd.apps.seeds_tune import choose, label, overlay, point_run, points

REPO = Path(__file__).resolve().parents[2]
BASE, STUDENT = str(REPO / "configs/digits/base.yaml"), str(REPO / "configs/digits/student.yaml")
TINY = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=2"]
FM_BASE, FM_AT = str(REPO / "configs/fashion_mnist_cpu/base.yaml"), str(REPO / "configs/fashion_mnist/at.yaml")
WEIGHT = "model.init_args.feature_terms.0.init_args.weight"


def _print_config(*configs: str) -> dict:
    args = [a for c in configs for a in ("--config", c)]
    done = subprocess.run(
        [sys.executable, "-m", "lightning_kd", "fit", *args, "--print_config"],
        capture_output=True, text=True, cwd=REPO, check=True,
    )  # fmt: skip
    return yaml.safe_load(done.stdout)


def test_a_point_inside_a_list_changes_that_value_only():
    """A feature term's weight sits in a list, which a later config replaces whole: the inline config carries the
    list with its one value changed, and the recipe the fit reads differs from the original in that value only."""
    run = {"configs": [FM_BASE, FM_AT], "grid": {WEIGHT: [300.0], "model.init_args.temperature": [2.0]}}
    (point,) = points(run)
    fragment = overlay(run["configs"], point)
    terms = fragment["model"]["init_args"]["feature_terms"]
    assert terms[0]["init_args"]["weight"] == 300.0 and terms[0]["init_args"]["student_layers"][0] == "block1"
    assert fragment["model"]["init_args"]["temperature"] == 2.0 and set(fragment) == {"model"}
    inline = point_run(run, point)["args"][-1]
    before, after = _print_config(FM_BASE, FM_AT), _print_config(FM_BASE, FM_AT, inline)
    assert after["model"]["init_args"]["feature_terms"][0]["init_args"]["weight"] == 300.0
    assert after["model"]["init_args"]["temperature"] == 2.0
    after["model"]["init_args"]["feature_terms"][0]["init_args"]["weight"] = 1000.0  # at.yaml's value
    after["model"]["init_args"]["temperature"] = 4.0
    assert after == before


def test_points_and_labels():
    run = {"grid": {"model.init_args.temperature": [2, 4, 8], "model.init_args.alpha": [0.5, 0.9]}}
    got = points(run)
    assert len(got) == 6 and got[0] == {"model.init_args.temperature": 2, "model.init_args.alpha": 0.5}
    assert got[1] == {"model.init_args.temperature": 2, "model.init_args.alpha": 0.9}  # the first key slowest
    assert label(got[1]) == "temperature=2,alpha=0.9"
    same_end = {"a.init_args.weight": 1, "b.init_args.weight": 2}
    assert label(same_end) == "init_args.weight=1,init_args.weight=2"
    assert label({"x.lr": "1e-3/2"}) == "lr=1e-3_2"


def _study(tmp_path: Path, **extra) -> Path:
    study = {
        "seeds": [0, 1],
        "baseline": "student",
        "args": TINY,
        "runs": {
            "student": {"configs": [BASE, STUDENT]},
            "lr": {"configs": [BASE, STUDENT], "grid": {"model.init_args.optimizer.init_args.lr": [0.0003, 0.03]}},
        },
        **extra,
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def test_grid_errors_name_the_run_and_the_fix(tmp_path):
    path = _study(tmp_path)
    study = yaml.safe_load(path.read_text())
    study["runs"]["lr"]["grid"] = {
        "model.init_args.optimizer.init_args.lr": [1, 2, 3],
        "model.init_args.alpha": [1, 2, 3],
    }
    path.write_text(yaml.safe_dump(study))
    with pytest.raises(ValueError, match=r"run 'lr': the grid has 9 points, more than tune.max_points = 8"):
        read_study(path)
    study["runs"]["lr"]["grid"] = {"model.init_args.feature_terms.0.init_args.weight": [1]}
    path.write_text(yaml.safe_dump(study))
    with pytest.raises(ValueError, match=r"'feature_terms' is not in the merged recipe under 'model.init_args'"):
        read_study(path)
    study["runs"]["lr"]["grid"] = {"model.init_args.optimizer.init_args.lr": []}
    path.write_text(yaml.safe_dump(study))
    with pytest.raises(ValueError, match=r"run 'lr': grid maps dotted recipe paths to non-empty lists"):
        read_study(path)
    study["runs"]["lr"]["grid"] = {"model.init_args.optimizer.init_args.lr": [0.1]}
    path.write_text(yaml.safe_dump({**study, "evaluate": "validate"}))
    with pytest.raises(ValueError, match=r"evaluates on its validation split .* not a tuned result"):
        read_study(path)
    path.write_text(yaml.safe_dump({**study, "tune": {"metric": "test/acc"}}))
    with pytest.raises(ValueError, match=r"'test/acc' is not a validation metric"):
        read_study(path)
    path.write_text(yaml.safe_dump({**study, "tune": {"mode": "best"}}))
    with pytest.raises(ValueError, match=r"tune mode must be 'max' or 'min', got 'best'"):
        read_study(path)
    study["runs"]["ta"] = {"pipeline": str(REPO / "configs/pipelines/digits_born_again.yaml"), "grid": {"a": [1]}}
    path.write_text(yaml.safe_dump(study))
    with pytest.raises(ValueError, match=r"run 'ta' is a pipeline; a grid needs `configs:`"):
        read_study(path)
    study["runs"]["ta"] = {"configs": [BASE], "gird": {"a": [1]}}
    path.write_text(yaml.safe_dump(study))
    with pytest.raises(ValueError, match=r"unknown run keys \{'ta': \['gird'\]\}"):
        read_study(path)


def test_the_choice_follows_validation_not_test(tmp_path):
    """Hand-made results where validation and test disagree: the point with the better validation figure is
    chosen, whatever its test figure; a tie goes to the first declared point; an unfinished point: no choice."""
    study = read_study(_study(tmp_path))
    out = tmp_path / "out"
    run = study["runs"]["lr"]
    figures = {0.0003: (0.80, 0.95), 0.03: (0.90, 0.70)}  # (val, test)
    for point in points(run):
        folder = out / "lr" / "grid" / label(point) / "seed_0"
        folder.mkdir(parents=True)
        val, test = figures[next(iter(point.values()))]
        result = {"status": "ok", "metrics": {"val/acc": val, "test/acc": test}, "fit_seconds": 1.0, "commands": []}
        (folder / "result.json").write_text(json.dumps(result))
    choice = choose(study, out, "lr")
    assert choice["label"] == "lr=0.03" and choice["scores"] == {"lr=0.0003": 0.80, "lr=0.03": 0.90}
    assert json.loads((out / "lr" / "tuning.json").read_text())["chosen"] == {
        "model.init_args.optimizer.init_args.lr": 0.03
    }
    row = next(r for r in write_tables(study, out, [0])["rows"] if r["run"] == "lr")
    assert row["metrics"]["test/acc"]["per_seed"] == {0: 0.70}  # the chosen point's test figure, not the best test
    md = (out / "results.md").read_text()
    line = "| lr | `model.init_args.optimizer.init_args.lr` ∈ [0.0003, 0.03] | val/acc (seed 0): lr=0.0003: 80.00, "
    assert line + "lr=0.03: 90.00 | lr=0.03 |" in md and "tuned: lr=0.03" in md
    assert "(at the grid's edge" not in md  # a two-point grid has no inside
    three = {**study, "runs": {**study["runs"], "lr": {**run, "grid": {"model.init_args.optimizer.init_args.lr": [
        0.0003, 0.03, 0.3]}}}}  # fmt: skip
    (out / "lr" / "grid" / "lr=0.3" / "seed_0").mkdir(parents=True)
    (out / "lr" / "grid" / "lr=0.3" / "seed_0" / "result.json").write_text(
        json.dumps({"status": "ok", "metrics": {"val/acc": 0.5, "test/acc": 0.5}})
    )
    choose(three, out, "lr")
    write_tables(three, out, [0])
    assert "| lr=0.03 |" in (out / "results.md").read_text()  # inside the grid: no remark
    (out / "lr" / "grid" / "lr=0.3" / "seed_0" / "result.json").write_text(
        json.dumps({"status": "ok", "metrics": {"val/acc": 0.99, "test/acc": 0.5}})
    )
    choose(three, out, "lr")
    write_tables(three, out, [0])
    assert "| lr=0.3 (at the grid's edge: the best may lie beyond it) |" in (out / "results.md").read_text()
    choose(study, out, "lr")
    figures[0.0003] = (0.90, 0.95)  # a tie: the first declared point
    (out / "lr" / "grid" / "lr=0.0003" / "seed_0" / "result.json").write_text(
        json.dumps({"status": "ok", "metrics": {"val/acc": 0.90, "test/acc": 0.95}})
    )
    assert choose(study, out, "lr")["label"] == "lr=0.0003"
    # a point whose fit diverged is an outcome: it ranks last and the table says so; a crash is not: no choice
    (out / "lr" / "grid" / "lr=0.0003" / "seed_0" / "result.json").write_text(
        json.dumps({"status": "failed", "error": "DivergedLossError: training diverged: the loss rose ..."})
    )
    assert choose(study, out, "lr")["label"] == "lr=0.03"
    write_tables(study, out, [0])
    assert "lr=0.0003: diverged, lr=0.03: 90.00 | lr=0.03 |" in (out / "results.md").read_text()
    (out / "lr" / "grid" / "lr=0.0003" / "seed_0" / "result.json").write_text(
        json.dumps({"status": "failed", "error": "KeyboardInterrupt: "})
    )
    assert choose(study, out, "lr") is None
    (out / "lr" / "grid" / "lr=0.0003" / "seed_0" / "result.json").write_text(
        json.dumps({"status": "ok", "metrics": {"val/acc": 0.90, "test/acc": 0.95}})
    )
    (out / "lr" / "grid" / "lr=0.03" / "seed_0" / "result.json").unlink()
    assert choose(study, out, "lr") is None
    minimise = {**study, "tune": {**study["tune"], "metric": "val/loss", "mode": "min"}}
    for point, loss in (("lr=0.0003", 2.0), ("lr=0.03", 1.0)):
        (out / "lr" / "grid" / point / "seed_0" / "result.json").write_text(
            json.dumps({"status": "ok", "metrics": {"val/loss": loss}})
        )
    assert choose(minimise, out, "lr")["label"] == "lr=0.03"


@pytest.mark.slow  # real fits in subprocesses (~30 s): keeps the default suite inside its 10 minutes
def test_a_tuned_study_end_to_end(tmp_path, capsys):
    """Two points on seed 0, the chosen one on seed 1 too; the table reads the chosen point; the commands carry
    the point; a second invocation fits nothing."""
    out = tmp_path / "out"
    study = _study(tmp_path)
    seeds_main([str(study), "--out", str(out)])
    grid = out / "lr" / "grid"
    assert sorted(p.name for p in grid.iterdir()) == ["lr=0.0003", "lr=0.03"]
    tuning = json.loads((out / "lr" / "tuning.json").read_text())
    scores = {
        p.name: json.loads((p / "seed_0" / "result.json").read_text())["metrics"]["val/acc"] for p in grid.iterdir()
    }
    assert tuning["scores"] == scores and tuning["label"] == max(scores, key=scores.get)
    other = next(p for p in grid.iterdir() if p.name != tuning["label"])
    assert not (other / "seed_1").exists()  # only the chosen point runs on the other seeds
    result = json.loads((grid / tuning["label"] / "seed_1" / "result.json").read_text())
    assert result["status"] == "ok" and {"val/acc", "test/acc"} <= set(result["metrics"])
    assert '{"model": {"init_args": {"optimizer": {"init_args": {"lr": ' in result["commands"][0]
    row = next(r for r in json.loads((out / "results.json").read_text())["rows"] if r["run"] == "lr")
    assert row["seeds"] == [0, 1] and row["tuning"]["label"] == tuning["label"]
    assert f"tuned: {tuning['label']}" in (out / "results.md").read_text()
    stamps = {p: os.stat(p).st_mtime_ns for p in grid.rglob("result.json")}
    capsys.readouterr()
    seeds_main([str(study), "--out", str(out)])
    assert "done before, kept" in capsys.readouterr().out
    assert stamps == {p: os.stat(p).st_mtime_ns for p in grid.rglob("result.json")}


def test_one_value_for_several_paths_and_a_value_left_at_its_default():
    """VID's three terms take one weight together (a key of paths joined by ``,``), a weight the recipe leaves at
    its default included: the fit reads that weight on all three terms."""
    vid = str(REPO / "configs/fashion_mnist_cpu/vid.yaml")
    key = ",".join(f"model.init_args.feature_terms.{i}.init_args.weight" for i in range(3))
    run = {"configs": [FM_BASE, vid], "grid": {key: [0.3, 3.0]}}
    first = points(run)[0]
    assert label(first) == "weight=0.3"
    after = _print_config(FM_BASE, vid, point_run(run, first)["args"][-1])
    terms = after["model"]["init_args"]["feature_terms"]
    assert [t["init_args"]["weight"] for t in terms] == [0.3, 0.3, 0.3]
    assert [t["init_args"]["name"] for t in terms] == ["vid1", "vid2", "vid3"]


def test_extend_fits_beyond_the_edge_the_best_lies_on_until_it_is_inside(tmp_path, monkeypatch, capsys):
    """tune.extend: a best point at the grid's edge gets one more point beyond it, a step of the edge's own ratio
    (10 -> 1 below [10, 100, 1000]; 1000 -> 10000 above), at most ``extend`` times; once the best is inside the
    grid nothing is added. The fits are stood in for by result files whose validation figure peaks at a chosen
    learning rate, so the order of the fits and the choice can be checked exactly."""
    import lightning_kd.apps.seeds as seeds_module

    fitted: list[tuple[str, float, int]] = []
    peak = {"lr": 0.1}  # the validation figure is highest at this lr, lower the further (in log) from it

    def fake_run_seed(name, run, seed, run_dir, extra, evaluate, also_validate=False, again=False):
        lr = json.loads(run["args"][-1])["model"]["init_args"]["optimizer"]["init_args"]["lr"] if "args" in run \
            else None  # fmt: skip
        if (run_dir / "result.json").is_file() or lr is None:
            return
        import math

        fitted.append((name, lr, seed))
        val = 0.9 - 0.01 * abs(math.log10(lr / peak["lr"]))
        run_dir.mkdir(parents=True)
        (run_dir / "result.json").write_text(json.dumps(
            {"status": "ok", "metrics": {"val/acc": val, "test/acc": val - 0.05 + 0.001 * seed}, "commands": []}
        ))  # fmt: skip

    monkeypatch.setattr(seeds_module, "run_seed", fake_run_seed)
    lr_key = "model.init_args.optimizer.init_args.lr"
    path = _study(tmp_path, tune={"extend": 2})
    study = yaml.safe_load(path.read_text())
    study["runs"] = {"lr": {"configs": [BASE, STUDENT], "grid": {lr_key: [10.0, 100.0, 1000.0]}}}
    study.pop("baseline")
    path.write_text(yaml.safe_dump(study))
    out = tmp_path / "out"
    seeds_main([str(path), "--out", str(out)])
    # best at 10 (the low edge) -> 1.0; still the edge -> 0.1, the second and last extension; 0.1 is chosen
    assert fitted == [("lr", 10.0, 0), ("lr", 100.0, 0), ("lr", 1000.0, 0), ("lr", 1.0, 0), ("lr", 0.1, 0),
                      ("lr", 0.1, 1)]  # fmt: skip
    tuning = json.loads((out / "lr" / "tuning.json").read_text())
    assert tuning["label"] == "lr=0.1" and tuning["grid"] == {lr_key: [10.0, 100.0, 1000.0, 1.0, 0.1]}
    assert tuning["extended"] == [{lr_key: 1.0}, {lr_key: 0.1}] and tuning["declared"] == {
        lr_key: [10.0, 100.0, 1000.0]
    }
    md = (out / "results.md").read_text()
    assert f"`{lr_key}` ∈ [10.0, 100.0, 1000.0], then 1.0, 0.1 (beyond the edge the best lay on: tune.extend)" in md
    assert "| lr=0.1 (at the grid's edge: the best may lie beyond it) |" in md  # extend spent, still the edge
    row = next(r for r in json.loads((out / "results.json").read_text())["rows"] if r["run"] == "lr")
    assert row["seeds"] == [0, 1] and row["metrics"]["test/acc"]["per_seed"] == {"0": 0.85, "1": 0.851}
    # the peak at the first added point: the second shows it is inside, and 1.0 is chosen without a remark
    fitted.clear()
    peak["lr"] = 1.0
    out2 = tmp_path / "out2"
    seeds_main([str(path), "--out", str(out2)])
    assert [lr for _, lr, s in fitted if s == 0] == [10.0, 100.0, 1000.0, 1.0, 0.1]
    md = (out2 / "results.md").read_text()
    assert "then 1.0, 0.1 (beyond" in md and "| lr=1.0 |" in md
    # the high edge widens upwards; a best inside the declared grid adds nothing
    for lr_peak, added in ((10000.0, [10000.0, 100000.0]), (100.0, [])):
        fitted.clear()
        peak["lr"] = lr_peak
        seeds_main([str(path), "--out", str(tmp_path / f"out_{lr_peak}")])
        assert [lr for _, lr, s in fitted if s == 0] == [10.0, 100.0, 1000.0, *added]
    # a grid that extend cannot widen (two keys) and a budget it would break are refused or left as declared
    study["tune"] = {"extend": 6}
    path.write_text(yaml.safe_dump(study))
    with pytest.raises(ValueError, match=r"the grid has 3 points and up to 6 added beyond its edge \(tune.extend\)"):
        read_study(path)
    study["tune"] = {"extend": -1}
    path.write_text(yaml.safe_dump(study))
    with pytest.raises(ValueError, match=r"tune extend must be a whole number >= 0"):
        read_study(path)

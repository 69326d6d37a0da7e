"""``lightning-kd seeds``: every (run, seed) in its own process, resumable, failures reported, honest tables."""

from __future__ import annotations

import json
import math
import os
import statistics
from pathlib import Path

import pytest
import yaml

from lightning_kd.apps.seeds import main as seeds_main
from lightning_kd.apps.seeds import read_study
from lightning_kd.apps.seeds_table import write_tables

REPO = Path(__file__).resolve().parents[2]
BASE, STUDENT = str(REPO / "configs/digits/base.yaml"), str(REPO / "configs/digits/student.yaml")
TINY = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=2"]


def _write_study(tmp_path: Path, **extra) -> Path:
    study = {
        "seeds": [0, 1],
        "baseline": "student",
        "metrics": ["test/acc"],
        "args": TINY,
        "runs": {
            "student": {"configs": [BASE, STUDENT]},
            "student_lr_high": {"configs": [BASE, STUDENT], "args": ["--model.optimizer.init_args.lr=0.03"]},
        },
        **extra,
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def test_study_runs_every_seed_and_tables_agree_with_the_result_files(tmp_path, capsys):
    study = _write_study(tmp_path)
    out = tmp_path / "out"
    seeds_main([str(study), "--out", str(out)])
    results = {
        (run, seed): json.loads((out / run / f"seed_{seed}" / "result.json").read_text())
        for run in ("student", "student_lr_high")
        for seed in (0, 1)
    }
    assert all(r["status"] == "ok" for r in results.values())
    for (run, seed), r in results.items():
        assert f"--seed_everything={seed}" in r["commands"][0]
        # the printed evaluation reads what the fit read: the study's and the run's arguments too
        assert r["commands"][1].startswith("lightning-kd test ") and all(a in r["commands"][1] for a in TINY)
        if run == "student_lr_high":
            assert "--model.optimizer.init_args.lr=0.03" in r["commands"][1]
        assert (out / run / f"seed_{seed}" / "model.ckpt").is_file()
        assert 0.0 <= r["metrics"]["test/acc"] <= 1.0
    # different seeds give different students (the seed reaches the run)
    assert results["student", 0]["metrics"] != results["student", 1]["metrics"]
    table = json.loads((out / "results.json").read_text())
    rows = {row["run"]: row["metrics"]["test/acc"] for row in table["rows"]}
    for run in ("student", "student_lr_high"):
        values = [results[run, s]["metrics"]["test/acc"] for s in (0, 1)]
        assert rows[run]["mean"] == pytest.approx(statistics.fmean(values))
        assert rows[run]["std"] == pytest.approx(statistics.stdev(values))
    diffs = [
        results["student_lr_high", s]["metrics"]["test/acc"] - results["student", s]["metrics"]["test/acc"]
        for s in (0, 1)
    ]
    assert rows["student_lr_high"]["diff"]["mean"] == pytest.approx(statistics.fmean(diffs))
    md = (out / "results.md").read_text()
    assert "| student |" in md and "| student_lr_high |" in md and "lightning-kd fit" in md
    # each fit records where it ran (threads, versions, commit); the table says it, with how many fits each
    import torch

    envs = {json.dumps(r["environment"], sort_keys=True) for r in results.values()}
    assert len(envs) == 1
    env = json.loads(envs.pop())
    assert env["torch"] == torch.__version__ and isinstance(env["threads"], int) and env["threads"] >= 1
    assert f"- {env['threads']} torch thread(s), torch {torch.__version__}, Lightning " in md
    assert md.split("Measured with")[1].split("Commands")[0].rstrip().endswith(f"commit {env['commit']}: 4")
    assert (out / "results.csv").read_text().count("\n") == 1 + 4

    # a second invocation keeps what finished: no result file is rewritten
    stamps = {k: os.stat(out / k[0] / f"seed_{k[1]}" / "result.json").st_mtime_ns for k in results}
    seeds_main([str(study), "--out", str(out)])
    assert "done before, kept" in capsys.readouterr().out
    assert stamps == {k: os.stat(out / k[0] / f"seed_{k[1]}" / "result.json").st_mtime_ns for k in results}


def test_a_failed_seed_is_reported_and_left_out_of_the_mean(tmp_path):
    study = _write_study(tmp_path, seeds=[0])
    out = tmp_path / "out"
    seeds_main([str(study), "--out", str(out), "--only", "student"])
    # a recipe whose fit fails (an argument the model does not take)
    broken = yaml.safe_load(study.read_text())
    broken["runs"]["student_lr_high"]["args"] = ["--model.init_args.no_such_argument=1"]
    study.write_text(yaml.safe_dump(broken))
    seeds_main([str(study), "--out", str(out)])
    failed = json.loads((out / "student_lr_high" / "seed_0" / "result.json").read_text())
    assert failed["status"] == "failed"
    assert "no_such_argument" in (out / "student_lr_high" / "seed_0" / "log.txt").read_text()
    md = (out / "results.md").read_text()
    assert "failed seeds [0] (not averaged)" in md
    row = next(r for r in json.loads((out / "results.json").read_text())["rows"] if r["run"] == "student_lr_high")
    assert row["seeds"] == [] and row["metrics"]["test/acc"]["per_seed"] == {}


def test_tables_from_hand_made_results(tmp_path):
    """Mean, sample std, paired differences and the noise verdict against values worked out by hand."""
    study = {"name": "hand", "runs": {"a": {}, "b": {}}, "baseline": "a", "metrics": ["test/acc"]}
    values = {"a": [0.90, 0.92, 0.94], "b": [0.95, 0.96, 0.97]}
    for run, accs in values.items():
        for seed, acc in enumerate(accs):
            folder = tmp_path / run / f"seed_{seed}"
            folder.mkdir(parents=True)
            (folder / "result.json").write_text(
                json.dumps({"status": "ok", "metrics": {"test/acc": acc}, "fit_seconds": 10.0, "commands": ["x"]})
            )
    rows = {r["run"]: r["metrics"]["test/acc"] for r in write_tables(study, tmp_path, [0, 1, 2])["rows"]}
    assert rows["a"]["mean"] == pytest.approx(0.92) and rows["a"]["std"] == pytest.approx(0.02)
    assert rows["b"]["mean"] == pytest.approx(0.96) and rows["b"]["std"] == pytest.approx(0.01)
    # paired: 0.05, 0.04, 0.03 -> mean 0.04, std 0.01; 95 % t-interval 0.04 ± t(0.975, 2) · 0.01 / √3, with
    # t(0.975, 2) = 4.3027 (a t-table): ± 0.02484 -> [0.01516, 0.06484], 0 outside -> beyond the noise
    assert rows["b"]["diff"]["mean"] == pytest.approx(0.04) and rows["b"]["diff"]["std"] == pytest.approx(0.01)
    assert rows["b"]["diff"]["ci95"] == pytest.approx([0.01516, 0.06484], abs=1e-5)
    assert rows["a"]["ci95"] == pytest.approx([0.92 - 0.04968, 0.92 + 0.04968], abs=1e-5)  # 4.3027 · 0.02 / √3
    assert rows["b"]["beyond_noise"] is True
    md = (tmp_path / "results.md").read_text()
    assert "| b | 96.00 ± 1.00 | 93.52 … 98.48 | 95.00 / 96.00 / 97.00 | 4.00 ± 1.00 [1.52 … 6.48] | yes |" in md
    assert "not run yet" not in md
    assert "- not recorded: 6" in md  # result files without an environment (written before it was recorded)
    one = {r["run"]: r["metrics"]["test/acc"] for r in write_tables(study, tmp_path, [0])["rows"]}
    assert one["b"]["beyond_noise"] is None  # one seed: no spread, no verdict
    assert "| b | 95.00 ± 0.00 | – | 95.00 | 5.00 ± 0.00 | – |" in (tmp_path / "results.md").read_text()
    # a gain whose interval reaches 0 is not beyond the noise, however far the means are: 0.06, 0.0, 0.03
    for seed, acc in enumerate([0.96, 0.92, 0.97]):
        (tmp_path / "b" / f"seed_{seed}" / "result.json").write_text(
            json.dumps({"status": "ok", "metrics": {"test/acc": acc}, "fit_seconds": 10.0, "commands": ["x"]})
        )
    noisy = {r["run"]: r["metrics"]["test/acc"] for r in write_tables(study, tmp_path, [0, 1, 2])["rows"]}
    assert noisy["b"]["diff"]["ci95"][0] < 0 < noisy["b"]["diff"]["ci95"][1] and noisy["b"]["beyond_noise"] is False
    # a metric no run logged (e.g. val/bpb of a study without byte counts) gives "–", not a crash
    both = write_tables({**study, "metrics": ["test/acc", "test/bpb"]}, tmp_path, [0, 1, 2])["rows"]
    assert [r["metrics"]["test/bpb"]["per_seed"] for r in both] == [{}, {}]
    # a metric only the other runs logged (the teacher's accuracy, which a student-alone baseline has not): shown,
    # with no paired difference, and no crash (it raised KeyError at the end of the data-free study)
    for seed in range(3):
        path = tmp_path / "b" / f"seed_{seed}" / "result.json"
        result = json.loads(path.read_text())
        result["metrics"]["test/teacher_acc"] = 0.99
        path.write_text(json.dumps(result))
    rows = {
        r["run"]: r["metrics"]["test/teacher_acc"]
        for r in write_tables({**study, "metrics": ["test/acc", "test/teacher_acc"]}, tmp_path, [0, 1, 2])["rows"]
    }
    assert rows["b"]["mean"] == pytest.approx(0.99) and rows["b"]["diff"]["per_seed"] == {}
    assert rows["a"]["per_seed"] == {}
    rows = {r["run"]: r for r in write_tables(study, tmp_path, [0, 1, 2, 3])["rows"]}
    assert rows["b"]["missing"] == [3]
    assert "not run yet: seeds [3]" in (tmp_path / "results.md").read_text()


def test_study_file_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist; see configs/studies/"):
        read_study(tmp_path / "nope.yaml")
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"runs": {"a": {"configs": ["missing.yaml"]}}}))
    with pytest.raises(FileNotFoundError, match=r"run 'a' names \['missing.yaml'\], which do not exist"):
        read_study(path)
    path.write_text(yaml.safe_dump({"runs": {"a": {"configs": [BASE]}}, "baseline": "b"}))
    with pytest.raises(ValueError, match=r"baseline 'b' is not one of the runs \['a'\]"):
        read_study(path)
    path.write_text(yaml.safe_dump({"runs": {"a": {"configs": [BASE]}}, "sedes": [1]}))
    with pytest.raises(ValueError, match=r"unknown keys \['sedes'\]"):
        read_study(path)
    path.write_text(yaml.safe_dump({"runs": {"a": {"configs": [BASE]}}, "evaluate": "predict"}))
    with pytest.raises(ValueError, match=r"evaluate must be 'test' or 'validate', got 'predict'"):
        read_study(path)
    path.write_text(yaml.safe_dump({"runs": {"a": {"configs": [BASE]}}, "against": {"a": ["a_kd"]}}))
    with pytest.raises(ValueError, match=r"against names unknown runs \['a_kd'\]; runs are \['a'\]"):
        read_study(path)
    path.write_text(yaml.safe_dump({"runs": {"a": {"configs": [BASE]}}, "against": {"a": "a"}}))
    with pytest.raises(ValueError, match=r"against must map a run to a list of runs compared with it"):
        read_study(path)
    with pytest.raises(SystemExit):
        seeds_main([str(_write_study(tmp_path)), "--only", "nope"])


def test_shipped_studies_parse():
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        for path in sorted((REPO / "configs/studies").glob("*.yaml")):
            study = read_study(path)
            assert study["baseline"] in study["runs"]
            covered = {n for names in (study.get("parts") or {}).values() for n in names}
            assert not study.get("parts") or covered == set(study["runs"]), f"{path}: a run is in no part"
    finally:
        os.chdir(cwd)


def test_table_goes_into_a_document_between_its_markers_and_nothing_else_changes(tmp_path, capsys):
    study = _write_study(tmp_path, seeds=[0])  # the study's name is its file's stem: "study"
    out = tmp_path / "out"
    for run, acc in (("student", 0.9), ("student_lr_high", 0.8)):
        folder = out / run / "seed_0"
        folder.mkdir(parents=True)
        (folder / "result.json").write_text(
            json.dumps(
                {"status": "ok", "metrics": {"test/acc": acc}, "fit_seconds": 1.0, "commands": ["lightning-kd fit -x"]}
            )
        )
    doc = tmp_path / "results.md"
    before, after = "# Results\n\nprose above\n\n", "\n\nprose below <!-- seeds-table: other -->\n"
    doc.write_text(f"{before}<!-- seeds-table: study -->\nan old table\n<!-- /seeds-table -->{after}")
    seeds_main([str(study), "--out", str(out), "--table-only", "--into", str(doc)])
    text = doc.read_text()
    assert text.startswith(before) and text.endswith(after) and "an old table" not in text
    assert "| student_lr_high | 80.00 ± 0.00 |" in text and "-10.00 ± 0.00" in text
    assert "lightning-kd fit" not in text and f"commands: `{out / 'results.md'}`" in text  # they stay there
    seeds_main([str(study), "--out", str(out), "--table-only", "--into", str(doc)])
    assert doc.read_text() == text  # a second run replaces the table, it does not add one
    # a document without the markers is refused, untouched, with the lines to add
    plain = tmp_path / "plain.md"
    plain.write_text("no markers\n")
    with pytest.raises(SystemExit, match=r"0 line\(s\) '<!-- seeds-table: study -->'.*add the two lines"):
        seeds_main([str(study), "--out", str(out), "--table-only", "--into", str(plain)])
    assert plain.read_text() == "no markers\n"
    plain.write_text("<!-- seeds-table: study -->\nno end\n")
    with pytest.raises(SystemExit, match="has no '<!-- /seeds-table -->' after it"):
        seeds_main([str(study), "--out", str(out), "--table-only", "--into", str(plain)])


@pytest.mark.slow  # real fits in subprocesses (~30 s): keeps the default suite inside its 10 minutes
def test_a_changed_recipe_is_refitted_and_the_earlier_fit_kept_aside(tmp_path, capsys):
    """A finished seed is kept only while its recipe is the same: edit a config file the run reads and the next
    invocation moves the earlier fit aside (never deletes it) and fits the recipe as it now is."""
    student = tmp_path / "student.yaml"
    student.write_text(Path(STUDENT).read_text())
    study = _write_study(tmp_path, seeds=[0])
    spec = yaml.safe_load(study.read_text())
    spec["runs"] = {"student": {"configs": [BASE, str(student)]}}
    study.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    seeds_main([str(study), "--out", str(out)])
    first = json.loads((out / "student" / "seed_0" / "result.json").read_text())
    assert first["status"] == "ok" and len(first["recipe"]) == 16
    seeds_main([str(study), "--out", str(out)])  # unchanged: kept
    assert "done before, kept" in capsys.readouterr().out
    student.write_text(student.read_text().replace("hidden: [32]", "hidden: [16]"))
    seeds_main([str(study), "--out", str(out)])
    printed = capsys.readouterr().out
    stale = out / "student" / f"seed_0.recipe-{first['recipe']}"
    assert f"its recipe changed since the fit in {out / 'student' / 'seed_0'}" in printed and str(stale) in printed
    assert json.loads((stale / "result.json").read_text()) == first and (stale / "model.ckpt").is_file()
    second = json.loads((out / "student" / "seed_0" / "result.json").read_text())
    assert second["status"] == "ok" and second["recipe"] != first["recipe"]
    # a study argument is part of the recipe too
    spec["args"] = [*TINY, "--trainer.limit_train_batches=2"]
    study.write_text(yaml.safe_dump(spec))
    seeds_main([str(study), "--out", str(out)])
    assert "its recipe changed" in capsys.readouterr().out
    assert len(list((out / "student").glob("seed_0.recipe-*"))) == 2


def test_re_evaluate_scores_the_kept_model_again_without_refitting(tmp_path, capsys):
    """``--re-evaluate``: a finished fit's published model is evaluated again (a metric added since: here one
    removed from its result file comes back, the same value), the fit and its model untouched."""
    study = _write_study(tmp_path, seeds=[0])
    out = tmp_path / "out"
    seeds_main([str(study), "--out", str(out), "--only", "student"])
    folder = out / "student" / "seed_0"
    first = json.loads((folder / "result.json").read_text())
    stamp = (folder / "model.ckpt").stat().st_mtime_ns
    trimmed = {**first, "metrics": {k: v for k, v in first["metrics"].items() if k != "test/acc"}}
    (folder / "result.json").write_text(json.dumps(trimmed))
    seeds_main([str(study), "--out", str(out), "--only", "student", "--re-evaluate"])
    assert "lightning-kd test " in capsys.readouterr().out  # the evaluation command, not the fit
    again = json.loads((folder / "result.json").read_text())
    assert again["metrics"]["test/acc"] == first["metrics"]["test/acc"]
    assert again["fit_seconds"] == first["fit_seconds"] and again["recipe"] == first["recipe"]
    assert again["re_evaluated"]["environment"]["threads"] >= 1
    assert (folder / "model.ckpt").stat().st_mtime_ns == stamp
    (folder / "model.ckpt").unlink()
    seeds_main([str(study), "--out", str(out), "--only", "student", "--re-evaluate"])
    assert "its model is gone" in capsys.readouterr().out
    assert json.loads((folder / "result.json").read_text()) == again


def test_the_other_metrics_get_their_own_table_with_paired_intervals(tmp_path):
    """An LM study's perplexity and bits per byte beside its loss: mean ± std and the paired difference with its
    95 % t-interval, worked out by hand (diffs −10, −15, −20: mean −15, std 5, ± 4.3027 · 5 / √3 = ± 12.42)."""
    study = {"name": "lm", "runs": {"a": {}, "b": {}}, "baseline": "a", "metrics": ["val/loss", "val/ppl"]}
    ppl = {"a": [100.0, 110.0, 120.0], "b": [90.0, 95.0, 100.0]}
    for run, values in ppl.items():
        for seed, value in enumerate(values):
            folder = tmp_path / run / f"seed_{seed}"
            folder.mkdir(parents=True)
            metrics = {"val/loss": math.log(value), "val/ppl": value}
            (folder / "result.json").write_text(json.dumps({"status": "ok", "metrics": metrics, "commands": ["x"]}))
    write_tables(study, tmp_path, [0, 1, 2])
    md = (tmp_path / "results.md").read_text()
    assert "| run | val/ppl |" in md and "| a | 110.0 ± 10.0 |" in md
    assert "| b | 95.0 ± 5.0 (-15.0 [-27.4 … -2.6]) |" in md
    only_loss = write_tables({**study, "metrics": ["val/loss"]}, tmp_path, [0, 1, 2])["markdown"]
    assert "The other metrics" not in only_loss  # one metric: no second table


def test_against_pairs_listed_runs_with_another_run_than_the_baseline(tmp_path):
    """ "+KD" rows against KD itself, worked out by hand: at_kd − kd per seed = 0.01, 0.02, 0.03 → mean 2.00 points,
    std 1.00, 95 % interval 2.00 ± 4.3027 · 1.00 / √3 = 2.00 ± 2.48 → [-0.48, 4.48]: inside the noise; seed 2 of
    fit_kd is missing, so it is paired on seeds 0 and 1 only (0.05, 0.05: std 0, an interval of width 0)."""
    study = {"name": "f", "runs": {"student": {}, "kd": {}, "at_kd": {}, "fit_kd": {}}, "baseline": "student",
             "metrics": ["test/acc"], "against": {"kd": ["at_kd", "fit_kd"]}}  # fmt: skip
    acc = {"student": [0.70, 0.71, 0.72], "kd": [0.80, 0.80, 0.80], "at_kd": [0.81, 0.82, 0.83], "fit_kd": [0.85, 0.85]}
    for run, values in acc.items():
        for seed, value in enumerate(values):
            folder = tmp_path / run / f"seed_{seed}"
            folder.mkdir(parents=True)
            result = {"status": "ok", "metrics": {"test/acc": value}, "commands": ["x"]}
            (folder / "result.json").write_text(json.dumps(result))
    md = write_tables(study, tmp_path, [0, 1, 2])["markdown"]
    assert "Against `kd` (test/acc, paired on the seeds both finished" in md
    assert "| at_kd | 2.00 ± 1.00 [-0.48 … 4.48] | 1.00 / 2.00 / 3.00 | no |" in md
    assert "| fit_kd | 5.00 ± 0.00 [5.00 … 5.00] | 5.00 / 5.00 | yes |" in md
    assert "| at_kd | 82.00 ± 1.00 |" in md  # the main table still pairs with the baseline
    (tmp_path / "fit_kd" / "seed_0" / "result.json").write_text(json.dumps({"status": "failed", "error": "x"}))
    (tmp_path / "fit_kd" / "seed_1" / "result.json").unlink()
    assert "| fit_kd | – | – | – |" in write_tables(study, tmp_path, [0, 1, 2])["markdown"]  # nothing to pair yet

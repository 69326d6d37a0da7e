"""The main job and the notebook: what a first-time user runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lightning_kd.apps.quickstart import DEFAULT_THREADS, format_table, main, run, teacher_recipe
from tests.helpers import REPO


def _readme_figures() -> dict[str, float]:
    rows = {
        "teacher": "| teacher (SmallCNN",
        "student_alone": "| student alone (MLP",
        "student_kd": "| student with KD",
    }
    lines = (REPO / "README.md").read_text().splitlines()
    return {key: float(next(ln for ln in lines if ln.startswith(p)).split("|")[2]) for key, p in rows.items()}


def test_quickstart_prints_the_readmes_figures_and_reuses_only_a_teacher_of_its_recipe(tmp_path, capsys):
    r = run(tmp_path, epochs=40, seed=0)  # the default: 2 threads, the README's count
    assert r["threads"] == DEFAULT_THREADS == 2
    teacher = Path(r["teacher_ckpt"])
    assert teacher.parent == tmp_path / "teacher" and teacher.name.startswith("teacher-") and teacher.is_file()
    assert json.loads(teacher.with_suffix(".json").read_text()) == teacher_recipe(40, 0, 2)
    assert Path(r["student_ckpt"]).is_file()
    assert r["student_kd"] > r["student_alone"]  # distillation helps, on the quickstart's own figures
    assert r["teacher_params"] == 94_186 and r["student_params"] == 2_410
    # what a fresh clone prints at the stated thread count is what the README says
    figures = {k: round(r[k], 4) for k in ("teacher", "student_alone", "student_kd")}
    assert figures == _readme_figures()
    table = format_table(r)
    assert "| student with KD (same MLP) |" in table and "39.1x" in table
    assert f"2 CPU thread(s); torch {torch.__version__}" in table and "commit " in table

    # another recipe (2 epochs) is not served the 40-epoch teacher: it trains its own, beside it
    before = teacher.stat().st_mtime_ns
    main(["--out-dir", str(tmp_path), "--epochs", "2", "--no-report"])
    out = capsys.readouterr().out
    assert "training the teacher (2 epochs, seed 0, 2 threads)" in out and "reusing" not in out
    assert teacher.stat().st_mtime_ns == before and len(list((tmp_path / "teacher").glob("teacher-*.ckpt"))) == 2
    # the same recipe again: reused
    main(["--out-dir", str(tmp_path), "--epochs", "2", "--no-report"])
    assert "reusing the teacher" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"threads must be >= 1, got 0; the README's figures are for 2"):
        run(tmp_path, epochs=1, threads=0)


def test_notebook_executes(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(REPO / "notebooks" / "quickstart.ipynb", as_version=4)
    nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    assert (tmp_path / "runs" / "notebook" / "temperature.png").stat().st_size > 5_000
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "| student + KD |" in outputs

"""The main job and the notebook: what a first-time user runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightning_kd.apps.quickstart import format_table, main, run
from tests.helpers import REPO


def test_quickstart_distils_and_reuses_the_teacher(tmp_path, capsys):
    r = run(tmp_path, epochs=40, seed=0)
    assert (tmp_path / "teacher" / "teacher.ckpt").is_file()
    assert Path(r["student_ckpt"]).is_file()
    assert r["teacher"] >= 0.97
    assert r["student_kd"] >= 0.95  # the bar for the distilled student
    assert r["teacher_params"] == 94_186 and r["student_params"] == 2_410
    table = format_table(r)
    assert "| student with KD (same MLP) |" in table and "compression ratio" in table and "39.1x" in table

    # second run: the teacher checkpoint exists, so it is reused, not retrained
    before = (tmp_path / "teacher" / "teacher.ckpt").stat().st_mtime_ns
    main(["--out-dir", str(tmp_path), "--epochs", "2"])
    out = capsys.readouterr().out
    assert "reusing the teacher" in out and "| teacher (SmallCNN 32/64/128) |" in out
    assert (tmp_path / "teacher" / "teacher.ckpt").stat().st_mtime_ns == before


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

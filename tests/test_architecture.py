"""The package's shape holds: layers import what they may, library code has no global side effects, teacher
logic lives in one place, nothing large is committed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

PACKAGE = REPO / "lightning_kd"
# flat modules allowed at the package's top level; cache_build.py is 0.1.0's `python -m lightning_kd.cache_build`
TOP_LEVEL = {"__init__.py", "__main__.py", "cache_build.py"}
PURE_TORCH = ("core", "losses", "models")


def _sources(*parts: str) -> list[Path]:
    return sorted(p for part in parts for p in (PACKAGE / part).rglob("*.py"))


def test_importing_the_pure_layers_loads_no_lightning():
    code = (
        "import sys, lightning_kd.losses, lightning_kd.models, lightning_kd.core; "
        "bad = [m for m in ('lightning', 'torchmetrics', 'pytorch_lightning') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


@pytest.mark.parametrize("path", _sources(*PURE_TORCH), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_pure_layers_import_only_torch(path):
    source = path.read_text()
    assert not re.search(r"^\s*(import|from)\s+(lightning|pytorch_lightning|torchmetrics)\b", source, re.M)
    assert not re.search(r"^\s*from\s+lightning_kd\.(modules|apps|callbacks|data|cache)\b", source, re.M)


def test_no_flat_modules_at_the_top_level():
    assert {p.name for p in PACKAGE.glob("*.py")} == TOP_LEVEL


def test_library_code_changes_no_global_state():
    for path in PACKAGE.rglob("*.py"):
        if path.parent.name == "apps":
            continue  # the entry points may, narrowly
        source = path.read_text()
        assert not re.search(r"warnings\.(filterwarnings|simplefilter)", source), path
        assert "torch.manual_seed(" not in source and "seed_everything(" not in source, path


def test_no_lightning_internals_in_library_code():
    for path in PACKAGE.rglob("*.py"):
        source = path.read_text()
        for private in ("_given_hyperparameters", "fit_loop._", "_data_source", "_logger_connector"):
            assert private not in source, f"{path} reads Lightning's private {private}"


def test_the_teacher_is_frozen_in_one_place():
    hits = [p for p in PACKAGE.rglob("*.py") if "requires_grad_(False)" in p.read_text()]
    assert [p.relative_to(PACKAGE).as_posix() for p in hits] == ["core/teacher.py"]


def test_nothing_large_is_committed():
    try:
        files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    sizes = {
        name: (REPO / name).stat().st_size for name in files.decode().split("\0") if name and (REPO / name).is_file()
    }
    big = {name: size for name, size in sizes.items() if size > 1_000_000}
    assert not big, f"files over 1 MB are committed (data, packages, checkpoints stay out): {big}"

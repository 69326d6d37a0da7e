"""The package's shape holds: layers import what they may, library code has no global side effects, teacher
logic lives in one place, nothing large is committed."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

PACKAGE = REPO / "lightning_kd"
TOP_LEVEL = {"__init__.py", "__main__.py"}  # flat modules allowed at the package's top level
PURE_TORCH = ("core", "losses", "models")

# Which layer may import which (besides itself), low to high. `apps` is the top: it may import every layer.
# Imports anywhere in a file count: at module level, inside functions, under `if TYPE_CHECKING`.
ALLOWED = {
    "models": set(),
    "losses": set(),
    "core": {"losses", "models"},
    "data": {"core", "models"},
    "report": {"core", "losses", "models"},
    "cache": {"core", "data", "losses", "models"},
    "callbacks": {"cache", "core", "data", "losses", "models", "report"},
    "modules": {"cache", "callbacks", "core", "data", "losses", "models"},
    "apps": {"cache", "callbacks", "core", "data", "losses", "models", "modules", "report"},
}


def _root_exports() -> dict[str, str]:
    """The package root's lazy names (``from lightning_kd import X``) and the module that defines each."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign | ast.Assign) and "_EXPORTS" in ast.unparse(node).split("=")[0]:
            return ast.literal_eval(node.value)
    raise AssertionError("lightning_kd/__init__.py has no _EXPORTS table")


def _imported_modules(source: str, module: str) -> list[tuple[int, str]]:
    """``(line, imported lightning_kd module)`` for every import in ``source`` (the file of ``module``), wherever
    it sits; relative imports resolved, ``from lightning_kd import X`` resolved through the root's lazy table."""
    found = []
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            if base == "lightning_kd":
                exports = _root_exports()
                found += [(node.lineno, exports.get(alias.name, "lightning_kd")) for alias in node.names]
            else:
                found += [(node.lineno, base)]
    return [(line, name) for line, name in found if name.split(".")[0] == "lightning_kd"]


def layer_violations(files: dict[str, str]) -> list[str]:
    """Every import in ``files`` (path relative to the package → source) that breaks :data:`ALLOWED`."""
    bad = []
    for rel, source in sorted(files.items()):
        parts = Path(rel).parts
        if len(parts) == 1:
            continue  # the root's lazy table and ``__main__`` (which starts the CLI)
        layer = parts[0]
        if layer not in ALLOWED:
            bad.append(f"{rel}: layer {layer!r} is not in the layer table; add it to ALLOWED with what it may import")
            continue
        module = "lightning_kd." + ".".join(Path(rel).with_suffix("").parts)
        for line, name in _imported_modules(source, module):
            target = name.split(".")[1] if name.count(".") else None
            if target is None or target == layer or target.startswith("__"):
                continue
            if target not in ALLOWED[layer]:
                bad.append(f"{rel}:{line} imports {name} ({layer} may import {sorted(ALLOWED[layer]) or 'nothing'})")
    return bad


def _package_files() -> dict[str, str]:
    return {p.relative_to(PACKAGE).as_posix(): p.read_text() for p in PACKAGE.rglob("*.py")}


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


def test_every_layer_imports_only_the_layers_below_it():
    assert layer_violations(_package_files()) == []


def test_an_upward_import_inside_a_function_is_caught():
    files = _package_files()
    planted = files["core/batch.py"] + "\n\ndef _late():\n    from lightning_kd.apps.cli import build_cli\n"
    planted_relative = files["losses/logit/kd.py"] + "\n\ndef _late():\n    from ...modules import common\n"
    planted_root = files["data/base.py"] + "\n\ndef _late():\n    from lightning_kd import DistillationModule\n"
    bad = layer_violations(
        {**files, "core/batch.py": planted, "losses/logit/kd.py": planted_relative, "data/base.py": planted_root}
    )
    assert len(bad) == 3, bad
    assert bad[0].startswith("core/batch.py:") and "imports lightning_kd.apps.cli" in bad[0]
    assert "data/base.py:" in bad[1] and "imports lightning_kd.modules.distillation" in bad[1]
    assert "losses/logit/kd.py:" in bad[2] and "imports lightning_kd.modules" in bad[2]


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

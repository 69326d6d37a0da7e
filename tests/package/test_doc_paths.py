"""Every recipe, study and pipeline file the README and the docs name exists (a renamed recipe breaks a user's
copy-pasted command first)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PATH = re.compile(r"configs/[\w./-]+\.ya?ml")


def test_every_named_config_file_exists():
    missing = {}
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        names = set(PATH.findall(doc.read_text()))
        gone = sorted(n for n in names if not (REPO / n).is_file())
        if gone:
            missing[doc.name] = gone
    assert not missing, f"named but not in the repository: {missing}"

"""docs/reproducibility.md stays true: every command names recipes that exist, and each pair's study runs the
methods its card lists."""

from __future__ import annotations

import re

import yaml

from tests.helpers import REPO


def test_every_recipe_a_card_names_exists_and_the_studies_run_the_cards_methods():
    text = (REPO / "docs" / "reproducibility.md").read_text()
    named = set(re.findall(r"configs/[\w/]+\.yaml", text))
    assert named and all((REPO / path).is_file() for path in named), sorted(
        p for p in named if not (REPO / p).is_file()
    )
    for study_path in sorted(n for n in named if n.startswith("configs/studies/cifar100_")):
        study = yaml.safe_load((REPO / study_path).read_text())
        pair = study_path.split("cifar100_")[1].removesuffix(".yaml")
        carded = set(re.findall(rf"configs/cifar100/{pair}/(\w+)\.yaml", text)) - {"base", "teacher"}
        assert carded == set(study["runs"]), (pair, carded ^ set(study["runs"]))
    assert text.count("| – |") >= 24  # no figure of ours is claimed before a GPU has run it

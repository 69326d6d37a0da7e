"""Tuning inside ``lightning-kd seeds``: a run may declare a small ``grid`` of settings; each point is fitted on one
seed and scored on the *validation* split, the best point is chosen, and only that point runs on the other seeds.

    tune: {metric: val/acc, mode: max, seed: 0, extend: 0}   # the defaults
    runs:
      at:
        configs: [configs/fashion_mnist_cpu/base.yaml, configs/fashion_mnist/at.yaml]
        grid:                                            # dotted paths into the run's merged recipe (list items by
          model.init_args.feature_terms.0.init_args.weight: [100, 300, 1000, 3000]   # index); the points are
          model.init_args.temperature: [4.0]            # the product of the lists (at most ``max_points``)

A point reaches the fit as one more ``--config`` given as an inline YAML string (jsonargparse reads a string
where a file is expected), holding the changed values: a list the path goes through is written whole, with its
one item changed, because a later config replaces a list rather than merging it. The printed commands therefore
reproduce the point without any file of the runner's.

``extend: n`` (a one-path grid of positive numbers): while the best point lies at the grid's edge, one more point
is fitted beyond it, a step of the same ratio as the edge's last step (``[10, 100, 1000]`` with the best at 10 adds
1), at most ``n`` times — a grid whose best is its smallest weight has not found the best weight yet. The table
lists the added points beside the declared ones.

Layout: ``<out>/<run>/grid/<point>/seed_<s>/`` (a point's tuning fit *is* its ``seed`` run: the chosen point's
tuning seed is reused, not refitted), and ``<out>/<run>/tuning.json`` (every point's validation figure, the
choice). The table reads the chosen point's seeds. A study that evaluates on its validation split (``evaluate:
validate``) cannot tune: the choice would be made on the figures it reports.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
from pathlib import Path
from typing import Any

import yaml

from lightning_kd.apps.seeds_run import diverged

MAX_POINTS = 8
TUNE_KEYS = {"metric", "mode", "seed", "max_points", "extend"}


def tune_settings(study: dict[str, Any], where: str) -> dict[str, Any]:
    """The study's ``tune`` block with its defaults; errors name the key."""
    tune = dict(study.get("tune") or {})
    unknown = sorted(set(tune) - TUNE_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown tune keys {unknown}; tune takes {sorted(TUNE_KEYS)}.")
    tune.setdefault("metric", "val/acc")
    tune.setdefault("mode", "max")
    tune.setdefault("seed", (study.get("seeds") or [0])[0])
    tune.setdefault("max_points", MAX_POINTS)
    tune.setdefault("extend", 0)
    if not isinstance(tune["extend"], int) or isinstance(tune["extend"], bool) or tune["extend"] < 0:
        raise ValueError(f"{where}: tune extend must be a whole number >= 0 (points added beyond the grid's edge), "
                         f"got {tune['extend']!r}.")  # fmt: skip
    if tune["mode"] not in ("max", "min"):
        raise ValueError(f"{where}: tune mode must be 'max' or 'min', got {tune['mode']!r}.")
    if not str(tune["metric"]).startswith("val/"):
        raise ValueError(
            f"{where}: tune metric {tune['metric']!r} is not a validation metric; settings are chosen on the "
            "validation split only (e.g. val/acc)."
        )
    return tune


def check_grids(study: dict[str, Any], where: str) -> None:
    """Refuse grids the runner cannot honour, naming the run: on a pipeline, on a study scored on its validation
    split, empty lists, or more points than ``tune.max_points``."""
    grids = {name: run["grid"] for name, run in study["runs"].items() if "grid" in run}
    if not grids:
        return
    tune = tune_settings(study, where)
    study["tune"] = tune
    if study.get("evaluate", "test") != "test":
        raise ValueError(
            f"{where}: runs {sorted(grids)} declare a grid, but the study evaluates on its validation split "
            "(evaluate: validate); a setting chosen on the figures it reports is not a tuned result. Tune on a "
            "study with a test split, or drop the grids."
        )
    for name, grid in grids.items():
        run = study["runs"][name]
        if "pipeline" in run:
            raise ValueError(f"{where}: run {name!r} is a pipeline; a grid needs `configs:`.")
        if not isinstance(grid, dict) or not grid or not all(isinstance(v, list) and v for v in grid.values()):
            raise ValueError(f"{where}: run {name!r}: grid maps dotted recipe paths to non-empty lists of values.")
        count = math.prod(len(v) for v in grid.values())
        added = tune["extend"] if extensible(grid) else 0
        if count + added > tune["max_points"]:
            raise ValueError(
                f"{where}: run {name!r}: the grid has {count} points"
                + (f" and up to {added} added beyond its edge (tune.extend)" if added else "")
                + f", more than tune.max_points = {tune['max_points']}; shorten the lists (or raise max_points "
                "knowingly)."
            )
        merged = merged_recipe(run["configs"])
        for key in grid:
            for path in paths(key):
                _walk(merged, path, f"{where}: run {name!r}")


def paths(key: str) -> list[str]:
    """The recipe paths of a grid key: one dotted path, or several joined by ``,`` that take the same value
    (e.g. the weights of VID's three feature terms)."""
    return [p.strip() for p in key.split(",") if p.strip()]


def points(run: dict[str, Any]) -> list[dict[str, Any]]:
    """The grid's points in declared order (the product of the lists; the first key varies slowest)."""
    grid = run.get("grid") or {}
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def label(point: dict[str, Any]) -> str:
    """A folder name for a point: ``<last path part>=<value>`` joined by ``,``; the part before it too when two
    paths end alike."""
    parts = []
    firsts = [paths(key)[0] for key in point]
    lasts = [p.split(".")[-1] for p in firsts]
    for path, value in zip(firsts, point.values()):
        name = path.split(".")[-1]
        if lasts.count(name) > 1:
            name = ".".join(path.split(".")[-2:])
        parts.append(f"{name}={value}")
    return re.sub(r"[^A-Za-z0-9_.=,+-]", "_", ",".join(parts))


def _merge(base: Any, top: Any) -> Any:
    if isinstance(base, dict) and isinstance(top, dict):
        out = dict(base)
        for key, value in top.items():
            out[key] = _merge(base.get(key), value) if key in base else value
        return out
    return top


def merged_recipe(configs: list[str]) -> dict[str, Any]:
    """The run's YAML files merged in order (mappings merged, lists and values replaced: jsonargparse's rule)."""
    merged: dict[str, Any] = {}
    for path in configs:
        merged = _merge(merged, yaml.safe_load(Path(path).read_text()) or {})
    return merged


def _walk(tree: Any, path: str, where: str) -> list[tuple[Any, str | int]]:
    """The (container, key) pairs along a dotted path; an error names the first part that is not there."""
    steps, node = [], tree
    names = path.split(".")
    for i, part in enumerate(names):
        key: str | int = int(part) if isinstance(node, list) and part.isdigit() else part
        there = key in node if isinstance(node, dict) else isinstance(key, int) and key < len(node)
        if isinstance(node, dict) and i == len(names) - 1:  # a value the recipe leaves at its default
            steps.append((node, key))
            break
        if isinstance(node, (dict, list)) and there:
            steps.append((node, key))
            node = node[key]
        else:
            done = ".".join(names[:i])
            raise ValueError(
                f"{where}: grid path {path!r}: {part!r} is not in the merged recipe"
                + (f" under {done!r}" if done else "")
                + "; name a value the recipe sets, or a new key of a mapping it sets (list items by index, e.g. "
                "feature_terms.0.init_args.weight)."
            )
    return steps


def overlay(configs: list[str], point: dict[str, Any]) -> dict[str, Any]:
    """The smallest recipe fragment that sets the point's values: the merged recipe's mappings down to each path,
    a list on the way written whole (with every change of the point applied to it)."""
    changed = copy.deepcopy(merged_recipe(configs))
    for key_, value in point.items():
        for path in paths(key_):
            container, key = _walk(changed, path, "grid")[-1]
            container[key] = value
    out: dict[str, Any] = {}
    for path in (p for key_ in point for p in paths(key_)):
        parts = path.split(".")
        src, dst = changed, out
        for i, part in enumerate(parts):
            value = src[part]
            if i == len(parts) - 1 or isinstance(value, list):
                dst[part] = copy.deepcopy(value)  # the value itself, or the whole list it lies in
                break
            src, dst = value, dst.setdefault(part, {})
    return out


def point_run(run: dict[str, Any], point: dict[str, Any]) -> dict[str, Any]:
    """The run with the point's values appended as an inline ``--config``."""
    inline = json.dumps(overlay(run["configs"], point), separators=(", ", ": "))
    return {**{k: v for k, v in run.items() if k != "grid"}, "args": [*run.get("args", []), "--config", inline]}


def point_dir(out: Path, name: str, point: dict[str, Any]) -> Path:
    return out / name / "grid" / label(point)


def extensible(grid: dict[str, list]) -> bool:
    """A grid ``extend`` may widen: one key, two values at least, every value a positive number."""
    if len(grid) != 1:
        return False
    values = next(iter(grid.values()))
    return len(values) >= 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in values
    )


def _score(tune: dict[str, Any], out: Path, name: str, point: dict[str, Any]) -> float | None:
    """A point's validation figure on the tuning seed; NaN: its fit diverged; None: not finished."""
    result_file = point_dir(out, name, point) / f"seed_{tune['seed']}" / "result.json"
    result = json.loads(result_file.read_text()) if result_file.is_file() else {}
    if diverged(result):
        return math.nan  # the setting diverged: it ranks last, and the others are still compared
    return (result.get("metrics") or {}).get(tune["metric"]) if result.get("status") == "ok" else None


def _best(tune: dict[str, Any], pts: list[dict[str, Any]], scores: list[float]) -> dict[str, Any]:
    sign = 1 if tune["mode"] == "max" else -1
    ranks = [-math.inf if math.isnan(float(v)) else sign * float(v) for v in scores]  # diverged: last
    return pts[ranks.index(max(ranks))]  # the first of equals


def all_points(study: dict[str, Any], out: Path, name: str) -> list[dict[str, Any]]:
    """The declared points, then those ``tune.extend`` adds beyond the edge the best point lies on (each added once
    every earlier point has its tuning figure)."""
    tune, run = study["tune"], study["runs"][name]
    pts = points(run)
    grid = run.get("grid") or {}
    if not tune.get("extend") or not extensible(grid):
        return pts
    key = next(iter(grid))
    for _ in range(tune["extend"]):
        scores = [_score(tune, out, name, p) for p in pts]
        if any(v is None for v in scores):
            break
        best = _best(tune, pts, scores)[key]
        ordered = sorted(p[key] for p in pts)
        if best not in (ordered[0], ordered[-1]):
            break  # inside the grid: found
        edge, inner = (ordered[0], ordered[1]) if best == ordered[0] else (ordered[-1], ordered[-2])
        new = float(f"{edge * edge / inner:.6g}")  # one more step of the edge's own ratio
        if any(p[key] == new for p in pts):
            break
        pts.append({key: new})
    return pts


def choose(study: dict[str, Any], out: Path, name: str) -> dict[str, Any] | None:
    """Score every point of ``name`` (those ``tune.extend`` added too) on the tuning seed's validation metric and
    pick the best (the first declared on a tie); writes ``<out>/<name>/tuning.json``. ``None`` while a point has
    no finished tuning seed."""
    tune, run = study["tune"], study["runs"][name]
    pts = all_points(study, out, name)
    scores: dict[str, float | None] = {label(p): _score(tune, out, name, p) for p in pts}
    if not scores or any(v is None for v in scores.values()):
        return None
    best = _best(tune, pts, [float(v) for v in scores.values()])  # type: ignore[arg-type]
    added = pts[len(points(run)) :]
    grid = {k: [*v, *(p[k] for p in added)] for k, v in run["grid"].items()}
    choice = {
        "metric": tune["metric"],
        "mode": tune["mode"],
        "seed": tune["seed"],
        "grid": grid,
        "declared": run["grid"],
        "extended": added,
        "scores": scores,
        "chosen": best,
        "label": label(best),
    }
    (out / name).mkdir(parents=True, exist_ok=True)
    (out / name / "tuning.json").write_text(json.dumps(choice, indent=2, default=str))
    return choice


def chosen(out: Path, name: str, run: dict[str, Any]) -> dict[str, Any] | None:
    """The recorded choice of a tuned run, if it is one of the grid's current points."""
    path = out / name / "tuning.json"
    if not path.is_file():
        return None
    choice = json.loads(path.read_text())
    known = points(run)
    if choice.get("declared", run["grid"]) == run["grid"]:  # points added beyond this same grid's edge
        known += choice.get("extended") or []
    return choice if choice.get("label") in {label(p) for p in known} else None


def seeds_dir(out: Path, name: str, run: dict[str, Any]) -> Path | None:
    """Where the table reads a run's seeds: ``<out>/<run>``, or the chosen point's folder (None: not chosen)."""
    if "grid" not in run:
        return out / name
    choice = chosen(out, name, run)
    return out / name / "grid" / choice["label"] if choice else None

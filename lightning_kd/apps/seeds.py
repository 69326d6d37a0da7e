"""Run recipes over several seeds and write one table: ``lightning-kd seeds``.

    lightning-kd seeds configs/studies/fashion_mnist_cpu.yaml                  # a study file (see configs/studies/)
    lightning-kd seeds configs/studies/fashion_mnist_cpu.yaml --part 1         # one of its parts (<= 30 min each)
    lightning-kd seeds --recipe student=configs/digits/base.yaml,configs/digits/student.yaml \\
                       --recipe kd=configs/digits/base.yaml,configs/digits/kd.yaml --baseline student --seeds 0 1 2

Each (run, seed) is ``fit`` then ``test`` of the published model, in a subprocess of its own, writing into
``<out>/<run>/seed_<s>/`` (logs, checkpoints, ``result.json``, ``log.txt``). A finished seed is not rerun; a failed
one is reported (``status: failed`` and the error) and left out of every mean, and is retried by the next
invocation. Parts and several invocations may run side by side: a seed being run holds a lock file. The table —
mean ± std over seeds of each test metric, every seed's figure, the paired per-seed difference against the
baseline (same seed), training time and the exact commands — is written to ``<out>/results.md``, ``.json`` and
``.csv`` (and ``results.png`` with matplotlib); hand-written docs are never edited.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from lightning_kd.apps.seeds_run import commands, fit_args, run_seed, worker  # noqa: F401 - fit_args: public
from lightning_kd.apps.seeds_table import atomic_write, write_tables
from lightning_kd.apps.seeds_tune import all_points, check_grids, choose, label, point_dir, point_run

RUN_KEYS = {"configs", "pipeline", "args", "grid"}
STUDY_KEYS = {
    "name",
    "seeds",
    "baseline",
    "metrics",
    "setup",
    "runs",
    "parts",
    "args",
    "out_dir",
    "description",
    "evaluate",
    "tune",
    "against",
}


def read_study(path: str | os.PathLike) -> dict[str, Any]:
    """A study file: ``runs`` (name -> ``{configs: [...]}`` or ``{pipeline: file}``, optional ``args``), ``seeds``,
    ``baseline``, ``metrics``, ``setup`` (commands run once before the runs, skipped when ``creates`` exists),
    ``parts`` (name -> run names), ``args`` (passed to every run), ``out_dir``, ``against`` (run -> runs paired
    with it in a further table, e.g. ``kd: [at_kd]``), ``evaluate`` (``test``, the
    default, or ``validate`` for data without a test split, e.g. language models' held-out files)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"study file {str(path)!r} does not exist; see configs/studies/ for examples.")
    study = yaml.safe_load(path.read_text()) or {}
    if not isinstance(study, dict) or not isinstance(study.get("runs"), dict) or not study["runs"]:
        raise ValueError(f"{path}: a study needs `runs:` mapping names to {{configs: [...]}} or {{pipeline: file}}.")
    unknown = sorted(set(study) - STUDY_KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown}; a study takes {sorted(STUDY_KEYS)}.")
    study.setdefault("name", path.stem)
    return check_study(study, str(path))


def check_study(study: dict[str, Any], where: str) -> dict[str, Any]:
    for name, run in study["runs"].items():
        if not isinstance(run, dict) or (("configs" in run) == ("pipeline" in run)):
            raise ValueError(f"{where}: run {name!r} needs exactly one of configs: [files] or pipeline: file.")
        files = run.get("configs") or [run.get("pipeline")]
        missing = [f for f in files if not Path(f).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{where}: run {name!r} names {missing}, which do not exist (paths are relative to {Path.cwd()})."
            )
    baseline = study.get("baseline")
    if baseline is not None and baseline not in study["runs"]:
        raise ValueError(f"{where}: baseline {baseline!r} is not one of the runs {sorted(study['runs'])}.")
    for part, names in (study.get("parts") or {}).items():
        bad = [n for n in names if n not in study["runs"]]
        if bad:
            raise ValueError(f"{where}: part {part!r} names unknown runs {bad}; runs are {sorted(study['runs'])}.")
    against = study.get("against") or {}
    if not isinstance(against, dict) or not all(isinstance(v, list) for v in against.values()):
        raise ValueError(f"{where}: against must map a run to a list of runs compared with it, got {against!r}.")
    bad = sorted({n for ref, names in against.items() for n in [ref, *names] if n not in study["runs"]})
    if bad:
        raise ValueError(f"{where}: against names unknown runs {bad}; runs are {sorted(study['runs'])}.")
    if study.get("evaluate", "test") not in ("test", "validate"):
        raise ValueError(f"{where}: evaluate must be 'test' or 'validate', got {study['evaluate']!r}.")
    study.setdefault("evaluate", "test")
    study.setdefault("seeds", [0, 1, 2])
    study.setdefault("metrics", ["test/acc"])
    unknown = {n: sorted(set(r) - RUN_KEYS) for n, r in study["runs"].items() if set(r) - RUN_KEYS}
    if unknown:
        raise ValueError(f"{where}: unknown run keys {unknown}; a run takes {sorted(RUN_KEYS)}.")
    check_grids(study, where)
    return study


def study_from_recipes(recipes: Sequence[str], baseline: str | None) -> dict[str, Any]:
    """``name=file1,file2`` strings as a study."""
    runs = {}
    for item in recipes:
        name, sep, files = item.partition("=")
        if not sep or not files:
            raise ValueError(f"--recipe {item!r}: write it as name=config1.yaml,config2.yaml.")
        runs[name] = {"configs": files.split(",")}
    return check_study({"name": "recipes", "runs": runs, "baseline": baseline}, "--recipe")


# -- the study ---------------------------------------------------------------------------------------------------
def run_setup(study: dict[str, Any]) -> None:
    """The study's one-off commands (e.g. train the teacher), each skipped when what it ``creates`` exists."""
    for step in study.get("setup") or []:
        creates = step.get("creates")
        if creates and Path(creates).exists():
            print(f"[seeds] setup {step['name']}: {creates} exists, skipped", flush=True)
            continue
        command = [sys.executable, "-m", "lightning_kd", *step["command"]]
        print(f"[seeds] setup {step['name']}: lightning-kd {shlex.join(step['command'])}", flush=True)
        subprocess.run(command, check=True)
        if creates and not Path(creates).exists():
            raise RuntimeError(f"setup step {step['name']!r} ran but did not create {creates}; check its command.")


def run_study(
    study: dict[str, Any],
    out: Path,
    names: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    extra: Sequence[str] = (),
    again: bool = False,
) -> dict[str, Any]:
    """Run the study's runs (``names``; default all) over ``seeds`` (default the study's), then write the tables;
    ``again``: finished fits are evaluated again (their models, not refitted)."""
    seeds = list(seeds if seeds is not None else study["seeds"])
    names = list(names or study["runs"])
    run_setup(study)
    extra = [*study.get("args", []), *extra]
    for name in names:
        run = study["runs"][name]
        if "grid" not in run:
            for seed in seeds:
                evaluate = study.get("evaluate", "test")
                run_seed(name, run, seed, out / name / f"seed_{seed}", extra, evaluate, again=again)
            continue
        # tuning: every point on the tuning seed, scored on validation; then the chosen point on every seed
        tune_seed = study["tune"]["seed"]
        tried: set[str] = set()
        while pending := [p for p in all_points(study, out, name) if label(p) not in tried]:  # may grow: extend
            point = pending[0]
            tried.add(label(point))
            run_seed(name, point_run(run, point), tune_seed, point_dir(out, name, point) / f"seed_{tune_seed}",
                      extra, "test", also_validate=True, again=again)  # fmt: skip
        choice = choose(study, out, name)
        if choice is None:
            print(f"[seeds] {name}: a grid point has no finished tuning seed; nothing chosen yet", flush=True)
            continue
        print(f"[seeds] {name}: chose {choice['label']} ({choice['metric']} on seed {tune_seed})", flush=True)
        folder = point_dir(out, name, choice["chosen"])
        for seed in seeds:
            run_seed(name, point_run(run, choice["chosen"]), seed, folder / f"seed_{seed}", extra, "test",
                      also_validate=True, again=again)  # fmt: skip
    return write_tables(study, out, seeds)


def insert_table(path: Path, name: str, markdown: str, out: Path) -> None:
    """Replace what lies between ``<!-- seeds-table: name -->`` and the next ``<!-- /seeds-table -->`` in ``path``
    with ``markdown`` (a document's tables come from the runner, never from a hand edit); the commands block stays
    in ``out/results.md``, which the document names instead."""
    markdown = markdown.split("\nCommands (the first seed", 1)[0].rstrip()
    markdown += f"\n\nEvery fit's commands: `{out / 'results.md'}` (written by the same run)."
    begin, end = f"<!-- seeds-table: {name} -->", "<!-- /seeds-table -->"
    if not path.is_file():
        raise SystemExit(f"seeds --into {path}: no such file")
    text = path.read_text()
    if text.count(begin) != 1:
        raise SystemExit(
            f"seeds --into {path}: the file has {text.count(begin)} line(s) '{begin}' (needs exactly one, followed "
            f"later by '{end}'); add the two lines where the table of study {name!r} belongs"
        )
    head, rest = text.split(begin, 1)
    if end not in rest:
        raise SystemExit(f"seeds --into {path}: '{begin}' has no '{end}' after it; add it where the table ends")
    tail = rest.split(end, 1)[1]
    atomic_write(path, f"{head}{begin}\n\n{markdown.strip()}\n\n{end}{tail}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("study", nargs="?", help="a study YAML file (configs/studies/)")
    parser.add_argument("--recipe", action="append", default=[], help="name=config1.yaml,config2.yaml (repeatable)")
    parser.add_argument("--baseline", default=None, help="the run the others are compared with, seed by seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default: the study's (or 0 1 2)")
    parser.add_argument("--only", default=None, help="comma-separated run names")
    parser.add_argument("--part", default=None, help="one of the study's parts")
    parser.add_argument("--out", default=None, help="output folder (default: the study's out_dir or runs/seeds/<name>)")
    parser.add_argument("--table-only", action="store_true", help="rewrite the tables from the results so far")
    parser.add_argument(
        "--into",
        default=None,
        metavar="FILE.md",
        help="also put the table into FILE.md, between its '<!-- seeds-table: NAME -->' and '<!-- /seeds-table -->' "
        "lines (NAME: the study's name); the rest of the file is left as it is",
    )
    parser.add_argument(
        "--re-evaluate",
        action="store_true",
        help="evaluate the finished fits' models again (after a metric was added or the evaluation fixed): the fits "
        "are kept, their metrics updated; unfinished ones are fitted as usual",
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.epilog = "Any other argument (e.g. --trainer.max_epochs=5) is passed to every run's fit."
    args, extra = parser.parse_known_args(argv)
    if args.worker is not None:
        return worker(args.worker)
    if (args.study is None) == (not args.recipe):
        parser.error("give a study file or --recipe name=files (not both)")
    study = read_study(args.study) if args.study else study_from_recipes(args.recipe, args.baseline)
    if args.baseline and args.study:
        study = check_study({**study, "baseline": args.baseline}, args.study)
    names = args.only.split(",") if args.only else None
    if args.part is not None:
        parts = study.get("parts") or {}
        if args.part not in map(str, parts):
            parser.error(f"--part {args.part}: the study's parts are {sorted(map(str, parts)) or 'none'}")
        names = next(v for k, v in parts.items() if str(k) == args.part)
    unknown = [n for n in names or [] if n not in study["runs"]]
    if unknown:
        parser.error(f"unknown runs {unknown}; the study has {sorted(study['runs'])}")
    out = Path(args.out or study.get("out_dir") or f"runs/seeds/{study['name']}")
    seeds = args.seeds if args.seeds is not None else study["seeds"]
    extra = [a for a in extra if a != "--"]
    if args.table_only:
        table = write_tables(study, out, seeds)
    else:
        table = run_study(study, out, names, seeds, extra, args.re_evaluate)
    print(table["markdown"])
    print(f"\n[seeds] tables: {out / 'results.md'} (.json, .csv)")
    if args.into:
        insert_table(Path(args.into), study["name"], table["markdown"], out)
        print(f"[seeds] table put into {args.into} (between its seeds-table markers for {study['name']!r})")


if __name__ == "__main__":  # pragma: no cover
    main()

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
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from lightning_kd.apps.seeds_table import write_tables

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
}


def read_study(path: str | os.PathLike) -> dict[str, Any]:
    """A study file: ``runs`` (name -> ``{configs: [...]}`` or ``{pipeline: file}``, optional ``args``), ``seeds``,
    ``baseline``, ``metrics``, ``setup`` (commands run once before the runs, skipped when ``creates`` exists),
    ``parts`` (name -> run names), ``args`` (passed to every run), ``out_dir``, ``evaluate`` (``test``, the
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
    if study.get("evaluate", "test") not in ("test", "validate"):
        raise ValueError(f"{where}: evaluate must be 'test' or 'validate', got {study['evaluate']!r}.")
    study.setdefault("evaluate", "test")
    study.setdefault("seeds", [0, 1, 2])
    study.setdefault("metrics", ["test/acc"])
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


def fit_args(run: dict[str, Any], seed: int, run_dir: Path, extra: Sequence[str]) -> list[str]:
    """The ``lightning-kd fit`` arguments of one (run, seed)."""
    args = [a for c in run["configs"] for a in ("--config", str(c))]
    args += [f"--seed_everything={seed}", f"--trainer.default_root_dir={run_dir}"]
    args += ["--checkpoint.dirpath=null", f"--checkpoint.publish_to={run_dir / 'model.ckpt'}"]
    return [*args, *run.get("args", []), *extra]


def commands(run: dict[str, Any], seed: int, run_dir: Path, extra: Sequence[str], evaluate: str = "test") -> list[str]:
    """The shell commands that reproduce one (run, seed)."""
    if "pipeline" in run:
        args = [run["pipeline"], f"--out-dir={run_dir}", f"--seed_everything={seed}", *run.get("args", []), *extra]
        return ["lightning-kd pipeline " + shlex.join(args)]
    args = fit_args(run, seed, run_dir, extra)
    test = [a for c in run["configs"] for a in ("--config", str(c))]
    test += [f"--seed_everything={seed}", f"--ckpt_path={run_dir / 'model.ckpt'}"]
    test += [*run.get("args", []), *extra]  # the evaluation reads the same data and model settings as the fit
    return ["lightning-kd fit " + shlex.join(args), f"lightning-kd {evaluate} " + shlex.join(test)]


# -- one (run, seed), in its own process ------------------------------------------------------------------------
def run_one(spec: dict[str, Any]) -> dict[str, Any]:
    """Fit and test one (run, seed) in this process; returns the test metrics and timings."""
    from lightning_kd.apps.cli import build_cli

    run, seed, run_dir = spec["run"], spec["seed"], Path(spec["run_dir"])
    start = time.perf_counter()
    if "pipeline" in run:
        from lightning_kd.apps.pipeline import run_pipeline

        stages = run_pipeline(
            run["pipeline"], [f"--seed_everything={seed}", *run.get("args", []), *spec["extra"]], run_dir
        )
        last = stages[-1]
        return {"metrics": {"test/acc": last["test_acc"]}, "fit_seconds": time.perf_counter() - start, "stages": stages}
    cli = build_cli(fit_args(run, seed, run_dir, spec["extra"]), run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    fit_seconds = time.perf_counter() - start
    target = run_dir / "model.ckpt"
    if not target.is_file():
        raise RuntimeError(
            f"the fit published no model at {target}; keep the `checkpoint:` settings of the base recipe."
        )
    evaluate = cli.trainer.validate if spec.get("evaluate") == "validate" else cli.trainer.test
    test = evaluate(cli.model, datamodule=cli.datamodule, ckpt_path=str(target), verbose=False)[0]
    metrics = {k: float(v) for k, v in test.items()}
    return {"metrics": metrics, "fit_seconds": fit_seconds, "test_seconds": time.perf_counter() - start - fit_seconds}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def _worker(spec_json: str) -> None:
    spec = json.loads(spec_json)
    run_dir = Path(spec["run_dir"])
    result: dict[str, Any] = {"run": spec["name"], "seed": spec["seed"], "commands": spec["commands"]}
    try:
        result.update(run_one(spec), status="ok")
    except BaseException as err:  # noqa: BLE001 - a failed seed is reported, whatever failed
        result.update(status="failed", error=f"{type(err).__name__}: {err}")
        _write_json(run_dir / "result.json", result)
        raise
    _write_json(run_dir / "result.json", result)


# -- the study ---------------------------------------------------------------------------------------------------
def _locked(run_dir: Path) -> Path | None:
    """Take ``run_dir/.lock`` (None: another live process holds it)."""
    lock = run_dir / ".lock"
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            os.kill(int(lock.read_text() or 0), 0)
            return None  # its owner is alive
        except (OSError, ValueError):
            lock.unlink(missing_ok=True)  # a dead owner's lock
            return _locked(run_dir)
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return lock


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
) -> dict[str, Any]:
    """Run the study's runs (``names``; default all) over ``seeds`` (default the study's), then write the tables."""
    seeds = list(seeds if seeds is not None else study["seeds"])
    names = list(names or study["runs"])
    run_setup(study)
    extra = [*study.get("args", []), *extra]
    for name in names:
        run = study["runs"][name]
        for seed in seeds:
            run_dir = out / name / f"seed_{seed}"
            result_file = run_dir / "result.json"
            if result_file.is_file() and json.loads(result_file.read_text()).get("status") == "ok":
                print(f"[seeds] {name} seed {seed}: done before, kept", flush=True)
                continue
            run_dir.mkdir(parents=True, exist_ok=True)
            lock = _locked(run_dir)
            if lock is None:
                print(f"[seeds] {name} seed {seed}: running in another process, skipped", flush=True)
                continue
            try:
                spec = {"name": name, "run": run, "seed": seed, "run_dir": str(run_dir), "extra": list(extra)}
                spec["evaluate"] = study.get("evaluate", "test")
                spec["commands"] = commands(run, seed, run_dir, extra, spec["evaluate"])
                print(f"[seeds] {name} seed {seed}: {spec['commands'][0]}", flush=True)
                start = time.perf_counter()
                with open(run_dir / "log.txt", "w") as log:
                    code = subprocess.run(
                        [sys.executable, "-m", "lightning_kd.apps.seeds", "--worker", json.dumps(spec)],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    ).returncode
                status = "ok" if code == 0 else f"FAILED (exit {code}; see {run_dir / 'log.txt'})"
                print(f"[seeds] {name} seed {seed}: {status} in {time.perf_counter() - start:.0f} s", flush=True)
                if code != 0 and not result_file.is_file():
                    _write_json(result_file, {"run": name, "seed": seed, "status": "failed", "error": f"exit {code}"})
            finally:
                lock.unlink(missing_ok=True)
    return write_tables(study, out, seeds)


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
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.epilog = "Any other argument (e.g. --trainer.max_epochs=5) is passed to every run's fit."
    args, extra = parser.parse_known_args(argv)
    if args.worker is not None:
        return _worker(args.worker)
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
    table = write_tables(study, out, seeds) if args.table_only else run_study(study, out, names, seeds, extra)
    print(table["markdown"])
    print(f"\n[seeds] tables: {out / 'results.md'} (.json, .csv)")


if __name__ == "__main__":  # pragma: no cover
    main()

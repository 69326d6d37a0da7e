"""One (run, seed) of ``lightning-kd seeds``: ``fit`` then the evaluation of the published model, in a subprocess
of its own (``python -m lightning_kd.apps.seeds_run --worker <spec>``), writing ``result.json`` and ``log.txt``
into its folder; a folder being run holds a lock file, so parts may run side by side."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


# -- one (run, seed), in its own process ------------------------------------------------------------------------
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
    if not spec.get("evaluate_only"):
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
    if spec.get("also_validate"):  # a tuned run: the published model's validation figures choose the setting
        val = cli.trainer.validate(cli.model, datamodule=cli.datamodule, ckpt_path=str(target), verbose=False)[0]
        metrics.update({k: float(v) for k, v in val.items() if k not in metrics})
    return {"metrics": metrics, "fit_seconds": fit_seconds, "test_seconds": time.perf_counter() - start - fit_seconds}


def environment() -> dict[str, Any]:
    """What a fit's figures depend on beyond its recipe: torch's thread count (``OMP_NUM_THREADS`` or the cores),
    the torch / Lightning / lightning-kd versions and the commit."""
    import torch

    from lightning_kd.apps.quickstart import provenance

    return {"threads": torch.get_num_threads(), **provenance()}


def recipe_digest(run: dict[str, Any], extra: Sequence[str]) -> str:
    """A digest of what a (run, seed) fits: its config files' bytes (a pipeline: its file's), its arguments and the
    study's; a result made from another digest is not this recipe's."""
    digest = hashlib.sha256()
    for path in [*run.get("configs", []), *([run["pipeline"]] if "pipeline" in run else [])]:
        digest.update(Path(path).read_bytes() if Path(path).is_file() else str(path).encode())
    digest.update(json.dumps([list(run.get("args", [])), list(extra)]).encode())
    return digest.hexdigest()[:16]


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def re_evaluate(spec: dict[str, Any]) -> None:
    """Evaluate a finished fit's published model again (``seeds --re-evaluate``: after a metric was added to the
    module, or a fix to the evaluation): the fit is kept, its metrics are updated, and the evaluation's own
    environment is recorded beside the fit's."""
    result_file = Path(spec["run_dir"]) / "result.json"
    result = json.loads(result_file.read_text())
    out = run_one({**spec, "evaluate_only": True})
    result["metrics"] = {**result.get("metrics", {}), **out["metrics"]}
    result["re_evaluated"] = {"environment": environment(), "seconds": out["test_seconds"]}
    _write_json(result_file, result)


def worker(spec_json: str) -> None:
    spec = json.loads(spec_json)
    if spec.get("evaluate_only"):
        return re_evaluate(spec)
    run_dir = Path(spec["run_dir"])
    result: dict[str, Any] = {"run": spec["name"], "seed": spec["seed"], "commands": spec["commands"]}
    result["recipe"] = spec.get("recipe")
    result["environment"] = environment()
    try:
        result.update(run_one(spec), status="ok")
    except BaseException as err:  # noqa: BLE001 - a failed seed is reported, whatever failed
        result.update(status="failed", error=f"{type(err).__name__}: {err}")
        _write_json(run_dir / "result.json", result)
        raise
    _write_json(run_dir / "result.json", result)


def _locked(run_dir: Path) -> Path | None:
    """Take ``run_dir/.lock`` (None: another live process holds it)."""
    lock = run_dir / ".lock"
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        if _locked_by_other(run_dir):
            return None  # its owner is alive
        lock.unlink(missing_ok=True)  # a dead owner's lock
        return _locked(run_dir)
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return lock


def _locked_by_other(run_dir: Path) -> bool:
    """Whether a live process holds ``run_dir/.lock`` (an empty or unreadable lock has no owner: pid 0 would
    name this process group)."""
    try:
        pid = int((run_dir / ".lock").read_text())
        if pid <= 0:
            return False
        os.kill(pid, 0)
        return True
    except (OSError, ValueError):
        return False


DIVERGED = ("DivergedLossError", "NonFiniteLossError")


def diverged(result: dict[str, Any]) -> bool:
    """A failed fit whose loss diverged or went non-finite (the setting's outcome; the same seed diverges again)."""
    return result.get("status") == "failed" and str(result.get("error", "")).startswith(DIVERGED)


def run_seed(
    name: str, run: dict[str, Any], seed: int, run_dir: Path, extra: Sequence[str], evaluate: str,
    also_validate: bool = False, again: bool = False,
) -> None:  # fmt: skip
    """One (run, seed) in a subprocess of its own, unless it finished before or another process holds it;
    ``again``: a finished fit's model is evaluated again (its metrics updated, the fit kept)."""
    result_file = run_dir / "result.json"
    before = json.loads(result_file.read_text()) if result_file.is_file() else {}
    recipe = recipe_digest(run, extra)
    if before.get("recipe") not in (None, recipe) and not _locked_by_other(run_dir):  # the recipe changed since
        stale = run_dir.with_name(f"{run_dir.name}.recipe-{before['recipe']}")
        run_dir.rename(stale)  # kept, not overwritten: the user's earlier fit
        print(f"[seeds] {name} seed {seed}: its recipe changed since the fit in {run_dir} (a config file or an "
              f"argument); that fit moved to {stale}, fitting the current recipe", flush=True)  # fmt: skip
        before = {}
    if before.get("status") == "ok" and not (again and "pipeline" not in run):
        print(f"[seeds] {name} seed {seed}: done before, kept ({run_dir})", flush=True)
        return
    if before.get("status") == "ok" and not (run_dir / "model.ckpt").is_file():
        print(f"[seeds] {name} seed {seed}: done before, its model is gone ({run_dir / 'model.ckpt'}): "
              "not evaluated again", flush=True)  # fmt: skip
        return
    if also_validate and diverged(before):  # a grid point whose setting diverges: an outcome, not a fault to retry
        print(f"[seeds] {name} seed {seed}: diverged before, kept as diverged ({run_dir})", flush=True)
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = _locked(run_dir)
    if lock is None:
        print(f"[seeds] {name} seed {seed}: running in another process, skipped", flush=True)
        return
    try:
        spec = {"name": name, "run": run, "seed": seed, "run_dir": str(run_dir), "extra": list(extra)}
        spec.update(evaluate=evaluate, also_validate=also_validate, recipe=recipe)
        spec["commands"] = commands(run, seed, run_dir, extra, evaluate)
        spec["evaluate_only"] = before.get("status") == "ok"  # only with `again`
        print(f"[seeds] {name} seed {seed}: {spec['commands'][1 if spec['evaluate_only'] else 0]}", flush=True)
        start = time.perf_counter()
        with open(run_dir / "log.txt", "w") as log:
            code = subprocess.run(
                [sys.executable, "-m", "lightning_kd.apps.seeds_run", "--worker", json.dumps(spec)],
                stdout=log,
                stderr=subprocess.STDOUT,
            ).returncode
        status = "ok" if code == 0 else f"FAILED (exit {code}; see {run_dir / 'log.txt'})"
        print(f"[seeds] {name} seed {seed}: {status} in {time.perf_counter() - start:.0f} s", flush=True)
        if code != 0 and not result_file.is_file() and not spec["evaluate_only"]:
            _write_json(result_file, {"run": name, "seed": seed, "status": "failed", "error": f"exit {code}"})
    finally:
        lock.unlink(missing_ok=True)


if __name__ == "__main__":  # pragma: no cover
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker(sys.argv[2])
    else:
        raise SystemExit("usage: python -m lightning_kd.apps.seeds_run --worker SPEC_JSON (lightning-kd seeds runs it)")

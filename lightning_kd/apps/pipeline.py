"""Multi-stage distillation from one command: teacher → assistant → student, or born-again generations.

``lightning-kd pipeline configs/pipelines/<name>.yaml`` runs LightningCLI ``fit`` once per stage; each
stage after the first gets ``--model.init_args.teacher_ckpt`` set to the model the stage before it published,
then is tested. Every file of a stage goes under ``<out_dir>/<stage>/`` whatever its recipe says (its logs and
checkpoints in ``version_<n>/``, its model in ``model.ckpt``), so a pipeline never touches another run's files;
a summary (``summary.json``, ``summary.md``) lists test accuracy and parameter counts.

Pipeline file::

    out_dir: runs/fashion_mnist/teacher_assistant
    stages:
      - {name: teacher, config: [configs/fashion_mnist/base.yaml, configs/fashion_mnist/teacher.yaml]}
      - {name: assistant, config: [configs/fashion_mnist/base.yaml, configs/fashion_mnist/ta_assistant.yaml]}
      - {name: student, config: [configs/fashion_mnist/base.yaml, configs/fashion_mnist/ta_student.yaml]}

A stage's ``config`` is one recipe file or a list (a base and its fragments, merged in order); a first stage may
instead name a ``checkpoint`` to reuse.

A stage with ``repeat: k`` runs ``k`` times (``<name>1`` … ``<name>k``), each teaching the next: born-again
networks (Furlanello et al., 2018, arXiv:1805.04770). Teacher assistants: Mirzadeh et al., 2020,
arXiv:1902.03393.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from lightning_kd.apps.cli import build_cli
from lightning_kd.apps.interrupts import short_interrupts


def expand_stages(stages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Validate the stage list and unroll ``repeat``."""
    if not stages:
        raise ValueError("the pipeline has no stages; list at least one under `stages:`.")
    out: list[dict[str, Any]] = []
    for i, stage in enumerate(stages):
        if not isinstance(stage, dict):
            raise ValueError(f"stage {i}: expected a mapping with name/config/..., got {stage!r}.")
        unknown = set(stage) - {"name", "config", "checkpoint", "repeat", "args"}
        if unknown:
            raise ValueError(
                f"stage {i}: unknown keys {sorted(unknown)}; allowed: name, config, checkpoint, repeat, args."
            )
        if "name" not in stage or ("config" in stage) == ("checkpoint" in stage):
            raise ValueError(f"stage {i}: give a `name` and exactly one of `config` (train) or `checkpoint` (reuse).")
        args = stage.get("args", [])
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise ValueError(
                f"stage {stage['name']!r}: args must be a list of strings, e.g. args: ['--trainer.max_epochs=5'], "
                f"got {args!r}."
            )
        if "checkpoint" in stage and i > 0:
            raise ValueError(f"stage {i} ({stage['name']}): only the first stage may reuse a checkpoint.")
        repeat = int(stage.get("repeat", 1))
        if repeat < 1:
            raise ValueError(f"stage {stage['name']!r}: repeat must be >= 1, got {repeat}.")
        for k in range(repeat):
            name = f"{stage['name']}{k + 1}" if repeat > 1 else stage["name"]
            out.append({**stage, "name": name})
    names = [s["name"] for s in out]
    if len(set(names)) != len(names):
        raise ValueError(f"stage names must be unique, got {names}.")
    return out


def read_pipeline(path: str | Path) -> dict[str, Any]:
    """The pipeline file at ``path`` as a mapping; a missing file, broken YAML or another shape is named."""
    path = Path(path)
    if not path.is_file():
        shipped = sorted(str(p) for p in Path("configs/pipelines").glob("*.yaml"))
        listed = f": {', '.join(shipped)}" if shipped else " (configs/pipelines/ of the repository)"
        problem = "is a folder, not a pipeline file" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"pipeline file {str(path)!r} {problem}; pass one of the pipelines{listed}.")
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(
            f"pipeline file {str(path)!r} is not valid YAML ({' '.join(str(err).split())}); fix it."
        ) from err
    if not isinstance(spec, dict):
        raise ValueError(
            f"pipeline file {str(path)!r} holds {type(spec).__name__}, not a mapping; give it `out_dir:` and "
            "`stages:` (see configs/pipelines/)."
        )
    return spec


def run_pipeline(path: str | Path, overrides: Sequence[str] = (), out_dir: str | Path | None = None) -> list[dict]:
    """Run every stage of the pipeline file at ``path``; ``overrides`` are appended to each stage's args. The file
    and every stage's recipe files are checked before the first stage runs."""
    spec = read_pipeline(path)
    stages = expand_stages(spec.get("stages", []))
    for stage in stages:
        for config in [stage["config"]] if isinstance(stage.get("config"), str) else stage.get("config", []):
            if not Path(config).is_file():
                raise FileNotFoundError(
                    f"stage {stage['name']!r} of {str(path)!r}: its recipe file {config!r} does not exist; check the "
                    f"stage's config: list (paths are relative to the folder you run in, {Path.cwd()})."
                )
    out = Path(out_dir or spec.get("out_dir") or "runs/pipeline")
    out.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    previous: Path | None = None
    for stage in stages:
        name = stage["name"]
        if "checkpoint" in stage:
            previous = Path(stage["checkpoint"])
            if not previous.is_file():
                raise FileNotFoundError(
                    f"stage {name!r}: checkpoint {str(previous)!r} does not exist; check the path, or train the stage "
                    "instead (give it a config: in place of checkpoint:)."
                )
            results.append({"stage": name, "checkpoint": str(previous), "reused": True})
            continue
        configs = [stage["config"]] if isinstance(stage["config"], str) else list(stage["config"])
        folder = out / name
        target = folder / "model.ckpt"
        # every file of the stage inside its own folder, whatever the recipe says
        args = [*[a for c in configs for a in ("--config", str(c))], f"--trainer.default_root_dir={folder}"]
        args += ["--checkpoint.dirpath=null", f"--checkpoint.publish_to={target}"]
        args += [*stage.get("args", []), *overrides]
        if previous is not None:
            args.append(f"--model.init_args.teacher_ckpt={previous}")
        print(f"[pipeline] stage {name}: lightning-kd fit {' '.join(args)}", flush=True)
        cli = build_cli(args, run=False)
        log_dir = cli.trainer.log_dir
        if log_dir is not None and not Path(log_dir).resolve().is_relative_to(folder.resolve()):
            raise ValueError(
                f"stage {name!r}: its logger writes to {log_dir}, outside the pipeline's folder {folder}; give the "
                "recipe's logger save_dir: ${trainer.default_root_dir} (as the recipes in configs/ do)."
            )
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        if not target.is_file():
            raise RuntimeError(
                f"stage {name!r} published no model at {target}; its recipe must keep the `checkpoint:` "
                "(RunCheckpoint) settings of configs/*/base.yaml."
            )
        test = cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=str(target), verbose=False)[0]
        model = getattr(cli.model, "student", None) or getattr(cli.model, "model", cli.model)
        results.append(
            {
                "stage": name,
                "checkpoint": str(target),
                "test_acc": test.get("test/acc"),
                "teacher_test_acc": test.get("test/teacher_acc"),
                "params": sum(p.numel() for p in model.parameters()),
                "teacher_ckpt": str(previous) if previous is not None else None,
            }
        )
        previous = target
    (out / "summary.json").write_text(json.dumps(results, indent=2))
    lines = ["| stage | test accuracy | parameters | taught by |", "|---|---|---|---|"]
    for r in results:
        acc = f"{r['test_acc']:.4f}" if r.get("test_acc") is not None else "(reused)"
        lines.append(f"| {r['stage']} | {acc} | {r.get('params', '')} | {r.get('teacher_ckpt') or '-'} |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return results


@short_interrupts
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run a multi-stage distillation pipeline (see configs/pipelines/).")
    parser.add_argument("pipeline", help="pipeline YAML file")
    parser.add_argument("--out-dir", default=None, help="overrides the file's out_dir")
    parser.epilog = "Any other argument (e.g. --trainer.max_epochs=5) is passed to every stage's `fit`."
    args, overrides = parser.parse_known_args(argv)
    run_pipeline(args.pipeline, [a for a in overrides if a != "--"], args.out_dir)


if __name__ == "__main__":  # pragma: no cover
    main()

"""``lightning-kd report``: a distilled checkpoint against its teacher, and the student exported for deployment.

    lightning-kd report --config configs/digits/base.yaml --config configs/digits/kd.yaml \\
        --ckpt runs/digits/kd/model.ckpt [--teacher-ckpt runs/digits/teacher/model.ckpt] \\
        [--out runs/digits/kd/report] [--no-export] [--no-plots] [--threads N] [--overwrite]

The recipe (the same ``--config`` files as ``lightning-kd fit``) builds the teacher and student networks and the
data module; the student's weights come from ``--ckpt`` (a DistillationModule checkpoint, ``student.*``, or a
ClassificationModule one, ``model.*``: the student-alone baseline reports against the same teacher), the
teacher's from ``--teacher-ckpt`` or else the recipe's own ``teacher_ckpt``. Both are measured on the data
module's test split; ``report.md``, ``report.json``, the figures and (unless ``--no-export``) ``export/`` are
written into ``--out`` (default: ``report/`` beside the checkpoint), never over existing files unless
``--overwrite``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning_kd.report._files import ensure_writable
from lightning_kd.report.class_names import class_names_for, normalization_of
from lightning_kd.report.run import describe_files, main_table, report_targets, run_report


def _check_overrides(overrides: Sequence[str]) -> list[str]:
    bad = [o for o in overrides if not o.startswith(("--data.", "--data="))]
    if bad:
        raise ValueError(
            f"{bad} are not data settings: data_overrides take only --data.… arguments (e.g. "
            "--data.init_args.data_dir=/data/fashion-mnist); change the models with another --config file."
        )
    return list(overrides)


def report_from_checkpoints(
    student_ckpt: str | os.PathLike,
    teacher_ckpt: str | os.PathLike | None = None,
    configs: Sequence[str | os.PathLike] = (),
    out_dir: str | os.PathLike | None = None,
    data_overrides: Sequence[str] = (),
    export: bool = True,
    plots: bool = True,
    batch_sizes: Sequence[int] = (1, 64),
    threads: int | None = None,
    overwrite: bool = False,
    min_run_time: float = 0.1,
    max_run_time: float = 2.0,
) -> dict[str, Any]:
    """Build the recipe, load the checkpoints, and write the report (see the module docstring).

    Args:
        student_ckpt: the student's weights: a DistillationModule (``student.*``) or ClassificationModule
            (``model.*``) checkpoint, or a plain ``state_dict`` file.
        teacher_ckpt: the teacher's weights; ``None``: the recipe's ``teacher_ckpt``.
        configs: the recipe's YAML files, in ``lightning-kd fit`` order (base first, then the fragment).
        out_dir: the report folder; ``None``: ``report/`` beside ``student_ckpt``.
        data_overrides: ``--data.…=…`` arguments for the recipe (e.g. a data folder on this machine).
        export: write the ONNX/``.pt2`` exports and ``deploy.json`` into ``<out_dir>/export``.
        plots: draw the PNG figures.
        batch_sizes: batch sizes of the latency measurements.
        threads: CPU threads of the latency measurements; ``None``: ``torch.get_num_threads()``.
        overwrite: replace an existing report's files.
        min_run_time: least seconds per latency measurement.
        max_run_time: most seconds per latency measurement.

    Returns:
        :func:`~lightning_kd.report.run.run_report`'s dict (``result``, ``paths``, ``export_dir``, ``notes``).

    Raises:
        FileNotFoundError: a checkpoint does not exist.
        FileExistsError: the report folder holds a report already and ``overwrite`` is false (checked before
            the recipe is built).
        ValueError: no recipe, no teacher checkpoint, a recipe without teacher and student, or weights that do
            not fit the recipe's networks.
    """
    # imported here: `lightning-kd report --help` and argument errors answer without loading Lightning
    from lightning_kd.apps.cli import build_cli
    from lightning_kd.callbacks.report import report_models
    from lightning_kd.core.weights import load_weights

    if not configs:
        raise ValueError("give the recipe: the --config files the checkpoint was trained with.")
    overrides = _check_overrides(data_overrides)
    for what, path in (("--ckpt", student_ckpt), ("--teacher-ckpt", teacher_ckpt)):
        if path is not None and not os.path.isfile(path):
            raise FileNotFoundError(f"{what} {os.fspath(path)!r} does not exist.")
    out = Path(out_dir) if out_dir is not None else Path(student_ckpt).parent / "report"
    ensure_writable(report_targets(out, plots=plots, export=export), overwrite)  # before minutes of work

    args = [f"--config={os.fspath(c)}" for c in configs]
    if teacher_ckpt is not None:
        args.append(f"--model.init_args.teacher_ckpt={os.fspath(teacher_ckpt)}")
    cli = build_cli([*args, *overrides], run=False)
    teacher, student = report_models(cli.model)
    teacher_file = teacher_ckpt if teacher_ckpt is not None else cli.model.hparams.get("teacher_ckpt")
    if teacher_file is None:
        raise ValueError(
            "the recipe sets no model.init_args.teacher_ckpt, so its teacher is untrained: give --teacher-ckpt."
        )
    load_weights(student, student_ckpt, what="--ckpt", role="recipe's student")
    datamodule = cli.datamodule
    datamodule.prepare_data()
    datamodule.setup("test")
    mean, std = normalization_of(datamodule)
    return run_report(
        teacher,
        student,
        datamodule.test_dataloader(),
        out,
        mean=mean,
        std=std,
        class_names=class_names_for(datamodule),
        export=export,
        plots=plots,
        batch_sizes=batch_sizes,
        threads=threads,
        teacher_file=teacher_file,
        student_file=student_ckpt,
        overwrite=overwrite,
        min_run_time=min_run_time,
        max_run_time=max_run_time,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightning-kd report",
        description="Teacher vs distilled student on the recipe's test split, and the student exported.",
        epilog="Other --data.… arguments are passed to the recipe (e.g. --data.init_args.data_dir=…).",
    )
    parser.add_argument("--config", action="append", required=True, help="recipe YAML (repeat: base, fragment)")
    parser.add_argument("--ckpt", required=True, help="the student: a distillation (or classification) checkpoint")
    parser.add_argument("--teacher-ckpt", help="the teacher's weights (default: the recipe's teacher_ckpt)")
    parser.add_argument("--out", help="report folder (default: report/ beside --ckpt)")
    parser.add_argument("--no-export", action="store_true", help="skip the ONNX/pt2 exports")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    parser.add_argument("--threads", type=int, help="CPU threads for the latency figures (default: torch's)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64], help="latency batch sizes")
    parser.add_argument("--max-time", type=float, default=2.0, help="most seconds per latency measurement")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing report's files")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``lightning-kd report`` (``argv`` without the word ``report``)."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    try:
        overrides = _check_overrides(extra)
    except ValueError:
        parser.error(f"unrecognized arguments: {' '.join(extra)} (only --data.… settings pass to the recipe)")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if args.max_time <= 0 or any(b < 1 for b in args.batch_sizes):
        parser.error("--max-time must be > 0 and every --batch-sizes value >= 1")
    try:
        report = report_from_checkpoints(
            args.ckpt,
            args.teacher_ckpt,
            args.config,
            args.out,
            overrides,
            export=not args.no_export,
            plots=not args.no_plots,
            batch_sizes=args.batch_sizes,
            threads=args.threads,
            overwrite=args.overwrite,
            min_run_time=min(0.1, args.max_time),
            max_run_time=args.max_time,
        )
    except FileExistsError as err:
        raise SystemExit(f"lightning-kd report: {err} (on the command line: --overwrite or --out)") from err
    except (FileNotFoundError, ValueError) as err:
        from lightning_kd.apps.cli_errors import short_message  # the innermost message, not the parser's dump

        raise SystemExit(f"lightning-kd report: {short_message(err)}") from err
    result = report["result"]
    threads = result["settings"]["threads"]
    print(f"\nTeacher vs student, {result['num_samples']:,} test samples; latency on the CPU, {threads} thread(s):\n")
    print(main_table(result))
    print()
    print(describe_files(report))


if __name__ == "__main__":  # pragma: no cover
    main()

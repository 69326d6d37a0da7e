"""lightning-kd speed and memory against plain PyTorch, side by side in one run (see benchmarks/README.md).

    python benchmarks/kd_speed.py                # the GPU run: Fashion-MNIST KD epochs + ImageNet-shape steps
    python benchmarks/kd_speed.py --cpu-medium   # CPU: real Fashion-MNIST epochs with small models (minutes)
    python benchmarks/kd_speed.py --smoke        # CPU, tiny sizes, same keys: checks the script itself

Writes ``<out>.json`` (every figure, every sample, the ratios the targets use) and ``<out>.md`` (a table);
``--out`` defaults to ``benchmarks/results/<UTC timestamp>``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the kd_speed_* helpers beside this file

import kd_speed_fmnist as fmnist  # noqa: E402
import kd_speed_imagenet as imagenet  # noqa: E402
import lightning as L  # noqa: E402
import torch  # noqa: E402

import lightning_kd  # noqa: E402

REPO = HERE.parent
DATA_DIRS = (REPO / "shared" / "data" / "fashion-mnist", REPO.parent / "shared" / "data" / "fashion-mnist")
SECTIONS = ("fashion_mnist", "imagenet_shape")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="CPU, tiny sizes, seconds: checks the script, not speed")
    p.add_argument(
        "--cpu-medium",
        action="store_true",
        help="CPU: the Fashion-MNIST part on real data with small models (60 steps/epoch, minutes); target 1.10",
    )
    p.add_argument("--out", type=Path, help="output path without suffix (default benchmarks/results/<timestamp>)")
    p.add_argument("--data-dir", help="folder with the Fashion-MNIST IDX files (default: searched, see README)")
    p.add_argument("--repeats", type=int, help="interleaved repeats of every case (default 3; smoke 2)")
    p.add_argument("--epochs", type=int, help="timed Fashion-MNIST epochs per run, after one warm-up epoch")
    p.add_argument("--steps", type=int, help="timed ImageNet-shape steps per run, after the warm-up steps")
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        help="fast path with compile=True (default: on CUDA yes, in --smoke no)",
    )
    p.add_argument("--only", choices=SECTIONS, help="run one of the two parts")
    return p.parse_args(argv)


def find_data_dir(given: str | None) -> str | None:
    """``--data-dir``, else the shared copy beside the repository, else ``None`` (the data module searches
    ``$LIGHTNING_KD_FASHION_MNIST`` and Debian's folder)."""
    if given:
        return given
    return next((str(d) for d in DATA_DIRS if (d / "train-images-idx3-ubyte.gz").is_file()), None)


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def meta(args: argparse.Namespace, device: torch.device) -> dict:
    cpu = f"CPU ({platform.machine()}, {torch.get_num_threads()} thread(s))"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu
    return {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "smoke": args.smoke,
        "cpu_medium": args.cpu_medium,
        "device": name,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "lightning": L.__version__,
        "lightning_kd": lightning_kd.__version__,
        "python": platform.python_version(),
        "git_commit": git_commit(),
        "precision": "bf16-mixed" if device.type == "cuda" else "32-true",
    }


def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _met(flag: bool | None, smoke: bool) -> str:
    if smoke:
        return "n/a (smoke)"
    return "–" if flag is None else ("yes" if flag else "**no**")


def markdown(result: dict) -> str:
    m = result["meta"]
    lines = [f"# lightning-kd speed: {m['device']}, {m['timestamp']}", ""]
    if m.get("cpu_medium"):
        lines += [
            "> **CPU medium mode** (`--cpu-medium`): real Fashion-MNIST epochs with a ResNet-8 teacher on this",
            "> machine's CPU, fp32; the ratio against the hand loop is real here; GPU targets are not tested by it.",
            "",
        ]
    if m["smoke"]:
        lines += [
            "> **CPU smoke run** (`--smoke`): reduced sizes on a CPU in fp32; it checks the script, these are",
            "> **not** the GPU figures and say nothing about the targets.",
            "",
        ]
    commit = (m["git_commit"] or "?")[:10]
    versions = f"torch {m['torch']}, lightning {m['lightning']}, lightning-kd {m['lightning_kd']}"
    lines += [f"{versions}, commit {commit}, precision {m['precision']}.", ""]
    if "fashion_mnist" in result:
        r = result["fashion_mnist"]
        c = r["config"]
        labels = {
            "hand_loop": "hand loop (plain PyTorch)",
            "default_fit": "lightning-kd default `fit`",
            "fast_fit": "lightning-kd fast path" + (" (compiled)" if c["fast_fit_compiled"] else " (not compiled)"),
        }
        lines += [
            f"## Fashion-MNIST KD epoch ({c['steps_per_epoch']} steps of {c['batch_size']}, median of "
            f"{c['timed_epochs']} timed epochs × {c['repeats']} repeats)",
            "",
            "| run | s / epoch | × hand loop | target | met | host syncs / step |",
            "|---|---|---|---|---|---|",
        ]
        for case, label in labels.items():
            key = f"{case}_vs_hand_loop"
            ratio = 1.0 if case == "hand_loop" else r["ratios"][key]
            target = r["targets"].get(key)
            lines.append(
                f"| {label} | {r['s_per_epoch'][case]:.3f} | {ratio:.3f} | "
                f"{'–' if target is None else f'≤ {target}'} | {_met(r['meets_target'].get(key), m['smoke'])} | "
                f"{_fmt(r['host_syncs_per_step'][case], '.2f')} |"
            )
        lines.append("")
    if "imagenet_shape" in result:
        r = result["imagenet_shape"]
        c = r["config"]
        ms, peaks, ratios, ok = r["ms_per_step"], r["peak_bytes"], r["ratios"], r["meets_target"]
        mib = {k: None if v is None else v / 2**20 for k, v in peaks.items()}
        lines += [
            f"## ImageNet shape ({c['teacher']} → {c['student']}, 3×{c['image_size']}×{c['image_size']}, batch "
            f"{c['batch_size']}, median of {c['repeats']} repeats × {c['steps']} steps)",
            "",
            "| case | ms / step | peak MiB above input |",
            "|---|---|---|",
        ]
        lines += [f"| {case} | {ms[case]:.2f} | {_fmt(mib[case], '.0f')} |" for case in imagenet.CASES]
        weights, acts = r["teacher_weights_bytes"], r["teacher_activation_bytes"]
        lines += [
            "",
            f"Teacher weights {weights / 2**20:.0f} MiB, one teacher forward's activations "
            f"{_fmt(None if acts is None else acts / 2**20, '.0f')} MiB.",
            "",
            "| ratio | value | target | met |",
            "|---|---|---|---|",
        ]
        for key, value in ratios.items():
            target = r["targets"].get(key)
            bound = "–" if target is None else f"≤ {target}"
            lines.append(f"| {key} | {_fmt(value, '.3f')} | {bound} | {_met(ok.get(key), m['smoke'])} |")
        lines.append("")
    return "\n".join(lines)


def check_finite(result: dict) -> None:
    """Every timing must be a positive finite number: a zero or NaN means a timer never fired."""
    timings = []
    if "fashion_mnist" in result:
        timings += result["fashion_mnist"]["s_per_epoch"].values()
    if "imagenet_shape" in result:
        timings += result["imagenet_shape"]["ms_per_step"].values()
    bad = [t for t in timings if not (isinstance(t, float) and math.isfinite(t) and t > 0)]
    if bad:
        raise RuntimeError(f"timings that are not positive finite numbers: {bad}")


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    threads = torch.get_num_threads()
    if args.smoke:  # tiny ops gain nothing from threads, and OpenMP threads spinning on a shared CPU cost 30×
        torch.set_num_threads(1)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace) -> dict:
    cpu_only = args.smoke or args.cpu_medium
    cuda = torch.cuda.is_available() and not cpu_only
    if not cuda and not cpu_only:
        raise SystemExit("the full benchmark needs a CUDA GPU; on a CPU run it with --cpu-medium or --smoke")
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=".*but have no `val_dataloader`.*")  # ImageNet-shape fits: train only
    repeats = args.repeats or (2 if args.smoke else 3)
    fm_sizes = fmnist.SMOKE if args.smoke else fmnist.CPU_MEDIUM if args.cpu_medium else fmnist.Sizes()
    in_sizes = imagenet.SMOKE if args.smoke else imagenet.Sizes()
    if args.epochs:
        fm_sizes = fmnist.Sizes(**{**fm_sizes.__dict__, "timed_epochs": args.epochs})
    if args.steps:
        in_sizes = imagenet.Sizes(**{**in_sizes.__dict__, "steps": args.steps})
    compile_fast = cuda if args.compile is None else args.compile

    result: dict = {"meta": meta(args, device)}
    if args.only in (None, "fashion_mnist"):
        targets = fmnist.CPU_TARGETS if args.cpu_medium else None
        data_dir = find_data_dir(args.data_dir)
        result["fashion_mnist"] = fmnist.run(fm_sizes, device, repeats, data_dir, compile_fast, targets)
    if args.only in (None, "imagenet_shape") and not args.cpu_medium:
        result["imagenet_shape"] = imagenet.run(in_sizes, device, repeats)
    check_finite(result)

    out = args.out or HERE / "results" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = out.with_suffix("") if out.suffix in (".json", ".md") else out
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = (out.parent / f"{out.name}{suffix}" for suffix in (".json", ".md"))
    result["meta"]["outputs"] = [str(json_path), str(md_path)]
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    md_path.write_text(markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()

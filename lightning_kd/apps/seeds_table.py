"""The tables of ``lightning-kd seeds``: per run, mean ± std over seeds with a 95 % t-interval, every seed, and
the paired difference against the baseline with its own 95 % t-interval; a run is *beyond the noise* when that
interval excludes 0 (Student's t on the per-seed differences, ``n − 1`` degrees of freedom)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning_kd.apps.seeds_pairs import _mean_std, paired, t_interval  # noqa: F401 - t_interval: public here
from lightning_kd.apps.seeds_tune import chosen, seeds_dir


def collect(study: dict[str, Any], out: Path, seeds: Sequence[int]) -> dict[str, dict[int, dict[str, Any]]]:
    """``{run: {seed: result}}`` of the result files found (missing seeds are absent)."""
    found: dict[str, dict[int, dict[str, Any]]] = {}
    for name, run in study["runs"].items():
        folder = seeds_dir(out, name, run)  # a tuned run: its chosen point's folder (None: nothing chosen yet)
        for seed in seeds if folder is not None else ():
            path = folder / f"seed_{seed}" / "result.json"
            if path.is_file():
                found.setdefault(name, {})[seed] = json.loads(path.read_text())
    return found


def summarize(study: dict[str, Any], out: Path, seeds: Sequence[int]) -> list[dict[str, Any]]:
    """One row per run: per metric mean/std/values over the seeds that finished, the paired difference against the
    baseline on the seeds both finished, fit time, failures."""
    found = collect(study, out, seeds)
    baseline = study.get("baseline")
    base = {s: r for s, r in found.get(baseline, {}).items() if r.get("status") == "ok"}
    rows = []
    for name in study["runs"]:
        results = found.get(name, {})
        ok = {s: r for s, r in sorted(results.items()) if r.get("status") == "ok"}
        row: dict[str, Any] = {
            "run": name,
            "seeds": sorted(ok),
            "failed": {s: r.get("error", "") for s, r in results.items() if r.get("status") != "ok"},
            "missing": [s for s in seeds if s not in results],
            "metrics": {},
        }
        for metric in study["metrics"]:
            values = {s: r["metrics"][metric] for s, r in ok.items() if r["metrics"].get(metric) is not None}
            mean, std = _mean_std(list(values.values()))
            entry: dict[str, Any] = {"mean": mean, "std": std, "ci95": t_interval(list(values.values())),
                                     "per_seed": values}  # fmt: skip
            if baseline is not None and name != baseline:
                # beyond the noise: the paired difference's 95 % interval excludes 0 (two paired seeds at least)
                entry["diff"], entry["beyond_noise"] = paired(values, {s: base[s]["metrics"].get(metric) for s in base})
            row["metrics"][metric] = entry
        fit = [r.get("fit_seconds", math.nan) for r in ok.values()]
        row["fit_seconds"] = statistics.fmean(fit) if fit else math.nan
        row["environments"] = [r.get("environment") for r in ok.values()]
        row["commands"] = next(iter(results.values()), {}).get("commands", [])
        if "grid" in study["runs"][name]:
            row["tuning"] = chosen(out, name, study["runs"][name]) or {"grid": study["runs"][name]["grid"]}
        rows.append(row)
    return rows


def _pct(x: float, metric: str) -> str:
    if math.isnan(x):
        return "–"
    if metric.endswith("ppl"):
        return f"{x:.1f}"
    return f"{100 * x:.2f}" if metric.endswith("acc") else f"{x:.4f}"


def _interval(ci: list[float] | None, metric: str) -> str:
    return "–" if not ci else f"{_pct(ci[0], metric)} … {_pct(ci[1], metric)}"


def markdown(study: dict[str, Any], rows: list[dict[str, Any]], seeds: Sequence[int]) -> str:
    metric = study["metrics"][0]
    unit = " (%)" if metric.endswith("acc") else ""
    baseline = study.get("baseline")
    lines = [
        f"{metric}{unit} over seeds {list(seeds)}: mean ± std (sample std) and its 95 % t-interval, every seed, and "
        f"the paired difference against `{baseline}` on the same seed with its 95 % t-interval"
        + ("" if baseline else " (no baseline)")
        + "; *beyond noise*: that interval excludes 0. Each figure is the published model's (the recipe's "
        "`checkpoint.publish`: the last epoch's in the shipped recipes; no selection on the evaluated split).",
        "",
        f"| run | {metric} | 95 % interval | per seed | vs {baseline or '–'} (paired) [95 % interval] | beyond noise "
        "| fit time (s) | notes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        m = row["metrics"][metric]
        per_seed = " / ".join(_pct(v, metric) for v in m["per_seed"].values()) or "–"
        diff = m.get("diff")
        diff_s = f"{_pct(diff['mean'], metric)} ± {_pct(diff['std'], metric)}" if diff and diff["per_seed"] else "–"
        if diff and diff.get("ci95"):
            diff_s += f" [{_interval(diff['ci95'], metric)}]"
        verdict = m.get("beyond_noise")
        noise = "–" if row["run"] == baseline or verdict is None else ("yes" if verdict else "no")
        notes = []
        if row["failed"]:
            notes.append(f"failed seeds {sorted(row['failed'])} (not averaged)")
        if "tuning" in row:
            label = row["tuning"].get("label")
            notes.append(f"tuned: {label}" if label else "not tuned yet (a grid point is unfinished)")
        if row["missing"]:
            notes.append(f"not run yet: seeds {row['missing']}")
        lines.append(
            f"| {row['run']} | {_pct(m['mean'], metric)} ± {_pct(m['std'], metric)} | "
            f"{_interval(m.get('ci95'), metric)} | {per_seed} | {diff_s} | "
            f"{noise} | {row['fit_seconds']:.0f} | {'; '.join(notes)} |"
        )
    lines += _against_lines(study, rows)
    lines += _other_metric_lines(study, rows)
    lines += _tuning_lines(rows)
    lines += _environment_lines(rows)
    lines += ["", "Commands (the first seed; the others change `--seed_everything` and the folder):", "", "```bash"]
    for row in rows:
        lines += row["commands"]
    lines.append("```")
    return "\n".join(lines) + "\n"


def _against_lines(study: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    """The further comparisons a study asks for (``against: {kd: [at_kd, …]}``): each listed run paired with that
    run seed by seed, e.g. whether a feature term adds anything to the KD it is combined with."""
    metric, by_run, lines = study["metrics"][0], {r["run"]: r["metrics"][study["metrics"][0]] for r in rows}, []
    for ref, names in (study.get("against") or {}).items():
        lines += ["", f"Against `{ref}` ({metric}, paired on the seeds both finished; beyond noise: the 95 % "
                  "t-interval excludes 0):", "", f"| run | vs {ref} (paired) [95 % interval] | per seed | beyond noise "
                  "|", "|---|---|---|---|"]  # fmt: skip
        for name in names:
            diff, verdict = paired(by_run[name]["per_seed"], by_run[ref]["per_seed"])
            shown = f"{_pct(diff['mean'], metric)} ± {_pct(diff['std'], metric)} [{_interval(diff['ci95'], metric)}]"
            per_seed = " / ".join(_pct(v, metric) for v in diff["per_seed"].values()) or "–"
            noise = "–" if verdict is None else ("yes" if verdict else "no")
            lines.append(f"| {name} | {shown if diff['per_seed'] else '–'} | {per_seed} | {noise} |")
    return lines


def _other_metric_lines(study: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    """The study's further metrics (perplexity, bits per byte, …), the same runs: mean ± std and the paired
    difference with its 95 % t-interval."""
    others = study["metrics"][1:]
    if not others:
        return []
    lines = ["", "The other metrics (mean ± std; paired difference vs the baseline [95 % t-interval]):", "",
             "| run | " + " | ".join(others) + " |", "|---|" + "---|" * len(others)]  # fmt: skip
    for row in rows:
        cells = []
        for metric in others:
            m = row["metrics"][metric]
            cell = f"{_pct(m['mean'], metric)} ± {_pct(m['std'], metric)}" if m["per_seed"] else "–"
            diff = m.get("diff")
            if m["per_seed"] and diff and diff["per_seed"]:
                sign = "+" if diff["mean"] >= 0 else ""
                cell += f" ({sign}{_pct(diff['mean'], metric)} [{_interval(diff['ci95'], metric)}])"
            cells.append(cell)
        lines.append(f"| {row['run']} | " + " | ".join(cells) + " |")
    return lines


def _ends(values: list) -> tuple:
    """A grid axis's two ends: its smallest and largest value (numbers), else its first and last."""
    try:
        return min(values), max(values)
    except TypeError:
        return values[0], values[-1]


def _tuning_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The tuning section: per tuned run, its grid, every point's validation figure on the tuning seed, the
    choice."""
    tuned = [r for r in rows if "tuning" in r]
    if not tuned:
        return []
    lines = ["", "Settings chosen on the validation split (each grid point fitted once, on the tuning seed; the best "
             "point's validation figure chooses it, ties to the first declared; only the chosen point runs on the "
             "other seeds, and its test figures are the row above):", "",
             "| run | grid | validation figure per point | chosen |", "|---|---|---|---|"]  # fmt: skip
    for row in tuned:
        tuning = row["tuning"]
        grid = "; ".join(f"`{path}` ∈ {values}" for path, values in (tuning.get("declared") or tuning["grid"]).items())
        if tuning.get("extended"):
            added = ", ".join(str(v) for p in tuning["extended"] for v in p.values())
            grid += f", then {added} (beyond the edge the best lay on: tune.extend)"
        metric = tuning.get("metric", "")
        scores = tuning.get("scores") or {}
        shown = ", ".join(f"{point}: {'diverged' if v != v else _pct(v, metric)}" for point, v in scores.items())
        shown = shown or "–"
        head = f"{metric} (seed {tuning['seed']}): " if scores else ""
        choice = tuning.get("label") or "not yet"
        edge = [p for p, v in (tuning.get("chosen") or {}).items() if len(tuning["grid"][p]) > 2
                and v in _ends(tuning["grid"][p])]  # fmt: skip
        if edge:  # the best may lie beyond the grid: say so rather than call it tuned without a remark
            choice += " (at the grid's edge: the best may lie beyond it)"
        lines.append(f"| {row['run']} | {grid} | {head}{shown} | {choice} |")
    return lines


def _environment_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Where the figures were measured: each distinct (threads, torch, Lightning, lightning-kd, commit) with how many
    of the table's fits it holds (fits recorded before this was written: "not recorded")."""
    counts: dict[str, int] = {}
    for row in rows:
        for env in row.get("environments", []):
            key = "not recorded" if not env else (
                f"{env['threads']} torch thread(s), torch {env['torch']}, Lightning {env['lightning']}, "
                f"lightning-kd {env['lightning_kd']}, commit {env['commit']}"
            )  # fmt: skip
            counts[key] = counts.get(key, 0) + 1
    if not counts:
        return []
    return ["", "Measured with (fits in the table above):", ""] + [f"- {k}: {n}" for k, n in sorted(counts.items())]


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (a reader never sees half a table)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_tables(study: dict[str, Any], out: Path, seeds: Sequence[int]) -> dict[str, Any]:
    """Write ``results.md``, ``results.json``, ``results.csv`` (and ``results.png`` with matplotlib) into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    rows = summarize(study, out, seeds)
    text = markdown(study, rows, seeds)
    atomic_write(out / "results.md", f"# {study['name']}\n\n{text}")
    atomic_write(
        out / "results.json", json.dumps({"study": study["name"], "seeds": list(seeds), "rows": rows}, indent=2)
    )
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["run", "metric", "seed", "value", "diff_vs_baseline", "fit_seconds"])
    for row in rows:
        for metric, m in row["metrics"].items():
            for seed, value in m["per_seed"].items():
                diff = (m.get("diff") or {}).get("per_seed", {}).get(seed, "")
                writer.writerow([row["run"], metric, seed, value, diff, round(row["fit_seconds"], 1)])
    atomic_write(out / "results.csv", buffer.getvalue())
    _plot(study, rows, out / "results.png")
    return {"rows": rows, "markdown": text}


def _plot(study: dict[str, Any], rows: list[dict[str, Any]], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    metric = study["metrics"][0]
    shown = [r for r in rows if r["metrics"][metric]["per_seed"]]
    if not shown:
        return
    scale = 100 if metric.endswith("acc") else 1
    means = [scale * r["metrics"][metric]["mean"] for r in shown]
    stds = [scale * r["metrics"][metric]["std"] for r in shown]
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(shown) + 1.2))
    y = range(len(shown))
    colors = ["tab:gray" if r["run"] == study.get("baseline") else "tab:blue" for r in shown]
    ax.barh(list(y), means, xerr=stds, color=colors, capsize=3)
    for i, r in enumerate(shown):
        ax.plot([scale * v for v in r["metrics"][metric]["per_seed"].values()], [i] * len(r["seeds"]), "k.", ms=3)
    ax.set_yticks(list(y), [r["run"] for r in shown])
    ax.invert_yaxis()
    low = min(m - s for m, s in zip(means, stds))
    high = max(m + s for m, s in zip(means, stds))
    ax.set_xlim(low - 0.15 * (high - low + 1e-9), high + 0.1 * (high - low + 1e-9))
    ax.set_xlabel(f"{metric}{' (%)' if scale == 100 else ''}, mean ± std over seeds (dots: each seed)")
    ax.set_title(study["name"])
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)

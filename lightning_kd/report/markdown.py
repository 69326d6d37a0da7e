"""``report.md``: the :func:`~lightning_kd.report.compare.compare_models` result as Markdown tables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DASH = "—"


def _pct(x: float | None) -> str:
    return DASH if x is None else f"{100 * x:.2f} %"


def _pp(d: float | None) -> str:
    return DASH if d is None else f"{100 * d:+.2f} pp"


def _si(x: float | None, unit: str) -> str:
    if x is None:
        return DASH
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}".rstrip()


def _bytes(n: int | None) -> str:
    if n is None:
        return DASH
    for scale, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _times(r: float | None) -> str:
    return DASH if r is None else f"×{r:.3g}"


def _row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def main_table(result: Mapping[str, Any]) -> list[str]:
    t, s, ratios, diffs = result["teacher"], result["student"], result["ratios"], result["differences"]
    rows = [_row("", "teacher", "student", "student vs teacher"), _row("---", "---:", "---:", "---:")]
    rows.append(_row("top-1 accuracy", _pct(t["top1"]), _pct(s["top1"]), _pp(diffs["top1"])))
    if t["top5"] is not None:
        rows.append(_row("top-5 accuracy", _pct(t["top5"]), _pct(s["top5"]), _pp(diffs["top5"])))
    rows.append(_row("parameters", f"{t['params']:,}", f"{s['params']:,}", _times(ratios["params"])))
    t_flops, s_flops = _si(t["flops_per_sample"], "FLOP"), _si(s["flops_per_sample"], "FLOP")
    rows.append(_row("FLOPs / sample", t_flops, s_flops, _times(ratios["flops_per_sample"])))
    for b in s["latency"]:
        tl, sl = t["latency"][b], s["latency"][b]
        ratio = _times(ratios["median_ms"][b])
        rows.append(_row(f"latency, batch {b} (CPU)", f"{tl['median_ms']:.3g} ms", f"{sl['median_ms']:.3g} ms", ratio))
    for b in s["latency"]:
        tl, sl = t["latency"][b]["samples_per_s"], s["latency"][b]["samples_per_s"]
        ratio = _times(ratios["samples_per_s"][b])
        rows.append(_row(f"throughput, batch {b}", _si(tl, "samples/s"), _si(sl, "samples/s"), ratio))
    t_file, s_file = _bytes(t["file_bytes"]), _bytes(s["file_bytes"])
    rows.append(_row("checkpoint size", t_file, s_file, _times(ratios["file_bytes"])))
    exports = result.get("exports") or {}
    if "onnx" in exports:
        rows.append(_row("exported size (ONNX fp32)", DASH, _bytes(exports["onnx"]["bytes"]), DASH))
    agreement = result["agreement"]
    rows.append(_row("top-1 agreement with teacher", DASH, _pct(agreement["top1"]), DASH))
    rows.append(_row("KL(p_T ‖ p_S), T = 1", DASH, f"{agreement['kl_teacher_student']:.4f} nats", DASH))
    ece = f"ECE ({result['settings']['ece_bins']} bins)"
    rows.append(_row(ece, f"{t['ece']:.4f}", f"{s['ece']:.4f}", f"{diffs['ece']:+.4f}"))
    return rows


def _exports_table(exports: Mapping[str, Any]) -> list[str]:
    batches = list(exports["onnx"]["latency"])
    head = ["file", "size", "top-1", "Δ top-1 vs eager", "max abs diff", *(f"latency b{b}" for b in batches)]
    rows = [_row(*head), _row("---", *["---:"] * (len(head) - 1))]
    eager = exports["eager"]["top1"]
    for key in ("onnx", "onnx_fp16", "onnx_int8", "pt2"):
        if key not in exports:
            continue
        e = exports[key]
        top1 = e.get("top1")
        latency = [f"{e['latency'][b]['median_ms']:.3g} ms" if "latency" in e else DASH for b in batches]
        diff = None if top1 is None else top1 - eager
        rows.append(_row(e["file"], _bytes(e["bytes"]), _pct(top1), _pp(diff), f"{e['max_abs_diff']:.2g}", *latency))
    return rows


def _per_class_table(result: Mapping[str, Any]) -> list[str]:
    names = result["class_names"] or [str(i) for i in range(result["num_classes"])]
    t, s = result["teacher"]["per_class_accuracy"], result["student"]["per_class_accuracy"]
    rows = [_row("class", "samples", "teacher", "student", "Δ"), _row("---", "---:", "---:", "---:", "---:")]
    for name, n, ta, sa in zip(names, result["class_counts"], t, s):
        rows.append(_row(name, str(n), _pct(ta), _pct(sa), _pp(None if ta is None else sa - ta)))
    return rows


def render_markdown(result: Mapping[str, Any], figures: Mapping[str, str], plot_note: str | None = None) -> str:
    """The report as Markdown.

    Args:
        result: from :func:`~lightning_kd.report.compare.compare_models`.
        figures: ``{"confusion" | "reliability" | "per_class": file name}`` of the PNGs beside the report.
        plot_note: why there are no figures (the missing extra), written instead of them.
    """
    settings = result["settings"]
    lines = [
        "# Teacher vs student",
        "",
        f"{result['num_samples']:,} samples, {result['num_classes']} classes. Latency on the CPU with "
        f"{settings['threads']} torch thread(s); torch {settings['torch_version']}.",
        "",
        *main_table(result),
        "",
    ]
    exports = result.get("exports")
    if exports:
        onnx = exports["onnx"]
        exporter = onnx["exporter"] + (
            "" if onnx["fallback_reason"] is None else f" (dynamo failed: {onnx['fallback_reason']})"
        )
        lines += [
            "## Exported student",
            "",
            f"ONNX opset {onnx['opset']}, exporter {exporter}; ONNX Runtime CPU "
            f"with {exports['threads']} thread(s). Eager student top-1: {_pct(exports['eager']['top1'])}.",
            "",
        ]
        lines += [*_exports_table(exports), ""]
    lines += ["## Per-class accuracy", "", *_per_class_table(result), ""]
    lines += ["## Figures", ""]
    if figures:
        lines += [f"![{key}]({name})" for key, name in figures.items()] + [""]
    else:
        lines += [plot_note or "Figures not drawn (plots=False).", ""]
    lines += [
        "## Notes",
        "",
        f"- FLOPs: {settings['flops']}; one forward pass at batch 1.",
        f"- Latency: {settings['latency']}.",
        f"- ECE: top-1 expected calibration error, {settings['ece_bins']} equal-width bins, l1 (torchmetrics "
        "MulticlassCalibrationError); Guo et al. 2017, arXiv:1706.04599.",
        "- KL(p_T ‖ p_S): mean over samples, temperature 1, natural log.",
    ]
    if exports and "onnx_int8" in exports:
        lines.append(
            "- int8: dynamic quantisation; activation ranges are measured per call, so its outputs depend "
            "slightly on the batch."
        )
    lines.append("")
    return "\n".join(lines)

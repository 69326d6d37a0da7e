"""Peak memory and time of the language-model distillation loss: naive full logits vs chunked lm head.

    python benchmarks/lm_loss_memory.py --vocab 32000 128256 --tokens 4096 --hidden 1024 --chunk 256
    python benchmarks/lm_loss_memory.py --device cuda --dtype bfloat16 --json lm.json

Each (vocabulary, method) case runs in its own subprocess so that one case's peak cannot hide another's. A
case allocates the student's and teacher's final hidden states ``(tokens, hidden)`` and lm-head weights
``(vocab, hidden)`` (student ones trainable, no bias), labels with a quarter of the positions masked (-100),
then computes ``(CE sum + divergence sum) / valid tokens`` and its backward, either from full logits
(:func:`naive_token_distill_loss`, teacher logits under ``no_grad``) or with
:func:`chunked_token_distill_loss`. Peak memory is, on the CPU, the peak RSS (``ru_maxrss``) minus the RSS
once the inputs exist; on CUDA, ``torch.cuda.max_memory_allocated`` minus what the inputs take. So it counts
the logits, the loss's intermediates and the gradients (``weight.grad`` is ``vocab × hidden``), not the
inputs. On the CPU, glibc keeps many freed blocks in its heap, so the RSS can overstate the live tensors and
vary from run to run; ``--malloc-mmap-threshold 131072`` makes every large block go back to the OS when freed.
Time is one forward + backward, after a small warm-up. The two methods' losses and gradient norms
must agree (relative 1e-4); the target is chunked ≤ 25 % of naive memory at the largest vocabulary.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Sequence

import torch

from lightning_kd.losses.token import TOKEN_DIVERGENCES, chunked_token_distill_loss, naive_token_distill_loss

TARGET = 0.25  # chunked peak / naive peak at the largest vocabulary
AGREE_RTOL = 1e-4


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--vocab", type=int, nargs="+", default=[32000, 128256], help="vocabulary sizes to measure")
    p.add_argument("--tokens", type=int, default=4096, help="tokens per batch (rows of the loss)")
    p.add_argument("--hidden", type=int, default=1024, help="hidden width of both models")
    p.add_argument("--chunk", type=int, default=256, help="tokens per chunk of the chunked loss")
    p.add_argument("--kind", choices=TOKEN_DIVERGENCES, default="forward_kl", help="divergence")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="hidden states and heads")
    p.add_argument("--json", help="also write every figure to this JSON file")
    p.add_argument(
        "--malloc-mmap-threshold",
        type=int,
        help="CPU: set glibc's MALLOC_MMAP_THRESHOLD_ (bytes, e.g. 131072) in the cases, so freed large blocks go "
        "back to the OS and the RSS tracks live tensors (default: the allocator as it is)",
    )
    p.add_argument("--worker", choices=["naive", "chunked"], help=argparse.SUPPRESS)  # one case, in a subprocess
    return p.parse_args(argv)


def _rss_bytes() -> int:
    """Current resident set size (Linux ``/proc``), else the peak so far."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return _peak_rss_bytes()


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS reports bytes, Linux KiB


def _inputs(vocab: int, tokens: int, hidden: int, device: torch.device, dtype: torch.dtype) -> dict:
    g = torch.Generator().manual_seed(0)

    def randn(*shape: int, scale: float) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * scale).to(device=device, dtype=dtype)

    labels = torch.randint(0, vocab, (tokens,), generator=g)
    labels[torch.randperm(tokens, generator=g)[: tokens // 4]] = -100
    return dict(
        h_s=randn(tokens, hidden, scale=1.0).requires_grad_(True),
        w_s=randn(vocab, hidden, scale=hidden**-0.5).requires_grad_(True),
        h_t=randn(tokens, hidden, scale=1.0),
        w_t=randn(vocab, hidden, scale=2 * hidden**-0.5),
        labels=labels.to(device),
    )


def _loss(method: str, x: dict, chunk: int, kind: str) -> tuple[torch.Tensor, dict]:
    if method == "chunked":
        sums = chunked_token_distill_loss(
            x["h_s"], x["w_s"], None, x["h_t"], x["w_t"], None, x["labels"], divergence=kind, chunk_size=chunk
        )
    else:
        student_logits = x["h_s"] @ x["w_s"].T  # (N, V)
        with torch.no_grad():
            teacher_logits = x["h_t"] @ x["w_t"].T  # (N, V)
        sums = naive_token_distill_loss(student_logits, teacher_logits, x["labels"], divergence=kind)
    loss = (sums.ce_sum + sums.div_sum) / sums.num_valid
    figures = {"ce_sum": sums.ce_sum.item(), "div_sum": sums.div_sum.item(), "num_valid": sums.num_valid.item()}
    return loss, figures


def run_case(args: argparse.Namespace) -> dict:
    """One case in this process; returns its figures."""
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    cuda = device.type == "cuda"
    warm = _inputs(256, 2 * args.chunk, 64, device, dtype)  # kernels, thread pools, allocator
    _loss(args.worker, warm, args.chunk, args.kind)[0].backward()
    del warm
    x = _inputs(args.vocab[0], args.tokens, args.hidden, device, dtype)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_bytes()
    start = time.perf_counter()
    loss, figures = _loss(args.worker, x, args.chunk, args.kind)
    loss.backward()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    # 0 when the case never rose above the baseline (tiny sizes: the peak so far was set by the imports)
    peak = max((torch.cuda.max_memory_allocated() if cuda else _peak_rss_bytes()) - base, 0)
    return {
        "vocab": args.vocab[0],
        "method": args.worker,
        "peak_mb": peak / 2**20,
        "time_s": seconds,
        "loss": loss.item(),
        **figures,
        "grad_norm_hidden": x["h_s"].grad.float().norm().item(),
        "grad_norm_weight": x["w_s"].grad.float().norm().item(),
    }


def _spawn(args: argparse.Namespace, vocab: int, method: str) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", method, "--vocab", str(vocab)]
    cmd += ["--tokens", str(args.tokens), "--hidden", str(args.hidden), "--chunk", str(args.chunk)]
    cmd += ["--kind", args.kind, "--device", args.device, "--dtype", args.dtype]
    env = dict(os.environ)
    if args.malloc_mmap_threshold is not None:
        env["MALLOC_MMAP_THRESHOLD_"] = str(args.malloc_mmap_threshold)
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"case vocab={vocab} {method} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= AGREE_RTOL * max(abs(a), abs(b), 1e-12)


def markdown(result: dict) -> str:
    c = result["config"]
    lines = [
        f"LM distillation loss, {c['kind']}, {c['tokens']} tokens (¼ masked), hidden {c['hidden']}, "
        f"{c['dtype']}, chunk {c['chunk']}, on {c['device']}: loss + backward"
        + (f" (MALLOC_MMAP_THRESHOLD_={c['malloc_mmap_threshold']})." if c["malloc_mmap_threshold"] else "."),
        "",
        "| vocab | method | peak MB | time s | loss | memory vs naive | agrees |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["results"]:
        ratio = result["ratios"][str(r["vocab"])]
        vs = "100%" if r["method"] == "naive" else ("–" if ratio != ratio else f"{ratio:.1%}")  # nan: no peak
        agrees = "yes" if r.get("agrees", True) else "**no**"
        row = [r["vocab"], r["method"], f"{r['peak_mb']:.0f}", f"{r['time_s']:.2f}", f"{r['loss']:.6f}", vs, agrees]
        lines.append("| " + " | ".join(map(str, row)) + " |")
    met = "yes" if result["meets_target"] else "**no**"
    lines += ["", f"Target chunked ≤ {TARGET:.0%} of naive at vocab {max(c['vocab'])}: {met}."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(run_case(args)))
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible here; use --device cpu.")
    results, ratios = [], {}
    for vocab in args.vocab:
        naive, chunked = _spawn(args, vocab, "naive"), _spawn(args, vocab, "chunked")
        keys = ("loss", "ce_sum", "div_sum", "grad_norm_hidden", "grad_norm_weight")
        chunked["agrees"] = naive["num_valid"] == chunked["num_valid"] and all(
            _close(naive[k], chunked[k]) for k in keys
        )
        ratios[str(vocab)] = chunked["peak_mb"] / naive["peak_mb"] if naive["peak_mb"] > 0 else float("nan")
        results += [naive, chunked]
    device = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU ({platform.machine()})"
    names = ("vocab", "tokens", "hidden", "chunk", "kind", "dtype", "malloc_mmap_threshold")
    config = {k: getattr(args, k) for k in names}
    result = {
        "config": {**config, "device": device, "torch": torch.__version__, "threads": torch.get_num_threads()},
        "results": results,
        "ratios": ratios,
        "target": TARGET,
        "meets_target": bool(ratios[str(max(args.vocab))] <= TARGET),
    }
    print(markdown(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0 if all(r.get("agrees", True) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

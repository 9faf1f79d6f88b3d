"""FFF layer alone vs a dense feed-forward of equal width on CPU: UltraFastBERT's micro-benchmark.

Both layers map hidden -> hidden through ``n`` neurons: the dense one evaluates all ``n`` (two
matmuls, ``torch.nn.Linear`` + GELU), the FFF one (``FastFeedForward`` in eval mode) evaluates only
each token's path of ``depth + 1`` neurons by gathering their weight rows. Batch 1 means one input
of ``tokens`` rows (1 = a single token, 128 = one sequence of 128 tokens). Times are per call,
in microseconds, eager PyTorch, float32, ``torch.inference_mode``; warm-up calls excluded; the
speed-up is dense median / FFF median measured in the same run.

    .venv/bin/python bench/fff_layer.py                     # the README table
    .venv/bin/python bench/fff_layer.py --hidden 384 --depth 10 --tokens 1 32 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from machine import cpu_model
from understudy.models.layers.fff import FastFeedForward

RESULTS = Path(__file__).parent / "results" / "fff_layer.json"


def machine_info() -> dict[str, Any]:
    """Cores, CPU model, load, library versions: what a reader needs to compare timings."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def time_call(fn: Callable[[], object], *, warmup: int, min_runs: int, min_s: float) -> list[float]:
    """Wall time of each call in microseconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    deadline = time.perf_counter() + min_s
    while len(samples) < min_runs or time.perf_counter() < deadline:
        start = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - start) / 1e3)
    return samples


def summarise(samples: list[float]) -> dict[str, float]:
    """Median and p99 (microseconds) of a list of timings."""
    ordered = sorted(samples)
    return {
        "median_us": statistics.median(ordered),
        "p99_us": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        "runs": float(len(ordered)),
    }


def dense_layer(hidden: int, width: int) -> nn.Module:
    """The standard BERT feed-forward of ``width`` neurons (with biases, exact GELU)."""
    return nn.Sequential(nn.Linear(hidden, width), nn.GELU(), nn.Linear(width, hidden))


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    fff = FastFeedForward(args.hidden, args.hidden, depth=args.depth).eval()
    dense = dense_layer(args.hidden, fff.n_neurons).eval()
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for tokens in args.tokens:
            x = torch.randn(tokens, args.hidden)
            with torch.inference_mode():
                timings = {
                    name: summarise(
                        time_call(
                            lambda layer=layer, x=x: layer(x),
                            warmup=args.warmup,
                            min_runs=args.runs,
                            min_s=args.min_seconds,
                        )
                    )
                    for name, layer in (("dense", dense), ("fff", fff))
                }
            rows.append(
                {
                    "hidden": args.hidden,
                    "neurons": fff.n_neurons,
                    "depth": args.depth,
                    "neurons_per_token": fff.neurons_per_token,
                    "tokens": tokens,
                    "threads": threads,
                    "dense": timings["dense"],
                    "fff": timings["fff"],
                    "speedup": timings["dense"]["median_us"] / timings["fff"]["median_us"],
                }
            )
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    table = Table(title="FFF layer vs dense layer of equal width (CPU, batch 1, eager PyTorch)")
    for column in ("hidden", "neurons", "per token", "tokens", "threads"):
        table.add_column(column, justify="right")
    for column in ("dense p50 µs", "dense p99 µs", "FFF p50 µs", "FFF p99 µs", "speed-up"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            str(r["hidden"]),
            str(r["neurons"]),
            str(r["neurons_per_token"]),
            str(r["tokens"]),
            str(r["threads"]),
            f"{r['dense']['median_us']:.0f}",
            f"{r['dense']['p99_us']:.0f}",
            f"{r['fff']['median_us']:.0f}",
            f"{r['fff']['p99_us']:.0f}",
            f"{r['speedup']:.1f}x",
        )
    Console(width=160).print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--hidden", type=int, default=768, help="model width (BERT-base: 768)")
    parser.add_argument("--depth", type=int, default=11, help="tree depth (11: 4095 neurons)")
    parser.add_argument("--tokens", type=int, nargs="+", default=[1, 16, 128])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--runs", type=int, default=100, help="minimum timed calls per cell")
    parser.add_argument("--min-seconds", type=float, default=1.0, help="minimum time per cell")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    rows = run(args)
    print_table(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine_info(), "args": {k: str(v) for k, v in vars(args).items()}}
    args.out.write_text(json.dumps({**payload, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Student serving latency on CPU: torch fp32 vs ONNX fp32 vs ONNX int8, MiniLM-L6 and truncations.

For each encoder depth (the packaged all-MiniLM-L6-v2 with its first k layers kept), a student
artifact with one 2-label head is written, exported with ``export_onnx`` (fp32 + dynamic int8) and
loaded with ``load_student`` for each backend and thread count. Timed is the whole serving call,
``Student.predict(texts)``: tokenization, the network, calibration, building ``Prediction``s.
Latency is per call at batch 1 with inputs of exactly 32 and 128 tokens (p50/p99 in ms);
throughput is texts/s at batch 32 x 32 tokens. All configurations are timed in interleaved rounds,
so that a shared machine's drifting speed weighs on them alike; warm-up calls are excluded. The
question answered: which configuration reaches p50 <= 4 ms at batch 1 x 32 tokens on 2 threads.

    .venv/bin/python bench/serving.py                  # full table -> bench/results/serving.json
    .venv/bin/python bench/serving.py --layers 6 2 --runs 50
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import onnxruntime
import torch
from rich.console import Console
from rich.table import Table

from machine import cpu_model
from understudy.models.classifier import StudentModel
from understudy.models.encoder import BertEncoder
from understudy.models.pretrained import default_encoder_dir
from understudy.models.tokenizer import load_tokenizer
from understudy.serving.artifact import ENCODER_DIR, HEADS_FILE, StudentManifest
from understudy.serving.loader import Backend, load_student
from understudy.serving.onnx_export import export_onnx
from understudy.serving.student import Student
from understudy.tasks import Head

RESULTS = Path(__file__).parent / "results" / "serving.json"
BACKENDS: tuple[Backend, ...] = ("torch", "onnx-fp32", "onnx")
Config = tuple[int, str, int]
"""(encoder layers, backend or graph, threads) of one timed configuration."""
BACKEND_LABEL = {"torch": "torch fp32", "onnx-fp32": "ONNX fp32", "onnx": "ONNX int8"}
TARGET_P50_MS = 4.0
HEAD = Head("label", ("no", "yes"))
# Common words that the uncased BERT vocabulary holds as single tokens.
FILLER_TEXT = "the movie was good and the story was very fun but the end felt too long for me"
FILLER = FILLER_TEXT.split()


def machine_info() -> dict[str, Any]:
    """CPU, cores, load and library versions: what a reader needs to compare timings."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "torch_default_threads": torch.get_num_threads(),
    }


def text_of_tokens(tokens: int) -> str:
    """A text the MiniLM tokenizer turns into exactly ``tokens`` tokens ([CLS] + words + [SEP])."""
    words = [FILLER[i % len(FILLER)] for i in range(tokens - 2)]
    text = " ".join(words)
    count = len(load_tokenizer(default_encoder_dir(), 512).encode(text).ids)
    if count != tokens:
        raise RuntimeError(f"filler text has {count} tokens, wanted {tokens}")
    return text


def write_student(root: Path, layers: int) -> Path:
    """A finetune-kind artifact: MiniLM cut to ``layers`` layers, a random head, ONNX exports."""
    base = default_encoder_dir()
    artifact = root / f"minilm-l{layers}"
    encoder = BertEncoder.from_pretrained(base, num_layers=layers)
    encoder.save_pretrained(artifact / ENCODER_DIR)
    shutil.copy(base / "tokenizer.json", artifact / ENCODER_DIR / "tokenizer.json")
    torch.manual_seed(0)
    StudentModel(encoder, (HEAD,)).save_heads(artifact / HEADS_FILE)
    StudentManifest(
        kind="finetune", task="bench", task_version=1, heads=(HEAD,), max_length=128
    ).write(artifact)
    export_onnx(artifact)
    return artifact


def time_calls(student: Student, texts: list[str], runs: int, warmup: int) -> list[float]:
    """Wall time of ``runs`` calls of ``student.predict(texts)`` in ms, after ``warmup`` calls."""
    for _ in range(warmup):
        student.predict(texts)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        student.predict(texts)
        times.append((time.perf_counter() - start) * 1000.0)
    return times


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def measure_interleaved(
    configs: dict[Config, Student], runs: int, rounds: int
) -> dict[Config, dict[str, Any]]:
    """Latency at batch 1 (32 and 128 tokens) and throughput at batch 32 x 32 tokens of every
    configuration, measured in ``rounds`` rounds that each time every configuration in turn, so
    that the machine's drifting speed (a shared VM's can change by half within minutes) weighs
    on all of them alike."""
    short, long = text_of_tokens(32), text_of_tokens(128)
    inputs = {"b1_t32": [short], "b1_t128": [long], "b32_t32": [short] * 32}
    calls = {"b1_t32": runs, "b1_t128": max(runs // 2, 10), "b32_t32": max(runs // 10, 5)}
    times: dict[Config, dict[str, list[float]]] = {c: {n: [] for n in inputs} for c in configs}
    for config, student in configs.items():
        torch.set_num_threads(config[2])
        for texts in inputs.values():
            time_calls(student, texts, 0, warmup=5)
    for _ in range(rounds):
        for config, student in configs.items():
            torch.set_num_threads(config[2])
            for name, texts in inputs.items():
                block = max(calls[name] // rounds, 1)
                times[config][name] += time_calls(student, texts, block, warmup=1)
    rows = {}
    for config, measured in times.items():
        row: dict[str, Any] = {}
        for name in ("b1_t32", "b1_t128"):
            row[f"{name}_p50_ms"] = statistics.median(measured[name])
            row[f"{name}_p99_ms"] = percentile(measured[name], 99)
        row["b32_t32_texts_per_s"] = 32 / (statistics.median(measured["b32_t32"]) / 1000.0)
        rows[config] = row
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[6, 4, 3, 2])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--runs", type=int, default=200, help="timed calls at batch 1 x 32")
    parser.add_argument(
        "--rounds", type=int, default=10, help="rounds the calls are split into (interleaved)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    console = Console()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        sizes, configs = {}, {}
        for layers in args.layers:
            artifact = write_student(Path(tmp), layers)
            sizes[layers] = {
                "onnx_fp32_mb": (artifact / "model.onnx").stat().st_size / 1e6,
                "onnx_int8_mb": (artifact / "model.int8.onnx").stat().st_size / 1e6,
            }
            for backend in BACKENDS:
                for threads in args.threads:
                    student = load_student(artifact, backend, threads=threads)
                    configs[(layers, backend, threads)] = student
        console.log(f"timing {len(configs)} configurations in {args.rounds} interleaved rounds")
        for (layers, backend, threads), row in measure_interleaved(
            configs, args.runs, args.rounds
        ).items():
            model = {"model": f"MiniLM-L{layers}", "layers": layers, "backend": backend}
            results.append(model | {"threads": threads} | row | sizes[layers])

    table = Table(title="Student.predict latency (ms) and throughput, CPU")
    for column in (
        "model",
        "backend",
        "threads",
        "b1×32 p50",
        "b1×32 p99",
        "b1×128 p50",
        "b1×128 p99",
        "b32×32 texts/s",
        f"p50 ≤ {TARGET_P50_MS:g} ms",
    ):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(
            r["model"], BACKEND_LABEL[r["backend"]], str(r["threads"]),
            f"{r['b1_t32_p50_ms']:.2f}", f"{r['b1_t32_p99_ms']:.2f}",
            f"{r['b1_t128_p50_ms']:.2f}", f"{r['b1_t128_p99_ms']:.2f}",
            f"{r['b32_t32_texts_per_s']:.0f}",
            "yes" if r["b1_t32_p50_ms"] <= TARGET_P50_MS else "no",
        )  # fmt: skip
    console.print(table)
    meeting = [r for r in results if r["threads"] == 2 and r["b1_t32_p50_ms"] <= TARGET_P50_MS]
    deepest = max(meeting, key=lambda r: (r["layers"], r["backend"] != "onnx"), default=None)
    summary = (
        f"deepest configuration at p50 <= {TARGET_P50_MS:g} ms (batch 1 x 32 tokens, 2 threads): "
        + (f"{deepest['model']} {BACKEND_LABEL[deepest['backend']]}" if deepest else "none")
    )
    console.print(summary)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "benchmark": "serving",
                "measured": "Student.predict wall time incl. tokenization; batch 1 latency at "
                "32/128 tokens, throughput at batch 32 x 32 tokens",
                "created_at": datetime.now(UTC).isoformat(),
                "machine": machine_info(),
                "runs_b1_t32": args.runs,
                "summary": summary,
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

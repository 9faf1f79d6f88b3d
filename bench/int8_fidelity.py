"""int8 fidelity and speed: each int8 scheme of ``export_onnx`` against fp32, on trained students.

For each dataset, a probe, a fine-tuned and a distilled student (4 layers of the fine-tuned one)
are trained on the first N labels of the seeded training split with the trainers' defaults (what
the worker trains), exported to fp32 ONNX and quantized with every scheme of
``understudy.serving.onnx_export.INT8_SCHEMES``. Reported per graph: the share of the test texts
on which its answer is the fp32 graph's (what the worker's int8 check measures on held-out calls,
``UNDERSTUDY_INT8_MIN_AGREEMENT``), its test accuracy, and, for the first dataset's fine-tuned
and distilled students, the latency of one ``Student.predict`` call at batch 1 x 32 and 128
tokens (p50/p99 ms) and throughput at batch 32 x 32 tokens, every graph timed in interleaved
rounds (``bench/serving.py``'s ``measure_interleaved``).

    .venv/bin/python bench/int8_fidelity.py        # -> bench/results/int8-fidelity.json
    .venv/bin/python bench/int8_fidelity.py --datasets trec6 --labels 256 --runs 50
"""

from __future__ import annotations

import argparse
import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from serving import machine_info, measure_interleaved
from understudy.datasets import DATASET_NAMES, load_dataset
from understudy.serving.artifact import ENCODER_DIR, ONNX_FILE, StudentManifest
from understudy.serving.onnx_backend import OnnxStudent
from understudy.serving.onnx_export import INT8_SCHEMES, QUANTIZERS, export_onnx
from understudy.tasks import Example, Head, LabelSource, Task
from understudy.training import DistillConfig, FinetuneConfig, ProbeConfig, train_student

RESULTS = Path(__file__).parent / "results" / "int8-fidelity.json"
GRAPHS = ("fp32", *INT8_SCHEMES)
KINDS = ("probe", "finetune", "distill")
TIMED_KINDS = ("finetune", "distill")


def train(kind: str, task: Task, examples: list[Example], root: Path, seed: int) -> Path:
    """Train one student into ``root / kind`` with the trainer's defaults; the distilled one
    learns from the fine-tuned one beside it, as in the worker."""
    config = {
        "probe": ProbeConfig(seed=seed),
        "finetune": FinetuneConfig(seed=seed),
        "distill": DistillConfig(seed=seed, assistant_dir=root / "finetune"),
    }[kind]
    train_student(kind, task, examples, root / kind, config)
    return root / kind


def graphs_of(artifact: Path) -> dict[str, OnnxStudent]:
    """The student served from its fp32 graph and from each int8 scheme's, on 2 threads."""
    export_onnx(artifact, quantize_int8=False)
    paths = {"fp32": artifact / ONNX_FILE}
    for scheme in INT8_SCHEMES:
        paths[scheme] = QUANTIZERS[scheme](artifact / ONNX_FILE, artifact / f"{scheme}.onnx")
    manifest = StudentManifest.read(artifact)
    return {
        name: OnnxStudent(artifact, manifest, name, path, threads=2) for name, path in paths.items()
    }


def fidelity(students: dict[str, OnnxStudent], test: list[tuple[str, str]]) -> dict[str, Any]:
    """Per graph: agreement with the fp32 graph's answers and accuracy on ``test``."""
    texts, gold = [t for t, _ in test], [label for _, label in test]
    answers = {
        name: [p.labels["label"] for p in student.predict(texts)]
        for name, student in students.items()
    }
    return {
        name: {
            "agreement_with_fp32": sum(a == b for a, b in zip(labels, answers["fp32"], strict=True))
            / len(texts),
            "accuracy": sum(a == b for a, b in zip(labels, gold, strict=True)) / len(texts),
            "size_mb": students[name].model_path.stat().st_size / 1e6,
        }
        for name, labels in answers.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["rt-sentiment", "trec6"])
    parser.add_argument("--labels", type=int, default=1000, help="training labels per student")
    parser.add_argument("--seed", type=int, default=0, help="split and training seed")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training")
    parser.add_argument("--runs", type=int, default=200, help="timed calls at batch 1 x 32")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved timing rounds")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    unknown = set(args.datasets) - set(DATASET_NAMES)
    if unknown:
        parser.error(f"unknown datasets {sorted(unknown)}; choose from {DATASET_NAMES}")

    torch.set_num_threads(args.threads)
    console = Console()
    rows: list[dict[str, Any]] = []
    timings: dict[tuple[int, str, int], dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for position, name in enumerate(args.datasets):
            dataset = load_dataset(name, seed=args.seed)
            task = Task(key=name, version=1, schema={}, heads=(Head("label", dataset.labels),))
            examples = [
                Example(text, {"label": label}, LabelSource.TEACHER)
                for text, label in dataset.train[: args.labels]
            ]
            timed: dict[tuple[int, str, int], OnnxStudent] = {}
            for kind in KINDS:
                console.log(f"{name}: training the {kind} student on {len(examples)} labels")
                artifact = train(kind, task, examples, Path(tmp) / name, args.seed)
                students = graphs_of(artifact)
                for graph, scores in fidelity(students, dataset.test).items():
                    rows.append({"dataset": name, "kind": kind, "graph": graph} | scores)
                if position == 0 and kind in TIMED_KINDS:
                    layers = _layers(artifact)
                    timed |= {(layers, f"{kind} {g}", 2): s for g, s in students.items()}
            if timed:
                console.log(f"timing {len(timed)} graphs in {args.rounds} interleaved rounds")
                timings |= measure_interleaved(timed, args.runs, args.rounds)

    table = Table(title=f"int8 fidelity at {args.labels} labels (agreement with fp32 on test)")
    for column in ("dataset", "student", "graph", "agreement", "accuracy", "MB"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            r["dataset"], r["kind"], r["graph"], f"{r['agreement_with_fp32']:.4f}",
            f"{r['accuracy']:.3f}", f"{r['size_mb']:.1f}",
        )  # fmt: skip
    console.print(table)
    latency = Table(title="Student.predict latency (ms) and throughput, 2 threads, interleaved")
    for column in ("student", "layers", "b1×32 p50", "b1×32 p99", "b1×128 p50", "b32 texts/s"):
        latency.add_column(column, justify="right")
    for (layers, label, _), t in timings.items():
        latency.add_row(
            label, str(layers), f"{t['b1_t32_p50_ms']:.2f}", f"{t['b1_t32_p99_ms']:.2f}",
            f"{t['b1_t128_p50_ms']:.2f}", f"{t['b32_t32_texts_per_s']:.0f}",
        )  # fmt: skip
    console.print(latency)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "benchmark": "int8_fidelity",
                "measured": "agreement of each int8 graph's answers with the fp32 graph's on "
                "the full test set; Student.predict latency incl. tokenization",
                "created_at": datetime.now(UTC).isoformat(),
                "machine": machine_info(),
                "args": {k: str(v) for k, v in vars(args).items()},
                "fidelity": rows,
                "latency": [
                    {"student": label, "layers": layers} | t
                    for (layers, label, _), t in timings.items()
                ],
            },
            indent=2,
        )
        + "\n"
    )
    console.print(f"wrote {args.out}")


def _layers(artifact: Path) -> int:
    """Encoder layers of a trained encoder student (its ``encoder/config.json``)."""
    config = json.loads((artifact / ENCODER_DIR / "config.json").read_text())
    return int(config["num_hidden_layers"])


if __name__ == "__main__":
    main()

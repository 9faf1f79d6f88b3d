"""Architecture benchmark: dense MiniLM vs MiniLM converted to FFF vs crammed tiny BERTs (dense,
FFF, FNet) vs a frozen-embedding probe, fine-tuned on offline datasets and timed on CPU.

Every model goes through understudy's own student trainers (``train_student("finetune" |
"probe")``) and is scored and timed as a served student (``load_student(..., backend="torch")``),
so accuracy and latency are those a deployment would see. Per dataset: a fixed stratified split
(``load_dataset(name, seed=0)``), ``--train-size`` training texts sampled from its train part (the
trainer carves its calibration holdout from these) and ``--test-size`` test texts.

Models:
  minilm-dense   the packaged all-MiniLM-L6-v2, fine-tuned
  minilm-fff     the same with each feed-forward distilled into an FFF (models.convert_fff) on the
                 dataset's training texts, then fine-tuned
  crammed-dense  a tiny BERT MLM-pretrained here (understudy.pretraining) on the training texts of
                 all datasets of the run, fine-tuned
  crammed-fff    the same recipe with FFF feed-forwards (UltraFastBERT-style, bias-free)
  crammed-fnet   the same recipe with Fourier token mixing (FNet)
  minilm-probe   frozen MiniLM mean-pooled embeddings + logistic regression

Reported: accuracy and macro-F1 (mean ± std over seeds), parameters (all stored / used per token
is in the FLOPs), forward FLOPs per token (matmuls and FFTs at the test set's mean length),
latency p50/p99 at batch 1 and throughput at batch 32 with 1 and 2 threads, both end to end
through ``Student.predict`` (tokenization + forward + calibration).

    .venv/bin/python bench/architectures.py                    # full grid (hours on 2 cores)
    .venv/bin/python bench/architectures.py --datasets rt-sentiment --seeds 0 \\
        --models minilm-dense minilm-fff --train-size 1000      # a slice
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import random
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, get_args

import torch
from rich.console import Console
from rich.table import Table
from sklearn.metrics import f1_score

from fff_layer import machine_info, summarise, time_call
from understudy.datasets import DATASET_NAMES, DatasetName, LabelledDataset, load_dataset
from understudy.models.config import EncoderConfig
from understudy.models.convert_fff import ConversionConfig, InitName, convert_to_fff
from understudy.models.encoder import BertEncoder
from understudy.models.pretrained import default_encoder_dir
from understudy.models.tokenizer import TOKENIZER_FILE, VOCAB_FILE, encode_batch, load_tokenizer
from understudy.pretraining import PretrainConfig, pretrain
from understudy.pretraining.corpus import dataset_texts
from understudy.serving.loader import load_student
from understudy.serving.student import Student
from understudy.tasks import Example, Head, Task
from understudy.training import train_student
from understudy.training.config import FinetuneConfig, ProbeConfig

MODELS = (
    "minilm-dense",
    "minilm-fff",
    "crammed-dense",
    "crammed-fff",
    "crammed-fnet",
    "minilm-probe",
)
RESULTS = Path(__file__).parent / "results" / "architectures.json"
HEAD = "label"


def sample(rows: list[tuple[str, str]], size: int, seed: int) -> list[tuple[str, str]]:
    """``size`` rows drawn without replacement with ``seed`` (all rows when fewer)."""
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return rows[:size]


def encoder_dirs(args: argparse.Namespace, datasets: list[LabelledDataset]) -> dict[str, Path]:
    """Build (or reuse from the cache) the encoder each non-MiniLM model starts from."""
    cache: Path = args.cache_dir
    dirs: dict[str, Path] = {}
    corpus_names: list[DatasetName] = [d.name for d in datasets]  # type: ignore[misc]
    variants = {
        "crammed-dense": {},
        "crammed-fff": {"feedforward": "fff", "fff_leaf_width": args.crammed_fff_leaf_width},
        "crammed-fnet": {"token_mixer": "fourier"},
    }
    for model, overrides in variants.items():
        if model not in args.models:
            continue
        config = PretrainConfig(
            hidden_size=args.crammed_hidden,
            num_layers=args.crammed_layers,
            num_heads=args.crammed_heads,
            intermediate_size=args.crammed_intermediate,
            steps=args.pretrain_steps,
            seq_len=args.pretrain_seq_len,
            seed=0,
            device="cpu",
            checkpoint_every=0,
            **overrides,  # type: ignore[arg-type]
        )
        digest = hashlib.sha256(repr(config).encode()).hexdigest()[:10]
        key = f"{model}-{'+'.join(corpus_names)}-{digest}"
        out = cache / "pretrained" / key
        if not (out / "pretrain.json").is_file():
            Console().print(f"[bold]pretraining {model}[/] -> {out}")
            pretrain(dataset_texts(corpus_names), out, config)
        dirs[model] = out
    return dirs


def converted_dir(args: argparse.Namespace, dataset: LabelledDataset) -> Path:
    """MiniLM with FFF feed-forwards distilled on ``dataset``'s training texts (cached)."""
    config = ConversionConfig(
        depth=args.fff_depth,
        leaf_width=args.fff_leaf_width,
        init=args.convert_init,
        steps=args.convert_steps,
        max_tokens=args.convert_tokens,
    )
    out = args.cache_dir / "converted" / f"{dataset.name}-d{config.depth}-w{config.leaf_width}"
    out = out.with_name(f"{out.name}-{config.init}-s{config.steps}-t{config.max_tokens}")
    if (out / "conversion.json").is_file():
        return out
    source = default_encoder_dir()
    tokenizer = load_tokenizer(source, args.max_length)
    texts = [text for text, _ in sample(dataset.train, args.convert_texts, seed=0)]
    Console().print(f"[bold]converting MiniLM to FFF[/] on {len(texts)} {dataset.name} texts")
    result = convert_to_fff(BertEncoder.from_pretrained(source), tokenizer, texts, config)
    result.encoder.save_pretrained(out)
    for name in (TOKENIZER_FILE, VOCAB_FILE):
        shutil.copy(source / name, out / name)
    (out / "conversion.json").write_text(
        json.dumps({"config": vars(config), "layers": [vars(r) for r in result.layers]}, indent=2)
        + "\n"
    )
    return out


def train_model(
    model: str,
    task: Task,
    examples: list[Example],
    out_dir: Path,
    encoder_dir: Path,
    seed: int,
    args: argparse.Namespace,
) -> float:
    """Train one student into ``out_dir``; returns training seconds."""
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    started = time.perf_counter()
    if model == "minilm-probe":
        config: ProbeConfig | FinetuneConfig = ProbeConfig(
            seed=seed,
            encoder_dir=encoder_dir,
            max_length=args.max_length,
            cache_dir=args.cache_dir / "embeddings",
            progress=False,
        )
        train_student("probe", task, examples, out_dir, config)
    else:
        crammed = model.startswith("crammed")
        config = FinetuneConfig(
            seed=seed,
            encoder_dir=encoder_dir,
            max_length=args.max_length,
            epochs=args.epochs,
            min_steps=args.min_steps,
            batch_size=args.batch_size,
            learning_rate=args.crammed_lr if crammed else args.minilm_lr,
            progress=False,
        )
        train_student("finetune", task, examples, out_dir, config)
    return time.perf_counter() - started


def score(student: Student, test: list[tuple[str, str]]) -> dict[str, float]:
    """Accuracy and macro-F1 of ``student`` on ``test``."""
    predicted: list[str] = []
    for start in range(0, len(test), 64):
        batch = [text for text, _ in test[start : start + 64]]
        predicted += [p.labels[HEAD] for p in student.predict(batch)]
    gold = [label for _, label in test]
    accuracy = sum(p == g for p, g in zip(predicted, gold, strict=True)) / len(gold)
    return {"accuracy": accuracy, "macro_f1": float(f1_score(gold, predicted, average="macro"))}


def rotating(student: Student, inputs: Sequence[list[str]]) -> Callable[[], object]:
    """A call that predicts the next input of ``inputs`` each time, round robin."""
    upcoming = itertools.cycle(inputs)
    return lambda: student.predict(next(upcoming))


def speed(student: Student, texts: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """End-to-end latency at batch 1 and throughput at batch 32, per thread count."""
    out: dict[str, Any] = {}
    batches = [texts[i : i + 32] for i in range(0, len(texts) - 31, 32)] or [texts[:32]]
    for threads in args.threads:
        torch.set_num_threads(threads)
        single = summarise(
            time_call(
                rotating(student, [[text] for text in texts]),
                warmup=10,
                min_runs=args.latency_runs,
                min_s=args.min_seconds,
            )
        )
        batched = summarise(
            time_call(
                rotating(student, batches),
                warmup=2,
                min_runs=max(args.latency_runs // 10, 5),
                min_s=args.min_seconds,
            )
        )
        out[f"threads_{threads}"] = {
            "latency_b1_p50_ms": single["median_us"] / 1e3,
            "latency_b1_p99_ms": single["p99_us"] / 1e3,
            "throughput_b32_per_s": 32 / (batched["median_us"] / 1e6),
        }
    return out


def flops_per_token(config: EncoderConfig, mean_length: float) -> float:
    """Forward FLOPs per token of the encoder (2 per multiply-add; FFT ~ 5 N log2 N per N-point).

    Attention: Q, K, V, output projections + scores and context at ``mean_length`` tokens. FFF:
    the ``depth + leaf_width`` neurons of one path, in and out. Embeddings and LayerNorms omitted.
    """
    hidden, length = config.hidden_size, max(mean_length, 2.0)
    if config.token_mixer == "attention":
        mixer = 2 * 4 * hidden * hidden + 2 * 2 * length * hidden
    else:
        mixer = 5 * hidden * math.log2(hidden) + 5 * hidden * math.log2(length)
    if config.feedforward == "fff":
        options = config.layer_options
        per_token = int(options["fff_depth"]) + int(options.get("fff_leaf_width", 1))
        feedforward = 2 * 2 * per_token * hidden
    else:
        feedforward = 2 * 2 * config.intermediate_size * hidden
    return float(config.num_hidden_layers * (mixer + feedforward))


def run(args: argparse.Namespace) -> dict[str, Any]:
    # Training, conversion and pretraining run at --train-threads: on a busy machine OpenMP
    # hand-offs between threads cost more than they save (measured 30x slower at 2 threads).
    torch.set_num_threads(args.train_threads)
    datasets = [load_dataset(name, seed=0) for name in args.datasets]
    encoders = encoder_dirs(args, datasets)
    minilm = default_encoder_dir()
    results: dict[str, Any] = {}
    for dataset in datasets:
        train = sample(dataset.train, args.train_size, seed=0)
        test = sample(dataset.test, args.test_size, seed=0)
        task = Task(
            key=f"bench-{dataset.name}", version=1, schema={}, heads=(Head(HEAD, dataset.labels),)
        )
        examples = [Example(text=text, labels={HEAD: label}) for text, label in train]
        tokenizer = load_tokenizer(minilm, args.max_length)
        _, mask = encode_batch(tokenizer, [text for text, _ in test])
        mean_length = float(mask.sum(1).float().mean())
        per_model: dict[str, Any] = {}
        for model in args.models:
            if model == "minilm-fff":
                encoder_dir = converted_dir(args, dataset)
            elif model.startswith("crammed"):
                encoder_dir = encoders[model]
            else:
                encoder_dir = minilm
            runs = []
            for seed in args.seeds:
                out_dir = args.cache_dir / "runs" / dataset.name / model / f"seed-{seed}"
                Console().print(f"{dataset.name} {model} seed {seed}: training")
                torch.set_num_threads(args.train_threads)
                seconds = train_model(model, task, examples, out_dir, encoder_dir, seed, args)
                student = load_student(out_dir, backend="torch")
                runs.append({"seed": seed, "train_seconds": seconds, **score(student, test)})
                Console().print(f"  -> {runs[-1]}")
            config = BertEncoder.from_pretrained(encoder_dir).config
            student = load_student(
                args.cache_dir / "runs" / dataset.name / model / f"seed-{args.seeds[0]}",
                backend="torch",
            )
            parameters = sum(p.numel() for p in student.model.parameters())  # type: ignore[attr-defined]
            per_model[model] = {
                "runs": runs,
                "accuracy_mean": statistics.mean(r["accuracy"] for r in runs),
                "accuracy_std": statistics.stdev([r["accuracy"] for r in runs])
                if len(runs) > 1
                else 0.0,
                "macro_f1_mean": statistics.mean(r["macro_f1"] for r in runs),
                "parameters": parameters,
                "flops_per_token": flops_per_token(config, mean_length),
                "encoder": {
                    "feedforward": config.feedforward,
                    "token_mixer": config.token_mixer,
                    "layers": config.num_hidden_layers,
                    "hidden": config.hidden_size,
                    "layer_options": config.layer_options,
                },
                "speed": speed(student, [text for text, _ in test], args),
            }
        results[dataset.name] = {
            "labels": list(dataset.labels),
            "train_size": len(train),
            "test_size": len(test),
            "split_seed": 0,
            "mean_test_tokens": mean_length,
            "models": per_model,
        }
    return results


def print_table(results: dict[str, Any], threads: list[int]) -> None:
    for name, entry in results.items():
        table = Table(
            title=f"{name}: train {entry['train_size']}, test {entry['test_size']}, "
            f"mean {entry['mean_test_tokens']:.0f} tokens"
        )
        for column in ("model", "accuracy", "macro-F1", "params (M)", "MFLOPs/token"):
            table.add_column(column, justify="right")
        for t in threads:
            table.add_column(f"p50 b1 ms ({t}t)", justify="right")
            table.add_column(f"b32 texts/s ({t}t)", justify="right")
        for model, m in entry["models"].items():
            row = [
                model,
                f"{m['accuracy_mean']:.3f} ± {m['accuracy_std']:.3f} (n={len(m['runs'])})",
                f"{m['macro_f1_mean']:.3f}",
                f"{m['parameters'] / 1e6:.1f}",
                f"{m['flops_per_token'] / 1e6:.2f}",
            ]
            for t in threads:
                s = m["speed"][f"threads_{t}"]
                row += [f"{s['latency_b1_p50_ms']:.1f}", f"{s['throughput_b32_per_s']:.0f}"]
            table.add_row(*row)
        Console(width=200).print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument(
        "--datasets", nargs="+", default=["rt-sentiment", "trec6"], choices=DATASET_NAMES
    )
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train-size", type=int, default=2000, help="training texts per dataset")
    parser.add_argument("--test-size", type=int, default=1000, help="test texts per dataset")
    parser.add_argument("--max-length", type=int, default=64, help="tokens per text")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument(
        "--min-steps", type=int, default=0, help="trainer's floor on optimizer steps (0: none)"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--minilm-lr", type=float, default=5e-5)
    parser.add_argument("--crammed-lr", type=float, default=5e-4)
    parser.add_argument("--fff-depth", type=int, default=4, help="converted MiniLM's FFF depth")
    parser.add_argument("--fff-leaf-width", type=int, default=32, help="its leaf width")
    parser.add_argument(
        "--convert-init",
        choices=get_args(InitName),
        default="coactivation",
        help="how the FFF tree starts before distillation (see understudy.models.convert_fff)",
    )
    parser.add_argument("--convert-steps", type=int, default=400, help="distillation steps/layer")
    parser.add_argument("--convert-tokens", type=int, default=20000, help="activations/layer")
    parser.add_argument("--convert-texts", type=int, default=2000)
    parser.add_argument("--crammed-hidden", type=int, default=128)
    parser.add_argument("--crammed-layers", type=int, default=2)
    parser.add_argument("--crammed-heads", type=int, default=2)
    parser.add_argument("--crammed-intermediate", type=int, default=512)
    parser.add_argument("--crammed-fff-leaf-width", type=int, default=1)
    parser.add_argument("--pretrain-steps", type=int, default=300)
    parser.add_argument("--pretrain-seq-len", type=int, default=64)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="timed threads")
    parser.add_argument("--train-threads", type=int, default=1, help="threads for training")
    parser.add_argument("--latency-runs", type=int, default=50)
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument(
        "--cache-dir", type=Path, default=Path(".understudy/bench-cache/architectures")
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    started = time.perf_counter()
    results = run(args)
    print_table(results, args.threads)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": machine_info(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "wall_seconds": time.perf_counter() - started,
        "results": results,
    }
    args.out.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Each student trains on the synthetic task, writes a loadable artifact and beats chance widely."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from understudy.errors import ConfigurationError, InsufficientData
from understudy.evaluation import evaluate
from understudy.serving.loader import load_student
from understudy.tasks import Example, Task
from understudy.training import (
    DistillConfig,
    FinetuneConfig,
    NgramConfig,
    ProbeConfig,
    StudentConfig,
    train_student,
)

# Chance: 1/3 for topic (balanced), 0.6 for urgent (always "false").
CHANCE = {"topic": 1 / 3, "urgent": 0.6}
# Fine-tuning a random 2-layer encoder from scratch needs a higher rate than a pretrained one.
FAST = {
    "progress": False,
    "epochs": 5,
    "min_steps": 0,
    "max_length": 32,
    "learning_rate": 3e-3,
}


@pytest.fixture
def agreements(
    task: Task, train_examples: list[Example], test_examples: list[Example]
) -> Callable[[str, StudentConfig | None, Path], dict[str, float]]:
    """Train a student of a kind, load it from its artifact, return agreement per head on the
    held-out tickets."""

    def run(kind: str, config: StudentConfig | None, out: Path) -> dict[str, float]:
        result = train_student(kind, task, train_examples, out, config)
        assert result.kind == kind and result.n_holdout > 0
        report = evaluate(load_student(out, "torch"), task, test_examples)
        return {head.name: head.agreement or 0.0 for head in report.heads}

    return run


Agreements = Callable[[str, StudentConfig | None, Path], dict[str, float]]


def test_ngram_student_agrees_almost_always(tmp_path: Path, agreements: Agreements) -> None:
    agreement = agreements("ngram", NgramConfig(), tmp_path / "ngram")
    assert agreement["topic"] >= 0.95 and agreement["urgent"] >= 0.95
    run = json.loads((tmp_path / "ngram" / "run.json").read_text())
    assert run["kind"] == "ngram" and run["config"]["seed"] == 0
    assert run["label_counts"]["topic"]["billing"] > 50
    assert len(run["data_hash"]) == 64


def test_probe_student_beats_chance_and_reuses_cached_embeddings(
    tmp_path: Path,
    tiny_encoder: Path,
    agreements: Agreements,
    task: Task,
    train_examples: list[Example],
) -> None:
    config = ProbeConfig(encoder_dir=tiny_encoder, progress=False, cache_dir=tmp_path / "cache")
    agreement = agreements("probe", config, tmp_path / "probe")
    assert agreement["topic"] >= CHANCE["topic"] + 0.35
    assert agreement["urgent"] >= CHANCE["urgent"] + 0.25
    manifest = json.loads((tmp_path / "probe" / "student.json").read_text())
    assert manifest["base_encoder"] == str(tiny_encoder.resolve())
    again = train_student("probe", task, train_examples, tmp_path / "again", config)
    assert again.extra["embedded_texts"] == 0


@pytest.mark.parametrize(
    ("kind", "config_class"), [("finetune", FinetuneConfig), ("distill", DistillConfig)]
)
def test_encoder_students_beat_chance(
    kind: str,
    config_class: type[FinetuneConfig],
    tmp_path: Path,
    tiny_encoder: Path,
    agreements: Agreements,
) -> None:
    config = config_class(encoder_dir=tiny_encoder, head_learning_rate=3e-3, **FAST)  # type: ignore[arg-type]
    agreement = agreements(kind, config, tmp_path / kind)
    assert agreement["topic"] >= CHANCE["topic"] + 0.2
    assert agreement["urgent"] >= CHANCE["urgent"] + 0.25
    run = json.loads((tmp_path / kind / "run.json").read_text())
    assert 1 <= run["extra"]["best_epoch"] <= FAST["epochs"]
    assert (tmp_path / kind / "encoder" / "tokenizer.json").is_file()


def test_distilled_student_shrinks_its_finetuned_assistant(
    tmp_path: Path, tiny_encoder: Path, agreements: Agreements
) -> None:
    tuning = {"encoder_dir": tiny_encoder, "head_learning_rate": 3e-3, **FAST}
    agreements("finetune", FinetuneConfig(**tuning), tmp_path / "finetune")  # type: ignore[arg-type]
    config = DistillConfig(assistant_dir=tmp_path / "finetune", num_layers=1, **tuning)  # type: ignore[arg-type]
    agreement = agreements("distill", config, tmp_path / "distill")
    assert agreement["topic"] >= CHANCE["topic"] + 0.2
    assert agreement["urgent"] >= CHANCE["urgent"] + 0.25
    encoder = json.loads((tmp_path / "distill" / "encoder" / "config.json").read_text())
    assert encoder["num_hidden_layers"] == 1
    run = json.loads((tmp_path / "distill" / "run.json").read_text())
    assert run["extra"]["base_encoder"] == str(tmp_path / "finetune" / "encoder")


def test_lora_with_frozen_bottom_layer_saves_a_plain_merged_encoder(
    tmp_path: Path, tiny_encoder: Path, task: Task, train_examples: list[Example]
) -> None:
    config = FinetuneConfig(
        encoder_dir=tiny_encoder,
        freeze_bottom=1,
        lora_rank=2,
        **FAST,  # type: ignore[arg-type]
    )
    train_student("finetune", task, train_examples, tmp_path / "lora", config)
    base = load_file(str(tiny_encoder / "model.safetensors"))
    saved = load_file(str(tmp_path / "lora" / "encoder" / "model.safetensors"))
    assert set(saved) == set(base)  # no adapter tensors left: LoRA was merged
    frozen = "encoder.layer.0.attention.self.query.weight"
    adapted = "encoder.layer.1.attention.self.query.weight"
    untouched = "encoder.layer.1.intermediate.dense.weight"  # LoRA adapts attention only
    assert torch.equal(saved[frozen], base[frozen])
    assert not torch.allclose(saved[adapted], base[adapted])
    assert torch.equal(saved[untouched], base[untouched])
    student = load_student(tmp_path / "lora", "torch")
    assert len(student.predict(["refund please"])) == 1


def test_dispatcher_rejects_unknown_kind_wrong_config_and_too_few_labels(
    tmp_path: Path, task: Task, train_examples: list[Example]
) -> None:
    with pytest.raises(ConfigurationError, match="unknown student kind"):
        train_student("svm", task, train_examples, tmp_path / "x")
    with pytest.raises(ConfigurationError, match="NgramConfig"):
        train_student("ngram", task, train_examples, tmp_path / "x", ProbeConfig())
    with pytest.raises(InsufficientData, match="topic"):
        train_student("ngram", task, train_examples[:5], tmp_path / "x")
    with pytest.raises(ConfigurationError, match="exceeds"):
        train_student(
            "finetune",
            task,
            train_examples,
            tmp_path / "x",
            FinetuneConfig(freeze_bottom=5, reinit_top=5),
        )

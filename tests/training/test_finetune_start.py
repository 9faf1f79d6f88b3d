"""Where fine-tuning starts and what else it learns: heads fitted as the probe's (LP-FT) and the
supervised contrastive loss."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import torch

from understudy.models.classifier import StudentModel
from understudy.models.tokenizer import load_tokenizer
from understudy.serving.loader import load_student
from understudy.tasks import Example, Task
from understudy.training import (
    DistillConfig,
    DistillTrainer,
    FinetuneConfig,
    FinetuneTrainer,
    train_student,
)
from understudy.training.finetune import supervised_contrastive_loss


def _accuracy(
    trainer: FinetuneTrainer, model: StudentModel, task: Task, examples: list[Example]
) -> dict[str, float]:
    tokenizer = load_tokenizer(trainer.starting_encoder(), trainer.config.max_length)
    batches = trainer.batches(task, examples, tokenizer, shuffle=False, generator=random.Random(0))
    logits = trainer.holdout_logits(model, task, batches)
    return {
        head.name: sum(
            head.labels[int(row.argmax())] == example.labels[head.name]
            for row, example in zip(logits[head.name], examples, strict=True)
        )
        / len(examples)
        for head in task.heads
    }


def test_probe_heads_classify_before_any_fine_tuning(
    tiny_encoder: Path, task: Task, train_examples: list[Example], test_examples: list[Example]
) -> None:
    trainer = FinetuneTrainer(FinetuneConfig(encoder_dir=tiny_encoder, max_length=32))
    tokenizer = load_tokenizer(tiny_encoder, 32)
    random_heads = trainer.build_model(task, tiny_encoder)
    probe_heads = trainer.build_model(task, tiny_encoder)
    trainer.fit_probe_heads(probe_heads, task, train_examples, tokenizer)
    before = _accuracy(trainer, random_heads, task, test_examples)
    after = _accuracy(trainer, probe_heads, task, test_examples)
    # The probe student's bar on the same encoder (tests/training/test_students.py).
    assert after["topic"] >= 1 / 3 + 0.35 and after["topic"] > before["topic"] + 0.2
    assert after["urgent"] >= 0.6 + 0.25
    assert all(torch.isfinite(p).all() for p in probe_heads.classifiers.parameters())


def test_contrastive_loss_is_lower_when_labels_cluster() -> None:
    labels = torch.tensor([0, 0, 1, 1])
    clustered = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    mixed = clustered[[0, 2, 1, 3]]
    together = supervised_contrastive_loss(clustered, labels, temperature=0.3)
    apart = supervised_contrastive_loss(mixed, labels, temperature=0.3)
    assert float(together) < float(apart)


def test_contrastive_loss_is_zero_without_a_same_label_partner_and_has_finite_gradients() -> None:
    embedding = torch.randn(3, 4, requires_grad=True)
    alone = supervised_contrastive_loss(embedding, torch.tensor([0, 1, 2]), temperature=0.3)
    assert float(alone) == 0.0
    paired = supervised_contrastive_loss(embedding, torch.tensor([0, 0, 1]), temperature=0.3)
    paired.backward()  # type: ignore[no-untyped-call]
    assert embedding.grad is not None and torch.isfinite(embedding.grad).all()


def test_fine_tuning_from_probe_heads_ends_no_worse_on_the_holdout_than_it_starts(
    tmp_path: Path, tiny_encoder: Path, task: Task, train_examples: list[Example]
) -> None:
    config = FinetuneConfig(
        encoder_dir=tiny_encoder,
        max_length=32,
        epochs=3,
        min_steps=0,
        head_init="probe",
        progress=False,
    )
    result = train_student("finetune", task, train_examples, tmp_path / "lpft", config)
    start = result.extra["start"]["holdout_accuracy"]
    assert start >= 0.7  # mean over both heads, before any step: the probe-fitted heads
    kept = [calibration.holdout_accuracy for calibration in result.calibration.values()]
    # Early stopping keeps the start unless beaten (the start was scored in float32).
    assert sum(kept) / len(kept) >= start - 1e-6
    assert load_student(tmp_path / "lpft", "torch").predict(["refund please"])[0].labels


def test_distillation_contrasts_soft_labelled_examples_by_their_likeliest_label(
    tiny_encoder: Path, task: Task
) -> None:
    trainer = DistillTrainer(
        DistillConfig(encoder_dir=tiny_encoder, max_length=32, contrastive_weight=1.0)
    )
    soft = ({"billing": 0.8, "bug": 0.2}, {"bug": 0.7, "shipping": 0.3}, {"billing": 0.6})
    examples = [
        Example(
            text, {"topic": max(s, key=s.__getitem__), "urgent": "false"}, soft_labels={"topic": s}
        )
        for text, s in zip(("refund now", "app crash", "card charge"), soft, strict=True)
    ]
    tokenizer = load_tokenizer(tiny_encoder, 32)
    model = trainer.build_model(task, tiny_encoder).eval()
    (batch,) = trainer.batches(task, examples, tokenizer, shuffle=False, generator=random.Random(0))
    embedding = model.embed(batch.input_ids, batch.attention_mask)
    topic = supervised_contrastive_loss(embedding, torch.tensor([0, 1, 0]), 0.3)
    urgent = supervised_contrastive_loss(embedding, torch.tensor([0, 0, 0]), 0.3)
    assert torch.allclose(trainer.batch_loss(model, batch, 0.3), topic + urgent)


def test_refitting_on_every_example_keeps_the_holdout_temperature(
    tmp_path: Path, tiny_encoder: Path, task: Task, train_examples: list[Example]
) -> None:
    config = FinetuneConfig(
        encoder_dir=tiny_encoder, max_length=32, epochs=3, refit_below=0, progress=False
    )
    split = train_student("finetune", task, train_examples, tmp_path / "split", config)
    refit_config = replace(config, refit_below=len(train_examples) + 1)
    refit = train_student("finetune", task, train_examples, tmp_path / "refit", refit_config)

    assert split.extra["refitted_on_all"] is False and refit.extra["refitted_on_all"] is True
    assert split.n_train + split.n_holdout == refit.n_train == len(train_examples)
    # The first run is the same; its holdout fitted the temperature the refitted model keeps.
    assert refit.calibration == split.calibration and refit.extra["best_epoch"] > 0
    split_student = load_student(tmp_path / "split", "torch")
    refit_student = load_student(tmp_path / "refit", "torch")
    texts = [e.text for e in train_examples[:20]]
    assert [p.probs for p in split_student.predict(texts)] != [
        p.probs for p in refit_student.predict(texts)
    ]
    assert all(p.labels for p in refit_student.predict(texts))


def test_fine_tuning_below_the_bar_uses_the_sharper_contrastive_temperature_distillation_not(
    tmp_path: Path, tiny_encoder: Path, task: Task, train_examples: list[Example]
) -> None:
    config = FinetuneConfig(
        encoder_dir=tiny_encoder, max_length=32, epochs=1, min_steps=0, progress=False
    )
    bar = len(train_examples)
    many = train_student(
        "finetune",
        task,
        train_examples,
        tmp_path / "many",
        replace(config, sharp_contrastive_below=bar),
    )
    few = train_student(
        "finetune",
        task,
        train_examples,
        tmp_path / "few",
        replace(config, sharp_contrastive_below=bar + 1),
    )

    assert many.extra["contrastive_temperature"] == config.contrastive_temperature
    assert few.extra["contrastive_temperature"] == config.sharp_contrastive_temperature
    assert config.sharp_contrastive_temperature < config.contrastive_temperature
    # Same data, seed and steps: only the temperature differs, and the loss with it.
    assert few.extra["history"][0]["train_loss"] != many.extra["history"][0]["train_loss"]
    distill_config = DistillConfig(
        encoder_dir=tiny_encoder, max_length=32, epochs=1, min_steps=0, progress=False
    )
    distilled = train_student("distill", task, train_examples, tmp_path / "distill", distill_config)
    assert distilled.extra["contrastive_temperature"] == distill_config.contrastive_temperature

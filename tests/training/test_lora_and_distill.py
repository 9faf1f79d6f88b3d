"""LoRA adapters start as the identity and merge exactly; distillation targets, weights and the
assistant's soft labels."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from understudy.errors import ConfigurationError
from understudy.serving.loader import load_student
from understudy.tasks import Example, Head, LabelSource, Task
from understudy.testing.tiny_models import write_tiny_student
from understudy.training import DistillConfig, DistillTrainer, FinetuneTrainer
from understudy.training.distill import assistant_soft_labels
from understudy.training.finetune import linear_schedule
from understudy.training.lora import LoRALinear, merge_lora


def test_lora_starts_as_the_base_layer_and_merges_to_the_same_function() -> None:
    torch.manual_seed(0)
    base = nn.Linear(8, 6)
    x = torch.randn(5, 8)
    expected = base(x).detach()
    wrapper = nn.Sequential(LoRALinear(base, rank=2, alpha=4.0, dropout=0.0))
    assert torch.allclose(wrapper(x), expected)
    with torch.no_grad():
        wrapper[0].lora_b.normal_()
    adapted = wrapper(x).detach()
    assert not torch.allclose(adapted, expected)
    merge_lora(wrapper)
    assert isinstance(wrapper[0], nn.Linear)
    assert torch.allclose(wrapper(x), adapted, atol=1e-5)


def test_linear_schedule_warms_up_then_decays_to_zero() -> None:
    factor = linear_schedule(warmup_steps=2, total_steps=10)
    assert [factor(s) for s in (0, 1, 2, 6, 10)] == pytest.approx([0.5, 1.0, 1.0, 0.5, 0.0])


TASK = Task(key="t", version=1, schema={}, heads=(Head("mood", ("bad", "good")),))


def test_distill_targets_use_soft_labels_at_temperature_else_smoothed_hard_labels() -> None:
    trainer = DistillTrainer(DistillConfig(temperature=2.0, label_smoothing=0.1, human_weight=3))
    examples = [
        Example("a", {"mood": "good"}, soft_labels={"mood": {"good": 0.9, "bad": 0.1}}),
        Example("b", {"mood": "bad"}),
        Example("c", {"mood": "good"}, LabelSource.HUMAN, soft_labels={"mood": {"bad": 1.0}}),
    ]
    target = trainer.targets(TASK, examples)["mood"]
    sharpened = torch.tensor([0.1, 0.9]) ** 0.5
    assert torch.allclose(target[0], torch.cat([sharpened / sharpened.sum(), torch.ones(1)]))
    assert torch.allclose(target[1], torch.tensor([0.95, 0.05, 0.0]))
    assert torch.allclose(target[2], torch.tensor([0.05, 0.95, 0.0]))  # human label wins
    assert trainer.example_weights(examples).tolist() == [1.0, 1.0, 3.0]


def test_distill_loss_equals_finetune_loss_on_unsmoothed_hard_targets() -> None:
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.3]])
    one_hot = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    weights = torch.ones(2)
    distill = DistillTrainer(DistillConfig(label_smoothing=0.0))
    with_flag = torch.cat([one_hot, torch.zeros(2, 1)], dim=1)
    assert torch.allclose(
        distill.loss(logits, with_flag, weights, "mood"),
        FinetuneTrainer().loss(logits, one_hot, weights, "mood"),
    )


def test_the_assistant_labels_teacher_examples_without_soft_labels_only(tmp_path: Path) -> None:
    assistant = write_tiny_student(tmp_path / "assistant", TASK.heads, task=TASK.key)
    teacher_soft = {"mood": {"good": 0.7, "bad": 0.3}}
    examples = [
        Example("refund please", {"mood": "bad"}),
        Example("great service", {"mood": "good"}, soft_labels=teacher_soft),
        Example("so slow", {"mood": "bad"}, LabelSource.HUMAN),
    ] * 40  # more than one of the assistant's batches
    labelled = assistant_soft_labels(assistant, TASK, examples)

    expected = load_student(assistant, "torch").predict(["refund please"])[0].probs["mood"]
    for example in (labelled[0], labelled[-3]):  # in the first and the last batch
        assert example.soft_labels is not None
        assert example.soft_labels["mood"] == pytest.approx(expected, abs=1e-5)
    assert labelled[1].soft_labels == teacher_soft  # the teacher's own distribution is kept
    assert labelled[2] == examples[2]  # gold labels are learned as they are
    other = Task(key="t", version=1, schema={}, heads=(Head("topic", ("a", "b")),))
    with pytest.raises(ConfigurationError, match="other heads"):
        assistant_soft_labels(assistant, other, examples)


def test_distilled_student_keeps_at_most_the_starting_encoders_layers(tmp_path: Path) -> None:
    assistant = write_tiny_student(tmp_path / "assistant", TASK.heads, num_layers=3)
    trainer = DistillTrainer(DistillConfig(assistant_dir=assistant))
    assert trainer.starting_encoder() == assistant / "encoder"
    assert trainer.kept_layers(trainer.starting_encoder()) == 3  # the default 4 is capped
    shallow = DistillTrainer(DistillConfig(assistant_dir=assistant, num_layers=2))
    assert shallow.kept_layers(shallow.starting_encoder()) == 2

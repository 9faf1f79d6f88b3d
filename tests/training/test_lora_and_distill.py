"""LoRA adapters start as the identity and merge exactly; distillation targets and weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from understudy.tasks import Example, Head, LabelSource, Task
from understudy.training import DistillConfig, DistillTrainer, FinetuneTrainer
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

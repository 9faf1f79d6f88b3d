"""The distilled student: a shallower encoder fine-tuned on soft labels (a subclass, as in setfit).

It keeps the first ``num_layers`` layers of the encoder it starts from: the base encoder, or,
given a fine-tuned student of the task as ``assistant_dir``, that student's encoder, whose
calibrated probabilities then also become the soft labels of examples the teacher gave none.
Where an example carries ``soft_labels`` (the teacher's probability mass per label, from its
logprobs, or the assistant's), the target is that distribution at temperature T, matched by
``softmax(logits / T)`` with the loss scaled by T² (Hinton et al., 2015). Otherwise the target is
the hard label with label smoothing. Human and imported labels are gold: their hard label is the
target and their weight is multiplied by ``human_weight``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor

from understudy.errors import ConfigurationError
from understudy.models.encoder import encoder_config
from understudy.serving.artifact import ENCODER_DIR
from understudy.serving.loader import load_student
from understudy.tasks import Example, LabelSource, Task
from understudy.training.artifact import TrainResult
from understudy.training.config import DistillConfig
from understudy.training.finetune import FinetuneTrainer

_GOLD = (LabelSource.HUMAN, LabelSource.IMPORT)
ASSISTANT_BATCH = 64
"""Texts per forward pass when the assistant labels the examples."""


class DistillTrainer(FinetuneTrainer):
    """Trains the distilled student; ``train`` writes a complete ``kind="distill"`` artifact."""

    kind = "distill"
    config: DistillConfig

    def __init__(self, config: DistillConfig | None = None) -> None:
        super().__init__(config or DistillConfig())

    def train(self, task: Task, examples: list[Example], out_dir: Path) -> TrainResult:
        """Label ``examples`` with the assistant's probabilities (when there is one), then train
        as the fine-tuned student does."""
        if self.config.assistant_dir is not None:
            examples = assistant_soft_labels(self.config.assistant_dir, task, examples)
        return super().train(task, examples, out_dir)

    def starting_encoder(self) -> Path:
        """The assistant's fine-tuned encoder when there is one, else the base encoder."""
        if self.config.assistant_dir is not None:
            return self.config.assistant_dir / ENCODER_DIR
        return super().starting_encoder()

    def kept_layers(self, encoder_dir: Path) -> int | None:
        """``num_layers``, at most the starting encoder's depth."""
        if self.config.num_layers is None:
            return None
        return min(self.config.num_layers, encoder_config(encoder_dir).num_hidden_layers)

    def targets(self, task: Task, examples: Sequence[Example]) -> dict[str, Tensor]:
        """Per head [N, C + 1]: the target distribution, then a last column that is 1.0 where the
        target is the teacher's soft distribution (trained at temperature T) and 0.0 otherwise."""
        config = self.config
        out = {}
        for head in task.heads:
            n_labels = len(head.labels)
            target = torch.zeros(len(examples), n_labels + 1)
            for row, example in enumerate(examples):
                soft = (example.soft_labels or {}).get(head.name)
                if soft and example.source not in _GOLD:
                    probs = torch.tensor([max(soft.get(label, 0.0), 0.0) for label in head.labels])
                    if probs.sum() > 0:
                        sharpened = (probs / probs.sum()) ** (1.0 / config.temperature)
                        target[row, :n_labels] = sharpened / sharpened.sum()
                        target[row, n_labels] = 1.0
                        continue
                if head.name in example.labels:
                    smoothing = config.label_smoothing
                    target[row, :n_labels] = smoothing / n_labels
                    target[row, head.labels.index(example.labels[head.name])] += 1.0 - smoothing
            out[head.name] = target
        return out

    def example_weights(self, examples: Sequence[Example]) -> Tensor:
        """``Example.weight``, times ``human_weight`` for human- and import-labelled examples."""
        return torch.tensor(
            [e.weight * (self.config.human_weight if e.source in _GOLD else 1.0) for e in examples],
            dtype=torch.float32,
        )

    def loss(self, logits: Tensor, targets: Tensor, weights: Tensor, head: str) -> Tensor:
        """Weighted cross-entropy; soft-target rows use ``logits / T`` and are scaled by T²."""
        distribution, soft = targets[:, :-1], targets[:, -1]
        temperature = 1.0 + soft * (self.config.temperature - 1.0)  # [B]: T or 1
        log_probs = torch.log_softmax(logits / temperature[:, None], dim=-1)
        per_example = -(distribution * log_probs).sum(dim=-1) * temperature**2
        return (weights * per_example).sum() / weights.sum().clamp(min=1e-8)


def assistant_soft_labels(
    assistant_dir: Path, task: Task, examples: Sequence[Example]
) -> list[Example]:
    """``examples`` with the assistant student's calibrated probabilities as the soft labels of
    every head the teacher gave none for; gold (human, import) examples are left as they are.

    Raises ``ConfigurationError`` when the assistant answers different heads than ``task``.
    """
    assistant = load_student(assistant_dir, "torch")
    if assistant.heads != task.heads:
        raise ConfigurationError(
            f"the assistant student in {assistant_dir} answers other heads than task "
            f"{task.key!r} version {task.version}"
        )
    todo = [i for i, example in enumerate(examples) if example.source not in _GOLD]
    out = list(examples)
    for start in range(0, len(todo), ASSISTANT_BATCH):
        rows = todo[start : start + ASSISTANT_BATCH]
        predictions = assistant.predict([examples[i].text for i in rows])
        for i, prediction in zip(rows, predictions, strict=True):
            soft = {**prediction.probs, **(examples[i].soft_labels or {})}
            out[i] = replace(examples[i], soft_labels=soft)
    return out

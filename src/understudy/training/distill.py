"""The distilled student: fine-tuning on the teacher's soft labels (a subclass, as in setfit).

Where an example carries ``soft_labels`` (the teacher's probability mass per label, from its
logprobs), the target is that distribution at temperature T, matched by ``softmax(logits / T)``
with the loss scaled by T² (Hinton et al., 2015). Otherwise the target is the hard label with
label smoothing. Human and imported labels are gold: their hard label is the target and their
weight is multiplied by ``human_weight``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from understudy.tasks import Example, LabelSource, Task
from understudy.training.config import DistillConfig
from understudy.training.finetune import FinetuneTrainer

_GOLD = (LabelSource.HUMAN, LabelSource.IMPORT)


class DistillTrainer(FinetuneTrainer):
    """Trains the distilled student; ``train`` writes a complete ``kind="distill"`` artifact."""

    kind = "distill"
    config: DistillConfig

    def __init__(self, config: DistillConfig | None = None) -> None:
        super().__init__(config or DistillConfig())

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

"""Training students from labelled examples: n-gram, probe, fine-tuned and distilled.

``train_student(kind, task, examples, out_dir)`` writes a complete artifact (see
``understudy.serving.artifact``) into ``out_dir``, usually a ``ModelRegistry.staging_dir``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from understudy.errors import ConfigurationError
from understudy.tasks import Example, Task
from understudy.training.artifact import TrainResult
from understudy.training.calibration import HeadCalibration, calibrate, fit_temperature
from understudy.training.config import DistillConfig, FinetuneConfig, NgramConfig, ProbeConfig
from understudy.training.distill import DistillTrainer
from understudy.training.finetune import FinetuneTrainer
from understudy.training.ngram import NgramTrainer
from understudy.training.probe import ProbeTrainer

TRAINERS: dict[str, tuple[type[Any], type[Any]]] = {
    "ngram": (NgramTrainer, NgramConfig),
    "probe": (ProbeTrainer, ProbeConfig),
    "finetune": (FinetuneTrainer, FinetuneConfig),
    "distill": (DistillTrainer, DistillConfig),
}
"""Student kind -> (trainer class, its config class)."""

StudentConfig = NgramConfig | ProbeConfig | FinetuneConfig | DistillConfig


def train_student(
    kind: str,
    task: Task,
    examples: list[Example],
    out_dir: Path,
    config: StudentConfig | None = None,
) -> TrainResult:
    """Train a student of ``kind`` on ``examples`` and write its artifact into ``out_dir``.

    ``config`` must be the kind's config class (None: its defaults). Raises ConfigurationError for
    an unknown kind or a mismatched config, InsufficientData when there are too few labels.
    """
    if kind not in TRAINERS:
        raise ConfigurationError(
            f"unknown student kind {kind!r}; choose one of {', '.join(TRAINERS)}"
        )
    trainer_class, config_class = TRAINERS[kind]
    if config is not None and type(config) is not config_class:
        raise ConfigurationError(
            f"a {kind} student takes a {config_class.__name__}, got {type(config).__name__}"
        )
    trainer = trainer_class(config)
    result: TrainResult = trainer.train(task, examples, Path(out_dir))
    return result


__all__ = [
    "TRAINERS",
    "DistillConfig",
    "DistillTrainer",
    "FinetuneConfig",
    "FinetuneTrainer",
    "HeadCalibration",
    "NgramConfig",
    "NgramTrainer",
    "ProbeConfig",
    "ProbeTrainer",
    "StudentConfig",
    "TrainResult",
    "calibrate",
    "fit_temperature",
    "train_student",
]

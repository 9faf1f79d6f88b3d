"""Writing the training side of a student artifact: heads, ``run.json`` and ``metrics.json``.

The layout and ``student.json`` belong to ``understudy.serving.artifact``; trainers write into a
registry staging directory and ``ModelRegistry.publish`` renames it into place.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import asdict, dataclass, field, is_dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from understudy.serving.artifact import HEADS_FILE, METRICS_FILE, RUN_FILE
from understudy.tasks import Task
from understudy.training.calibration import HeadCalibration


@dataclass(frozen=True)
class TrainResult:
    """What a trainer produced: the artifact directory and a summary of the run.

    ``timings_s`` maps phase name to seconds; ``calibration`` maps head name to its calibration.
    """

    kind: str
    out_dir: Path
    n_train: int
    n_holdout: int
    data_hash: str
    calibration: dict[str, HeadCalibration]
    timings_s: dict[str, float]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def temperatures(self) -> dict[str, float]:
        """Head name -> fitted temperature."""
        return {name: c.temperature for name, c in self.calibration.items()}


def _jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {k: _jsonable(v) for k, v in asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def write_json(path: Path, payload: Any) -> None:
    """Write ``payload`` (dataclasses and Paths allowed) as indented UTF-8 JSON."""
    path.write_text(json.dumps(_jsonable(payload), indent=2, ensure_ascii=False) + "\n")


def write_heads(out_dir: Path, heads: dict[str, tuple[NDArray[Any], NDArray[Any]]]) -> None:
    """Write ``heads.safetensors``: ``<head>.weight`` [n_labels, hidden], ``<head>.bias``."""
    from safetensors.numpy import save_file

    tensors: dict[str, NDArray[Any]] = {}
    for name, (weight, bias) in heads.items():
        tensors[f"{name}.weight"] = np.ascontiguousarray(weight, dtype=np.float32)
        tensors[f"{name}.bias"] = np.ascontiguousarray(bias, dtype=np.float32)
    save_file(tensors, str(out_dir / HEADS_FILE))


def write_run_record(
    out_dir: Path,
    *,
    result: TrainResult,
    task: Task,
    config: Any,
    label_counts: dict[str, dict[str, int]],
) -> None:
    """Write ``run.json`` (config, data hash, sizes, timings, versions) and ``metrics.json``.

    ``metrics.json`` starts with the holdout calibration; ``understudy.evaluation`` adds the
    held-out evaluation under ``"heldout"`` before the artifact is published.
    """
    write_json(
        out_dir / RUN_FILE,
        {
            "kind": result.kind,
            "task": task.key,
            "task_version": task.version,
            "config": config,
            "seed": getattr(config, "seed", None),
            "data_hash": result.data_hash,
            "n_train": result.n_train,
            "n_holdout": result.n_holdout,
            "label_counts": label_counts,
            "timings_s": result.timings_s,
            "extra": result.extra,
            "versions": {
                "python": sys.version.split()[0],
                **{
                    name: _version(name)
                    for name in ("torch", "scikit-learn", "numpy", "tokenizers")
                },
            },
            "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
            "finished_at": datetime.now(UTC).isoformat(),
        },
    )
    write_json(out_dir / METRICS_FILE, {"calibration": result.calibration})

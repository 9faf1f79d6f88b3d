"""The student artifact's manifest, ``student.json``, and the names of the files beside it.

Layout of ``<models_dir>/<task_key>/<version>/``: ``student.json``; kind ``ngram``:
``ngram.joblib``; encoder kinds: ``encoder/`` (Hugging Face BERT directory + ``tokenizer.json``,
absent for ``probe``, whose frozen encoder is ``base_encoder``), ``heads.safetensors``, optionally
``model.onnx`` and ``model.int8.onnx``; plus ``metrics.json``, ``run.json`` and
``checksums.json`` once published.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from understudy.errors import ModelError
from understudy.tasks import Head, HeadKind

FORMAT = 1
STUDENT_FILE = "student.json"
NGRAM_FILE = "ngram.joblib"
ENCODER_DIR = "encoder"
HEADS_FILE = "heads.safetensors"
ONNX_FILE = "model.onnx"
ONNX_INT8_FILE = "model.int8.onnx"
CHECKSUMS_FILE = "checksums.json"
METRICS_FILE = "metrics.json"
RUN_FILE = "run.json"

KINDS = ("ngram", "probe", "finetune", "distill")
ENCODER_KINDS = ("probe", "finetune", "distill")


@dataclass(frozen=True)
class StudentManifest:
    """The contents of ``student.json``: what the student is and how to turn logits into probs.

    ``temperatures`` maps head name to the calibration temperature (probabilities are
    ``softmax(logits / T)``; heads absent from it use 1.0). ``base_encoder`` is the frozen
    encoder's directory for ``probe`` students and informational for the other encoder kinds.
    """

    kind: str
    task: str
    task_version: int
    heads: tuple[Head, ...]
    max_length: int = 128
    pooling: str = "mean"
    temperatures: dict[str, float] = field(default_factory=dict)
    base_encoder: str | None = None
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def temperature(self, head: str) -> float:
        """Calibration temperature of ``head`` (1.0 when none was fitted)."""
        return float(self.temperatures.get(head, 1.0))

    def to_json(self) -> dict[str, Any]:
        """The manifest as the ``student.json`` object."""
        return {
            "format": FORMAT,
            "kind": self.kind,
            "task": self.task,
            "task_version": self.task_version,
            "heads": [
                {"name": h.name, "labels": list(h.labels), "kind": h.kind.value} for h in self.heads
            ],
            "max_length": self.max_length,
            "pooling": self.pooling,
            "temperatures": dict(self.temperatures),
            "base_encoder": self.base_encoder,
            "created_at": self.created_at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StudentManifest:
        """Parse a ``student.json`` object; ``ModelError`` when it is malformed or unsupported."""
        if data.get("format") != FORMAT:
            raise ModelError(f"unsupported student.json format {data.get('format')!r}")
        if data.get("kind") not in KINDS:
            raise ModelError(f"unknown student kind {data.get('kind')!r}; expected one of {KINDS}")
        try:
            heads = tuple(
                Head(
                    name=h["name"], labels=tuple(h["labels"]), kind=HeadKind(h.get("kind", "enum"))
                )
                for h in data["heads"]
            )
            return cls(
                kind=data["kind"],
                task=data["task"],
                task_version=int(data["task_version"]),
                heads=heads,
                max_length=int(data.get("max_length", 128)),
                pooling=data.get("pooling", "mean"),
                temperatures={k: float(v) for k, v in (data.get("temperatures") or {}).items()},
                base_encoder=data.get("base_encoder"),
                created_at=data.get("created_at", ""),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"malformed student.json: {exc!r}") from exc

    def write(self, artifact_dir: Path) -> Path:
        """Write ``student.json`` into ``artifact_dir``; returns the file's path."""
        path = Path(artifact_dir) / STUDENT_FILE
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return path

    @classmethod
    def read(cls, artifact_dir: Path) -> StudentManifest:
        """Read ``student.json`` from ``artifact_dir``; ``ModelError`` if missing or malformed."""
        path = Path(artifact_dir) / STUDENT_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise ModelError(
                f"{artifact_dir} is not a student artifact (no {STUDENT_FILE})"
            ) from exc
        except json.JSONDecodeError as exc:
            raise ModelError(f"{path} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ModelError(f"{path} does not hold a JSON object")
        return cls.from_json(data)

"""Held-out evaluation of a student: per-head quality, calibration, and the cascade threshold.

Each held-out example carries one reference label per head: the teacher's, or a human's where a
human overrode it (``Example.source``). Per head the report gives agreement with teacher labels,
accuracy against gold (human/import) labels, macro-F1 and ECE against the reference labels, and the
agreement-vs-coverage curve. Overall, a call counts as agreeing only when every head agrees, and
its confidence is ``Prediction.confidence`` (the minimum over heads), exactly what the cascade uses.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from understudy.errors import InvalidRequest
from understudy.evaluation.metrics import (
    CurvePoint,
    accuracy,
    coverage_curve,
    expected_calibration_error,
    macro_f1,
    pick_threshold,
)
from understudy.serving.artifact import METRICS_FILE
from understudy.tasks import Example, LabelSource, Prediction, Task

# Points kept in the reported curves: enough for a plot, small enough for metrics.json.
REPORT_CURVE_POINTS = 25
_GOLD_SOURCES = (LabelSource.HUMAN, LabelSource.IMPORT)


class SupportsPredict(Protocol):
    """What evaluation needs of a student (``understudy.serving.student.Student`` satisfies it)."""

    @property
    def kind(self) -> str: ...

    @property
    def version(self) -> str: ...

    def predict(self, texts: Sequence[str]) -> list[Prediction]: ...


@dataclass(frozen=True)
class HeadReport:
    """Quality of one head on the held-out examples.

    ``agreement`` is over teacher-labelled examples and ``accuracy`` over gold-labelled ones (None
    when there are none); ``macro_f1``, ``ece`` and ``curve`` use every example's reference label.
    """

    name: str
    n: int
    agreement: float | None
    n_teacher: int
    accuracy: float | None
    n_gold: int
    macro_f1: float
    ece: float
    curve: list[CurvePoint]

    def to_json(self) -> dict[str, Any]:
        """The head report as a JSON-ready dict."""
        return {
            "name": self.name,
            "n": self.n,
            "agreement": self.agreement,
            "n_teacher": self.n_teacher,
            "accuracy": self.accuracy,
            "n_gold": self.n_gold,
            "macro_f1": self.macro_f1,
            "ece": self.ece,
            "curve": [point.to_json() for point in self.curve],
        }


@dataclass(frozen=True)
class EvaluationReport:
    """A student's held-out evaluation and the confidence threshold the cascade should use.

    ``threshold`` is the smallest confidence whose one-sided 95% Wilson lower bound of overall
    agreement is ≥ ``target_agreement``, with its ``coverage`` (fraction of calls answered) and
    ``threshold_lower_bound``; all three are None when no threshold qualifies.
    ``predict_ms_per_text`` is the student's mean wall time per text over the batched evaluation.
    """

    task_key: str
    task_version: int
    student_kind: str
    student_version: str
    n: int
    target_agreement: float
    agreement: float
    ece: float
    heads: tuple[HeadReport, ...]
    curve: list[CurvePoint]
    threshold: float | None
    coverage: float | None
    threshold_lower_bound: float | None
    predict_ms_per_text: float

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON-ready dict (written into an artifact's ``metrics.json``)."""
        return {
            "task": self.task_key,
            "task_version": self.task_version,
            "student_kind": self.student_kind,
            "student_version": self.student_version,
            "n": self.n,
            "target_agreement": self.target_agreement,
            "agreement": self.agreement,
            "ece": self.ece,
            "threshold": self.threshold,
            "coverage": self.coverage,
            "threshold_lower_bound": self.threshold_lower_bound,
            "predict_ms_per_text": self.predict_ms_per_text,
            "heads": {head.name: head.to_json() for head in self.heads},
            "curve": [point.to_json() for point in self.curve],
        }


def _head_report(name: str, heldout: list[Example], predictions: list[Prediction]) -> HeadReport:
    reference = [example.labels[name] for example in heldout]
    predicted = [prediction.labels[name] for prediction in predictions]
    confidence = [p.probs[name][p.labels[name]] for p in predictions]
    agrees = [r == p for r, p in zip(reference, predicted, strict=True)]
    teacher = [i for i, e in enumerate(heldout) if e.source is LabelSource.TEACHER]
    gold = [i for i, e in enumerate(heldout) if e.source in _GOLD_SOURCES]
    return HeadReport(
        name=name,
        n=len(heldout),
        agreement=(
            accuracy([reference[i] for i in teacher], [predicted[i] for i in teacher])
            if teacher
            else None
        ),
        n_teacher=len(teacher),
        accuracy=(
            accuracy([reference[i] for i in gold], [predicted[i] for i in gold]) if gold else None
        ),
        n_gold=len(gold),
        macro_f1=macro_f1(reference, predicted),
        ece=expected_calibration_error(confidence, agrees),
        curve=coverage_curve(confidence, agrees, points=REPORT_CURVE_POINTS),
    )


def evaluate(
    student: SupportsPredict,
    task: Task,
    heldout: list[Example],
    target_agreement: float = 0.98,
) -> EvaluationReport:
    """Evaluate ``student`` on ``heldout`` examples it never trained on and pick its threshold.

    Raises InvalidRequest when ``heldout`` is empty or an example lacks a label for a head.
    """
    if not heldout:
        raise InvalidRequest(f"no held-out examples to evaluate task {task.key!r} on")
    for example in heldout:
        missing = [head.name for head in task.heads if head.name not in example.labels]
        if missing:
            raise InvalidRequest(f"held-out example lacks labels for heads {missing}")
    started = time.perf_counter()
    predictions = student.predict([example.text for example in heldout])
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    confidence = [prediction.confidence for prediction in predictions]
    agrees = [
        all(prediction.labels[head.name] == example.labels[head.name] for head in task.heads)
        for example, prediction in zip(heldout, predictions, strict=True)
    ]
    chosen = pick_threshold(confidence, agrees, target_agreement)
    return EvaluationReport(
        task_key=task.key,
        task_version=task.version,
        student_kind=student.kind,
        student_version=student.version,
        n=len(heldout),
        target_agreement=target_agreement,
        agreement=sum(agrees) / len(agrees),
        ece=expected_calibration_error(confidence, agrees),
        heads=tuple(_head_report(head.name, heldout, predictions) for head in task.heads),
        curve=coverage_curve(confidence, agrees, points=REPORT_CURVE_POINTS),
        threshold=chosen.threshold if chosen else None,
        coverage=chosen.coverage if chosen else None,
        threshold_lower_bound=chosen.lower_bound if chosen else None,
        predict_ms_per_text=elapsed_ms / len(heldout),
    )


def write_heldout_metrics(artifact_dir: Path, report: EvaluationReport) -> Path:
    """Add the report under ``"heldout"`` in the artifact's ``metrics.json`` (before publishing,
    since published artifacts are checksummed); returns the file's path."""
    path = Path(artifact_dir) / METRICS_FILE
    metrics = json.loads(path.read_text()) if path.is_file() else {}
    metrics["heldout"] = report.to_json()
    path.write_text(json.dumps(metrics, indent=2) + "\n")
    return path

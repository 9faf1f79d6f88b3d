"""evaluate(): per-head agreement vs teacher, accuracy vs gold, and the overall threshold."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from understudy.errors import InvalidRequest
from understudy.evaluation import evaluate
from understudy.tasks import Example, Head, HeadKind, LabelSource, Prediction, Task

TASK = Task(
    key="tickets",
    version=1,
    schema={},
    heads=(Head("topic", ("billing", "bug")), Head("urgent", ("false", "true"), HeadKind.BOOL)),
)


class KeywordStudent:
    """Answers topic from a keyword and urgent=false, with fixed confidences."""

    kind = "fake"
    version = "7"

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        out = []
        for text in texts:
            topic = "bug" if "crash" in text else "billing"
            out.append(
                Prediction(
                    labels={"topic": topic, "urgent": "false"},
                    probs={
                        "topic": {topic: 0.9, ("billing" if topic == "bug" else "bug"): 0.1},
                        "urgent": {"false": 0.8, "true": 0.2},
                    },
                )
            )
        return out


def _example(text: str, topic: str, urgent: str, source: LabelSource) -> Example:
    return Example(text=text, labels={"topic": topic, "urgent": urgent}, source=source)


def test_evaluate_splits_teacher_agreement_from_gold_accuracy() -> None:
    heldout = [
        _example("app crash", "bug", "false", LabelSource.TEACHER),
        _example("invoice", "billing", "false", LabelSource.TEACHER),
        _example("refund", "bug", "false", LabelSource.TEACHER),  # topic disagrees
        _example("crash now", "bug", "true", LabelSource.HUMAN),  # urgent wrong vs gold
    ]
    report = evaluate(KeywordStudent(), TASK, heldout, target_agreement=0.5)
    topic, urgent = report.heads
    assert topic.agreement == pytest.approx(2 / 3) and topic.n_teacher == 3
    assert topic.accuracy == 1.0 and topic.n_gold == 1
    assert urgent.agreement == 1.0 and urgent.accuracy == 0.0
    assert report.agreement == 0.5  # both heads must agree: examples 1 and 2
    assert report.student_version == "7" and report.n == 4
    # Every call has confidence 0.8 (min over heads): one point on the curve, bound below 0.5.
    assert [p.threshold for p in report.curve] == [0.8]
    assert report.threshold is None and report.coverage is None
    as_json = report.to_json()
    assert as_json["heads"]["topic"]["n_gold"] == 1
    assert as_json["curve"][0]["coverage"] == 1.0


def test_evaluate_picks_a_threshold_when_agreement_is_high() -> None:
    heldout = [_example(f"crash {i}", "bug", "false", LabelSource.TEACHER) for i in range(200)]
    report = evaluate(KeywordStudent(), TASK, heldout, target_agreement=0.95)
    assert report.agreement == 1.0
    assert report.threshold == pytest.approx(0.8) and report.coverage == 1.0
    assert report.threshold_lower_bound is not None and report.threshold_lower_bound >= 0.95


def test_evaluate_rejects_empty_or_unlabelled_heldout() -> None:
    with pytest.raises(InvalidRequest, match="no held-out"):
        evaluate(KeywordStudent(), TASK, [])
    with pytest.raises(InvalidRequest, match="urgent"):
        evaluate(KeywordStudent(), TASK, [Example(text="x", labels={"topic": "bug"})])

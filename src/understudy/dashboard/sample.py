"""A synthetic traffic history for the dashboard's tests, demo and benchmark.

``seed_traffic`` writes logged calls straight into the store's tables in bulk (one transaction per
10k rows) so that 100k calls take seconds, not the minutes one ``record_call`` per call would.
The history looks like a task that ran in shadow mode and then in cascade: the teacher answers
most early calls, the student more later ones, with confidences, agreements, latencies and token
counts drawn from a seeded generator.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from understudy.store import Store, is_heldout
from understudy.store import tables as t
from understudy.store.records import CallKind
from understudy.tasks import Head, LabelSource, Task, TaskSpec

SENTIMENT_LABELS = ("positive", "negative", "neutral")
# Label frequencies of the sample task: "neutral" is rare so the review queue has one to find.
SENTIMENT_WEIGHTS = (0.55, 0.38, 0.07)
_WORDS = {
    "positive": ("great", "lovely", "wonderful", "fine", "superb"),
    "negative": ("awful", "dull", "broken", "late", "rude"),
    "neutral": ("okay", "average", "plain", "usual", "so-so"),
}
_INSERT_CHUNK = 10_000


def sentiment_spec(key: str = "sentiment") -> TaskSpec:
    """A one-head classification task: ``sentiment`` in positive/negative/neutral."""
    schema = {
        "type": "object",
        "properties": {"sentiment": {"type": "string", "enum": list(SENTIMENT_LABELS)}},
        "required": ["sentiment"],
    }
    return TaskSpec(
        key=key,
        schema=schema,
        heads=(Head("sentiment", SENTIMENT_LABELS),),
        free_text_fields=(),
        required_free_text_fields=(),
    )


@dataclass(frozen=True)
class SeededCall:
    """What ``seed_traffic`` wrote for one call (enough for tests to assert on)."""

    id: str
    text: str
    teacher_label: str | None
    student_label: str | None
    answered_by: str


def seed_traffic(
    store: Store,
    task: Task,
    n: int,
    *,
    seed: int = 0,
    end: datetime | None = None,
    span: timedelta = timedelta(days=2),
    student_version: str = "v1",
) -> list[SeededCall]:
    """Log ``n`` classification calls of ``task`` (its first head is labelled) spread evenly over
    ``span`` ending at ``end`` (default now), oldest first; returns them in insertion order."""
    rng = random.Random(seed)
    end = end or t.utcnow()
    head = task.heads[0]
    weights = SENTIMENT_WEIGHTS if head.labels == SENTIMENT_LABELS else None
    task_id = _task_id(store, task)
    seeded: list[SeededCall] = []
    call_rows: list[dict[str, Any]] = []
    label_rows: list[dict[str, Any]] = []
    for index in range(n):
        progress = index / max(1, n - 1)
        created = end - span * (1 - progress)
        truth = rng.choices(head.labels, weights=weights)[0]
        words = _WORDS.get(truth, (truth,))
        text = f"The service was {rng.choice(words)} and the food {rng.choice(words)} #{index}"
        confidence = rng.betavariate(5, 1.5)
        # The student is mostly right, and more often when confident.
        student_label = truth if rng.random() < 0.6 + 0.4 * confidence else rng.choice(head.labels)
        # Later traffic is more and more answered by the student (the cascade took over).
        by_student = progress > 0.5 and confidence > 0.8 - 0.3 * progress
        audited = by_student and rng.random() < 0.1
        call_id = f"us-{uuid.UUID(int=rng.getrandbits(128)).hex}"
        answered_by = "student" if by_student else "teacher"
        answer = student_label if by_student else truth
        agreed = None if by_student and not audited else student_label == truth
        call_rows.append(
            {
                "id": call_id,
                "task_id": task_id,
                "kind": CallKind.CLASSIFICATION.value,
                "stream": False,
                "request": {"messages": [{"role": "user", "content": text}]},
                "response": {
                    "choices": [{"message": {"content": f'{{"{head.name}":"{answer}"}}'}}]
                },
                "status_code": 200,
                "user_text": text,
                "input_text": text,
                "labels": {head.name: answer},
                "soft_labels": None,
                "answered_by": answered_by,
                "student_version": student_version,
                "confidence": confidence,
                "teacher_model": None if by_student else "teacher-model",
                "latency_ms": rng.uniform(2, 9) if by_student else rng.lognormvariate(6.2, 0.3),
                "prompt_tokens": 0 if by_student else rng.randint(80, 140),
                "completion_tokens": 0 if by_student else rng.randint(5, 12),
                "error": None,
                "heldout": is_heldout(call_id, store.heldout_fraction),
                "created_at": created,
                "student_labels": None if by_student else {head.name: student_label},
                "agreed": agreed,
            }
        )
        if not by_student or audited:
            label_rows.append(
                {
                    "call_id": call_id,
                    "task_id": task_id,
                    "head": head.name,
                    "value": truth,
                    "source": LabelSource.TEACHER.value,
                    "author": "teacher-model",
                    "created_at": created,
                }
            )
        seeded.append(
            SeededCall(
                call_id,
                text,
                truth if not by_student or audited else None,
                student_label,
                answered_by,
            )
        )
    with store.engine.begin() as conn:
        for offset in range(0, len(call_rows), _INSERT_CHUNK):
            conn.execute(t.calls.insert(), call_rows[offset : offset + _INSERT_CHUNK])
        for offset in range(0, len(label_rows), _INSERT_CHUNK):
            conn.execute(t.labels.insert(), label_rows[offset : offset + _INSERT_CHUNK])
    return seeded


def seed_student_run(
    store: Store, task: Task, version: str = "v1", *, threshold: float = 0.8
) -> None:
    """Record a promoted training run with an agreement-vs-coverage curve and make it serve."""
    points = []
    for step in range(11):
        cut = step / 10
        points.append(
            {
                "threshold": cut,
                "coverage": round(1.0 - 0.85 * cut**1.5, 4),
                "agreement": round(0.86 + 0.13 * cut, 4),
                "answered": 1000 - 80 * step,
                "lower_bound": round(0.85 + 0.13 * cut, 4),
            }
        )
    run_id = store.start_student_run(task, "ngram")
    store.finish_student_run(
        run_id,
        "promoted",
        version=version,
        metrics={"agreement": 0.9, "threshold": threshold, "coverage": 0.55, "curve": points},
    )
    store.update_task_state(
        task.key,
        serving_version=version,
        threshold=threshold,
        reason=f"student {version} (ngram) beat the serving student",
    )


def _task_id(store: Store, task: Task) -> int:
    with store.engine.connect() as conn:
        return int(
            conn.execute(
                t.tasks.select()
                .with_only_columns(t.tasks.c.id)
                .where(t.tasks.c.key == task.key, t.tasks.c.version == task.version)
            ).scalar_one()
        )

"""The review task and teacher-labelled calls the worker tests train on."""

from __future__ import annotations

import copy
import random
from typing import Any

from understudy.store import CallKind, CallRecord, Store, switch
from understudy.tasks import LabelSource, Task, detect_task

REQUEST = {
    "response_format": {
        "type": "json_schema",
        "json_schema": {
            "name": "review",
            "schema": {
                "type": "object",
                "properties": {"sentiment": {"type": "string", "enum": ["negative", "positive"]}},
                "required": ["sentiment"],
            },
        },
    }
}
POSITIVE = ["great", "wonderful", "superb", "delightful", "moving", "brilliant"]
NEGATIVE = ["awful", "boring", "dreadful", "tedious", "clumsy", "lifeless"]
FILLER = ["the", "film", "plot", "acting", "story", "was", "really", "quite", "ending", "cast"]
SENTIMENT_WORDS = (NEGATIVE, POSITIVE)
UNSEEN_SENTIMENT_WORDS = (
    ["dull", "muddled", "tiresome", "shallow", "bland", "forgettable"],
    ["charming", "gripping", "stunning", "witty", "heartfelt", "masterful"],
)
"""Sentiment words that appear in no other review: (negative, positive)."""


def review(
    rng: random.Random, words: tuple[list[str], list[str]] = SENTIMENT_WORDS
) -> tuple[str, str]:
    """A short review text with one sentiment word from ``words`` (negative, positive), and its
    label."""
    label = rng.choice(["negative", "positive"])
    text = [*rng.sample(FILLER, 5), rng.choice(words[label == "positive"])]
    rng.shuffle(text)
    return " ".join(text), label


def log_teacher_calls(
    store: Store,
    task: Task,
    count: int,
    seed: int,
    start: int = 0,
    words: tuple[list[str], list[str]] = SENTIMENT_WORDS,
) -> None:
    """Log ``count`` teacher-answered calls ``call-<start>`` ... of ``task``."""
    rng = random.Random(seed)
    for i in range(start, start + count):
        text, label = review(rng, words)
        store.record_call(
            review_call(
                task,
                f"call-{i}",
                text,
                label,
                label_source=LabelSource.TEACHER,
                answered_by="teacher",
            )
        )


def student_answer(
    task: Task,
    call_id: str,
    label: str,
    *,
    version: str = "v1",
    text: str = "great film",
    request: dict[str, Any] = REQUEST,
) -> CallRecord:
    """A call of ``task`` that student ``version`` answered with sentiment ``label``."""
    return review_call(
        task,
        call_id,
        text,
        label,
        request=request,
        answered_by="student",
        student_version=version,
        confidence=0.99,
    )


def review_call(
    task: Task,
    call_id: str,
    text: str,
    label: str,
    *,
    request: dict[str, Any] = REQUEST,
    **fields: Any,
) -> CallRecord:
    """A logged classification call of ``task`` on ``text`` labelled ``label``; ``fields`` say
    who answered it."""
    return CallRecord(
        id=call_id,
        kind=CallKind.CLASSIFICATION,
        request=request,
        response={},
        status_code=200,
        task=task,
        user_text=text,
        input_text=text,
        labels={"sentiment": label},
        **fields,
    )


def log_audited_student_answer(
    store: Store, task: Task, call_id: str, teacher_label: str, student_label: str = "positive"
) -> None:
    """Log a call student ``v1`` answered (``student_label``) and the teacher's audit of it."""
    store.record_call(student_answer(task, call_id, student_label))
    switch.record_audit(store, call_id, {"sentiment": teacher_label}, teacher_model="t")


def register_review_task(store: Store) -> Task:
    """The review task of ``REQUEST``, registered in ``store``."""
    spec = detect_task(REQUEST)
    assert spec is not None
    return store.register_task(spec)


def register_changed_review_task(store: Store) -> Task:
    """Version 2 of the review task, registered in ``store``: its schema gained a ``neutral``."""
    changed = copy.deepcopy(REQUEST)
    sentiment = changed["response_format"]["json_schema"]["schema"]["properties"]["sentiment"]
    sentiment["enum"] = ["negative", "neutral", "positive"]
    spec = detect_task(changed)
    assert spec is not None
    task = store.register_task(spec)
    assert (task.key, task.version) == ("review", 2)
    return task

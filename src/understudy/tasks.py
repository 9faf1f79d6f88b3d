"""What a task is: a classification call's schema turned into label heads.

A *task* is a family of LLM calls that share one structured-output schema. Each enum or boolean
property of the schema becomes a *head* that a student learns; other properties are free text,
which a student cannot produce.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class HeadKind(StrEnum):
    """How a head's value appears in the JSON answer."""

    ENUM = "enum"
    BOOL = "bool"


@dataclass(frozen=True)
class Head:
    """One label field of a task: its name in the schema and its possible values.

    For boolean heads ``labels`` is ``["false", "true"]``; the rendered JSON value is a real
    boolean (see ``json_value``).
    """

    name: str
    labels: tuple[str, ...]
    kind: HeadKind = HeadKind.ENUM

    def json_value(self, label: str) -> Any:
        """The label as it appears in the task's JSON answer (a bool for boolean heads)."""
        if self.kind is HeadKind.BOOL:
            return label == "true"
        return label

    def label_of(self, value: Any) -> str | None:
        """The head's label for a JSON value from an answer, or None if it is not one."""
        if self.kind is HeadKind.BOOL:
            return ("true" if value else "false") if isinstance(value, bool) else None
        return value if isinstance(value, str) and value in self.labels else None


@dataclass(frozen=True)
class Task:
    """A registered task version: its key, schema and the heads a student learns."""

    key: str
    version: int
    schema: dict[str, Any]
    heads: tuple[Head, ...]
    free_text_fields: tuple[str, ...] = ()
    required_free_text_fields: tuple[str, ...] = ()

    @property
    def student_can_answer(self) -> bool:
        """False when the schema requires a free-text field, which a student cannot produce."""
        return not self.required_free_text_fields

    def head(self, name: str) -> Head:
        """The head called ``name``; KeyError if the task has none."""
        for head in self.heads:
            if head.name == name:
                return head
        raise KeyError(name)


class LabelSource(StrEnum):
    """Where a label came from; human labels override teacher labels for the same call."""

    TEACHER = "teacher"
    HUMAN = "human"
    IMPORT = "import"


@dataclass(frozen=True)
class Example:
    """One training or evaluation example for a task.

    ``labels`` maps head name to label. ``soft_labels`` (optional) maps head name to a probability
    distribution over that head's labels, from the teacher's logprobs.
    """

    text: str
    labels: dict[str, str]
    source: LabelSource = LabelSource.TEACHER
    weight: float = 1.0
    soft_labels: dict[str, dict[str, float]] | None = None
    call_id: str | None = None


@dataclass(frozen=True)
class Prediction:
    """A student's answer: a label per head with calibrated probabilities.

    ``confidence`` is the smallest top-label probability over heads, in [0, 1].
    """

    labels: dict[str, str]
    probs: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def confidence(self) -> float:
        """Minimum over heads of the chosen label's probability (1.0 with no heads)."""
        if not self.probs:
            return 1.0
        return min(self.probs[head][label] for head, label in self.labels.items())

"""Plain records the store takes and returns (no SQLAlchemy types leak out of the store)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from understudy.routing.modes import Mode
from understudy.tasks import LabelSource, Task


class CallKind(StrEnum):
    """What a logged call was."""

    CLASSIFICATION = "classification"  # a detected task; its answer carries labels
    PASSTHROUGH = "passthrough"  # anything else, forwarded and logged untouched
    IMPORT = "import"  # a labelled text imported in the simple ``{task, text, label}`` form
    CLASSIFY = "classify"  # a text answered by the student through ``POST /v1/classify``


@dataclass(frozen=True)
class CallRecord:
    """One call to log. ``labels`` are the answer's labels per head; ``label_source`` says
    whether they are also training labels (teacher or import) or not (None: e.g. a student's
    answer). ``latency_ms`` is the answering side's time in milliseconds; tokens are the
    upstream's usage."""

    id: str
    kind: CallKind
    request: dict[str, Any] | None
    response: dict[str, Any] | None
    status_code: int | None
    task: Task | None = None
    stream: bool = False
    user_text: str | None = None
    input_text: str | None = None
    labels: dict[str, str] | None = None
    label_source: LabelSource | None = None
    soft_labels: dict[str, dict[str, float]] | None = None
    answered_by: str | None = None
    student_version: str | None = None
    confidence: float | None = None
    teacher_model: str | None = None
    latency_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str | None = None
    created_at: datetime | None = None
    student_labels: dict[str, str] | None = None
    agreed: bool | None = None


@dataclass(frozen=True)
class CallRow:
    """A logged call as read back, with its task's key and version (None for pass-through)."""

    id: str
    kind: CallKind
    task_key: str | None
    task_version: int | None
    stream: bool
    request: dict[str, Any] | None
    response: dict[str, Any] | None
    status_code: int | None
    user_text: str | None
    input_text: str | None
    labels: dict[str, str] | None
    soft_labels: dict[str, dict[str, float]] | None
    answered_by: str | None
    student_version: str | None
    confidence: float | None
    teacher_model: str | None
    latency_ms: float | None
    prompt_tokens: int | None
    completion_tokens: int | None
    error: str | None
    heldout: bool
    created_at: datetime
    student_labels: dict[str, str] | None = None
    agreed: bool | None = None


@dataclass(frozen=True)
class TaskState:
    """A task version's serving state: mode and the knobs routing reads (None = use settings)."""

    key: str
    version: int
    mode: Mode
    threshold: float | None
    target_agreement: float | None
    audit_rate: float | None
    serving_version: str | None
    template_prefix: str | None
    template_suffix: str | None


@dataclass(frozen=True)
class TaskRow:
    """A task version for listings: the task, its state and its counts."""

    task: Task
    state: TaskState
    calls: int
    labelled: int
    created_at: datetime


@dataclass(frozen=True)
class EventRow:
    """One entry of a task's event log (mode changes and other decisions with evidence)."""

    id: int
    task_key: str | None
    task_version: int | None
    kind: str
    from_mode: str | None
    to_mode: str | None
    reason: str | None
    evidence: dict[str, Any] | None
    created_at: datetime


@dataclass(frozen=True)
class StudentRun:
    """One training run of a student for a task version."""

    id: int
    task_key: str
    task_version: int
    kind: str
    status: str
    version: str | None
    metrics: dict[str, Any] | None = field(default=None)
    started_at: datetime | None = None
    finished_at: datetime | None = None

"""What the students saved: teacher calls, tokens and dollars avoided per task.

A call the student answered costs no teacher tokens; what it would have cost is estimated as the
mean tokens of the same task's teacher-answered calls at the teacher model's price. Audits (the
sample of student answers also sent to the teacher) are charged against the saving, so the
figure is net.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from understudy.store import CallKind, Store
from understudy.store import tables as t


@dataclass(frozen=True)
class Savings:
    """A task's chat traffic split and what the student side avoided (costs in USD, None when
    the teacher model has no configured price)."""

    task_key: str
    teacher_calls: int
    student_calls: int
    audited_calls: int
    teacher_prompt_tokens: int
    teacher_completion_tokens: int
    teacher_cost_usd: float | None
    avoided_tokens: int
    avoided_cost_usd: float | None

    @property
    def student_share(self) -> float:
        """Fraction of answered calls the student answered."""
        answered = self.teacher_calls + self.student_calls
        return self.student_calls / answered if answered else 0.0


def model_price(prices: Mapping[str, Sequence[float]], model: str | None) -> tuple[float, float]:
    """(input, output) USD per million tokens for ``model`` by longest matching name prefix.

    Raises KeyError when no configured prefix matches.
    """
    matches = [name for name in prices if model is not None and model.startswith(name)]
    if not matches:
        raise KeyError(model)
    prompt, completion = prices[max(matches, key=len)]
    return float(prompt), float(completion)


@dataclass(frozen=True)
class TeacherUsage:
    """Successful (HTTP 200) teacher-answered calls of one teacher model and their tokens."""

    model: str | None
    calls: int
    prompt_tokens: int
    completion_tokens: int


def _teacher_cost(
    prices: Mapping[str, Sequence[float]], usage: Sequence[TeacherUsage]
) -> float | None:
    """USD of the teacher's usage; None if a model has no price."""
    total = 0.0
    for row in usage:
        try:
            price_in, price_out = model_price(prices, row.model)
        except KeyError:
            return None
        total += (row.prompt_tokens * price_in + row.completion_tokens * price_out) / 1e6
    return total


def savings_of(
    task_key: str,
    teacher: Sequence[TeacherUsage],
    student_calls: int,
    audited_calls: int,
    prices: Mapping[str, Sequence[float]],
) -> Savings:
    """What ``student_calls`` student-answered chat calls (``audited_calls`` of them also sent
    to the teacher) avoided, priced at the mean tokens and cost of the ``teacher`` usage."""
    teacher_calls = sum(row.calls for row in teacher)
    prompt_tokens = sum(row.prompt_tokens for row in teacher)
    completion_tokens = sum(row.completion_tokens for row in teacher)
    cost = _teacher_cost(prices, teacher)
    # Audited student calls were paid for as well: only the unaudited ones avoided the teacher.
    avoided_calls = student_calls - audited_calls
    per_call_tokens = (prompt_tokens + completion_tokens) / teacher_calls if teacher_calls else 0
    per_call_cost = cost / teacher_calls if cost is not None and teacher_calls else None
    return Savings(
        task_key=task_key,
        teacher_calls=teacher_calls,
        student_calls=student_calls,
        audited_calls=audited_calls,
        teacher_prompt_tokens=prompt_tokens,
        teacher_completion_tokens=completion_tokens,
        teacher_cost_usd=cost,
        avoided_tokens=round(avoided_calls * per_call_tokens),
        avoided_cost_usd=None if per_call_cost is None else avoided_calls * per_call_cost,
    )


def task_savings(store: Store, task_key: str, prices: Mapping[str, Sequence[float]]) -> Savings:
    """Savings over every version of a task, from its logged calls."""
    by_model = (
        sa.select(
            t.calls.c.teacher_model,
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(t.calls.c.prompt_tokens), 0),
            sa.func.coalesce(sa.func.sum(t.calls.c.completion_tokens), 0),
        )
        .select_from(t.calls.join(t.tasks, t.calls.c.task_id == t.tasks.c.id))
        .where(
            t.tasks.c.key == task_key,
            t.calls.c.answered_by == "teacher",
            t.calls.c.status_code == 200,
        )
        .group_by(t.calls.c.teacher_model)
    )
    student = (
        sa.select(sa.func.count(), sa.func.count(t.calls.c.agreed))
        .select_from(t.calls.join(t.tasks, t.calls.c.task_id == t.tasks.c.id))
        .where(
            t.tasks.c.key == task_key,
            t.calls.c.answered_by == "student",
            # Native /v1/classify calls never had a teacher call to replace.
            t.calls.c.kind == CallKind.CLASSIFICATION.value,
        )
    )
    with store.engine.connect() as conn:
        teacher_rows = conn.execute(by_model).all()
        student_calls, audited = conn.execute(student).one()
    teacher = [
        TeacherUsage(model, int(calls), int(prompt), int(completion))
        for model, calls, prompt, completion in teacher_rows
    ]
    return savings_of(task_key, teacher, int(student_calls), int(audited), prices)

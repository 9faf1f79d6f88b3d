"""What people may set on a task by hand: its threshold, target agreement and audit rate.

The target and the audit rate are stored on the task (None: the settings' value applies); a None
threshold means the cascade answers nothing. ``understudy tune``, the dashboard's task page and
the admin API (``/admin/tasks``) all check values here, so a task takes exactly the values the
settings would.
"""

from __future__ import annotations

from understudy.errors import InvalidRequest
from understudy.settings import AUDIT_RATE_RANGE, TARGET_AGREEMENT_RANGE, Settings
from understudy.store.records import TaskState

DEFAULT_WORDS = ("", "default")
"""Text that clears an override, so the settings' value applies again."""


def task_target(state: TaskState, settings: Settings) -> float:
    """The target agreement a task is held to: its own, else the settings'."""
    return state.target_agreement or settings.target_agreement


def task_audit_rate(state: TaskState, settings: Settings) -> float:
    """The share of a task's student answers the teacher audits: its own, else the settings'."""
    return settings.audit_rate if state.audit_rate is None else state.audit_rate


def check_target_agreement(value: float | None) -> float | None:
    """``value`` if None or strictly between 0.5 and 1; raises ``InvalidRequest`` otherwise."""
    low, high = TARGET_AGREEMENT_RANGE
    if value is not None and not low < value < high:
        raise InvalidRequest(
            f"target_agreement must be above {low} and below {high}, got {value}",
            param="target_agreement",
        )
    return value


def check_audit_rate(value: float | None) -> float | None:
    """``value`` if None or from 0 to 1; raises ``InvalidRequest`` otherwise."""
    low, high = AUDIT_RATE_RANGE
    if value is not None and not low <= value <= high:
        raise InvalidRequest(
            f"audit_rate must be from {low} to {high}, got {value}", param="audit_rate"
        )
    return value


def check_threshold(value: float | None) -> float | None:
    """``value`` if None or a confidence from 0 to 1; raises ``InvalidRequest`` otherwise."""
    if value is not None and not 0.0 <= value <= 1.0:
        raise InvalidRequest(f"threshold must be from 0 to 1, got {value}", param="threshold")
    return value


def parse_target_agreement(raw: str) -> float | None:
    """A task's target agreement from text: None for "" or "default", else a probability strictly
    between 0.5 and 1; raises ``InvalidRequest`` otherwise."""
    return check_target_agreement(_number("target_agreement", raw))


def parse_audit_rate(raw: str) -> float | None:
    """A task's audit rate from text: None for "" or "default", else a fraction from 0 to 1;
    raises ``InvalidRequest`` otherwise."""
    return check_audit_rate(_number("audit_rate", raw))


def _number(name: str, raw: str) -> float | None:
    text = raw.strip().lower()
    if text in DEFAULT_WORDS:
        return None
    try:
        return float(text)
    except ValueError:
        raise InvalidRequest(f"{name} {raw!r} is not a number (or 'default')", param=name) from None

"""Per-call routing: given the task's mode and the student's prediction, who answers.

Pure functions, so the rules read in one place and are tested without a server.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

from understudy.routing.modes import Mode
from understudy.tasks import Prediction


class AnsweredBy(StrEnum):
    """Which side's answer the client receives."""

    TEACHER = "teacher"
    STUDENT = "student"


@dataclass(frozen=True)
class RoutingPolicy:
    """A task's routing knobs as stored: mode, confidence threshold (probability) and audit rate."""

    mode: Mode
    threshold: float | None
    audit_rate: float


@dataclass(frozen=True)
class Route:
    """The decision for one call.

    ``audit`` means the teacher is also asked in the background so the student's answer can be
    compared (only when the student answered). ``compare`` means the student's prediction is logged
    next to the teacher's answer (shadow mode and cascade fall-through), which measures live
    agreement without affecting the response.
    """

    answered_by: AnsweredBy
    audit: bool = False
    compare: bool = False


def needs_student_prediction(policy: RoutingPolicy) -> bool:
    """Whether the student should predict for a call of a task in this mode."""
    return policy.mode is not Mode.TEACHER


def decide_route(policy: RoutingPolicy, prediction: Prediction | None, rng: random.Random) -> Route:
    """Who answers this call, and whether the other side is consulted in the background.

    Without a prediction (no student yet, or the student failed) the teacher always answers.
    """
    if prediction is None or policy.mode in (Mode.TEACHER, Mode.SHADOW):
        return Route(AnsweredBy.TEACHER, compare=prediction is not None)
    confident = policy.threshold is not None and prediction.confidence >= policy.threshold
    if policy.mode is Mode.STUDENT or confident:
        return Route(AnsweredBy.STUDENT, audit=rng.random() < policy.audit_rate)
    return Route(AnsweredBy.TEACHER, compare=True)

"""Routing: which side answers each call, and when a task moves between modes."""

from understudy.routing.decide import (
    AnsweredBy,
    Route,
    RoutingPolicy,
    decide_route,
    needs_student_prediction,
)
from understudy.routing.modes import Mode
from understudy.routing.policy import (
    HeldoutEvidence,
    LiveEvidence,
    ModeChange,
    SwitchKnobs,
    decide_mode_change,
)

__all__ = [
    "AnsweredBy",
    "HeldoutEvidence",
    "LiveEvidence",
    "Mode",
    "ModeChange",
    "Route",
    "RoutingPolicy",
    "SwitchKnobs",
    "decide_mode_change",
    "decide_route",
    "needs_student_prediction",
]

"""The per-task serving modes and the order the switch loop moves through them."""

from __future__ import annotations

from enum import StrEnum


class Mode(StrEnum):
    """Who answers a task's calls.

    - ``shadow``: the teacher answers; the serving student (if any) predicts in the background so
      live agreement is measured on real traffic.
    - ``cascade``: the student answers when its calibrated confidence clears the task's threshold;
      otherwise the teacher answers.
    - ``student``: the student answers every call; the teacher sees only the audit sample.
    - ``teacher``: understudy is off for the task: teacher only, no student work at all.
    """

    SHADOW = "shadow"
    CASCADE = "cascade"
    STUDENT = "student"
    TEACHER = "teacher"


# Automatic moves go one step at a time; ``teacher`` is only ever set by a person.
PROMOTION: dict[Mode, Mode] = {Mode.SHADOW: Mode.CASCADE, Mode.CASCADE: Mode.STUDENT}
ROLLBACK: dict[Mode, Mode] = {Mode.STUDENT: Mode.CASCADE, Mode.CASCADE: Mode.SHADOW}

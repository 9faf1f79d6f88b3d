"""The switch policy: when a task moves between shadow, cascade and student, by evidence.

Promotion needs confidence that the student is good enough (a lower bound clears the target);
rollback needs confidence that it is not (the upper bound of live agreement falls below the
target). Requiring confidence in both directions keeps a task from flapping on noise. The rollback
bound is stricter (``rollback_confidence``, default 99.9%) because it is checked again on every
pass over a sliding window: at 95%, a student that truly agrees 98.5% of the time with a 98% target
was rolled back by chance alone in 38% of simulated runs of 2,000 audits, at 99.9% in 2%, for
1.6x the audits to catch a drop to 90% (``bench/rollback_noise.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from understudy.routing.modes import PROMOTION, ROLLBACK, Mode
from understudy.settings import Settings
from understudy.stats import one_sided_z, wilson_interval, wilson_upper_bound


@dataclass(frozen=True)
class SwitchKnobs:
    """The policy's thresholds (see the same-named settings for their meaning)."""

    target_agreement: float
    min_heldout: int
    min_coverage_for_cascade: float
    full_coverage_for_student: float
    min_live_for_rollback: int
    rollback_confidence: float

    @classmethod
    def from_settings(cls, settings: Settings, target_agreement: float) -> SwitchKnobs:
        """The settings' thresholds, holding the task to ``target_agreement``
        (``routing.overrides.task_target``)."""
        return cls(
            target_agreement=target_agreement,
            min_heldout=settings.min_heldout_for_switch,
            min_coverage_for_cascade=settings.min_coverage_for_cascade,
            full_coverage_for_student=settings.full_coverage_for_student,
            min_live_for_rollback=settings.min_live_for_rollback,
            rollback_confidence=settings.rollback_confidence,
        )


@dataclass(frozen=True)
class HeldoutEvidence:
    """The serving student's evaluation on held-out calls it never trained on.

    ``threshold`` is the smallest confidence at which agreement's lower bound clears the target
    (None when no threshold does); ``coverage`` is the share of held-out calls at or above it.
    """

    version: str
    threshold: float | None
    coverage: float
    agreement_lower_bound: float
    heldout_size: int


@dataclass(frozen=True)
class LiveEvidence:
    """Student-vs-teacher comparisons on live calls the student answered, in the current mode."""

    comparisons: int
    agreements: int

    @property
    def bounds(self) -> tuple[float, float]:
        """One-sided 95% Wilson bounds of live agreement; (0, 1) while there are no comparisons."""
        return wilson_interval(self.agreements, self.comparisons)

    def upper_bound(self, confidence: float) -> float:
        """The agreement we are ``confidence`` sure the truth is below (1 with no comparisons)."""
        return wilson_upper_bound(self.agreements, self.comparisons, one_sided_z(confidence))


@dataclass(frozen=True)
class ModeChange:
    """A decided move, with the reason and evidence recorded in the task's event log."""

    to_mode: Mode
    reason: str
    evidence: dict[str, Any]


def decide_mode_change(
    mode: Mode,
    heldout: HeldoutEvidence | None,
    live: LiveEvidence,
    knobs: SwitchKnobs,
    *,
    promotable: bool = True,
) -> ModeChange | None:
    """The move the evidence calls for, or None to stay.

    ``promotable`` is False when the serving version was already rolled back once: only a newly
    trained student may earn the promotion again.
    """
    if mode is Mode.TEACHER:
        return None
    evidence = _evidence(heldout, live, knobs)
    if mode in ROLLBACK:
        if heldout is None:
            return ModeChange(Mode.SHADOW, "no serving student", evidence)
        if heldout.threshold is None:
            # Without a threshold the cascade would answer nothing: say so instead of pretending.
            reason = (
                f"student {heldout.version} no longer keeps agreement >= "
                f"{knobs.target_agreement:.3f} at any confidence on "
                f"{heldout.heldout_size} held-out calls"
            )
            return ModeChange(ROLLBACK[mode], reason, evidence)
        upper = live.upper_bound(knobs.rollback_confidence)
        if live.comparisons >= knobs.min_live_for_rollback and upper < knobs.target_agreement:
            reason = (
                f"live agreement {live.agreements}/{live.comparisons} "
                f"({knobs.rollback_confidence:.1%} upper bound {upper:.3f}) fell below target "
                f"{knobs.target_agreement:.3f}"
            )
            return ModeChange(ROLLBACK[mode], reason, evidence)
    if mode not in PROMOTION or heldout is None or not promotable:
        return None
    if not _clears_heldout(heldout, knobs):
        return None
    if mode is Mode.SHADOW and heldout.coverage >= knobs.min_coverage_for_cascade:
        reason = (
            f"student {heldout.version} keeps agreement >= {knobs.target_agreement:.3f} "
            f"(lower bound {heldout.agreement_lower_bound:.3f}) on {heldout.coverage:.0%} "
            f"of {heldout.heldout_size} held-out calls at confidence >= {heldout.threshold:.3f}"
        )
        return ModeChange(Mode.CASCADE, reason, evidence)
    if mode is Mode.CASCADE and heldout.coverage >= knobs.full_coverage_for_student:
        lower, _ = live.bounds
        if live.comparisons >= knobs.min_live_for_rollback and lower >= knobs.target_agreement:
            reason = (
                f"held-out coverage {heldout.coverage:.1%} at target and live agreement "
                f"lower bound {lower:.3f} over {live.comparisons} audited calls"
            )
            return ModeChange(Mode.STUDENT, reason, evidence)
    return None


def _clears_heldout(heldout: HeldoutEvidence, knobs: SwitchKnobs) -> bool:
    return (
        heldout.threshold is not None
        and heldout.heldout_size >= knobs.min_heldout
        and heldout.agreement_lower_bound >= knobs.target_agreement
    )


def _evidence(
    heldout: HeldoutEvidence | None, live: LiveEvidence, knobs: SwitchKnobs
) -> dict[str, Any]:
    lower, _ = live.bounds
    return {
        "target_agreement": knobs.target_agreement,
        "heldout": None
        if heldout is None
        else {
            "version": heldout.version,
            "threshold": heldout.threshold,
            "coverage": heldout.coverage,
            "agreement_lower_bound": heldout.agreement_lower_bound,
            "size": heldout.heldout_size,
        },
        "live": {
            "comparisons": live.comparisons,
            "agreements": live.agreements,
            "lower_bound": lower,
            "upper_bound": live.upper_bound(knobs.rollback_confidence),
            "rollback_confidence": knobs.rollback_confidence,
        },
    }

from dataclasses import replace

from understudy.routing import (
    HeldoutEvidence,
    LiveEvidence,
    Mode,
    SwitchKnobs,
    decide_mode_change,
)

KNOBS = SwitchKnobs(
    target_agreement=0.98,
    min_heldout=200,
    min_coverage_for_cascade=0.1,
    full_coverage_for_student=0.99,
    min_live_for_rollback=30,
    rollback_confidence=0.999,
)
NO_LIVE = LiveEvidence(0, 0)


def heldout(coverage: float, lower: float = 0.985, size: int = 400) -> HeldoutEvidence:
    return HeldoutEvidence("3", 0.9, coverage, lower, size)


def test_shadow_promotes_to_cascade_on_confident_heldout_evidence() -> None:
    change = decide_mode_change(Mode.SHADOW, heldout(0.6), NO_LIVE, KNOBS)
    assert change is not None and change.to_mode is Mode.CASCADE
    assert change.evidence["heldout"]["coverage"] == 0.6
    assert "60%" in change.reason


def test_shadow_stays_when_evidence_is_thin_or_weak() -> None:
    assert decide_mode_change(Mode.SHADOW, heldout(0.6, size=150), NO_LIVE, KNOBS) is None
    assert decide_mode_change(Mode.SHADOW, heldout(0.6, lower=0.97), NO_LIVE, KNOBS) is None
    assert decide_mode_change(Mode.SHADOW, heldout(0.05), NO_LIVE, KNOBS) is None
    assert decide_mode_change(Mode.SHADOW, None, NO_LIVE, KNOBS) is None


def test_a_rolled_back_version_is_not_promoted_again() -> None:
    assert decide_mode_change(Mode.SHADOW, heldout(0.6), NO_LIVE, KNOBS, promotable=False) is None


def test_cascade_moves_to_student_only_with_full_coverage_and_live_proof() -> None:
    live = LiveEvidence(300, 300)
    change = decide_mode_change(Mode.CASCADE, heldout(1.0), live, KNOBS)
    assert change is not None and change.to_mode is Mode.STUDENT
    assert decide_mode_change(Mode.CASCADE, heldout(0.9), live, KNOBS) is None
    assert decide_mode_change(Mode.CASCADE, heldout(1.0), LiveEvidence(20, 20), KNOBS) is None


def test_live_drift_rolls_back_one_step() -> None:
    drifted = LiveEvidence(40, 20)
    from_student = decide_mode_change(Mode.STUDENT, heldout(1.0), drifted, KNOBS)
    from_cascade = decide_mode_change(Mode.CASCADE, heldout(1.0), drifted, KNOBS)
    assert from_student is not None and from_student.to_mode is Mode.CASCADE
    assert from_cascade is not None and from_cascade.to_mode is Mode.SHADOW
    assert from_cascade.evidence["live"]["upper_bound"] < 0.98


def test_rollback_needs_the_stricter_confidence_of_a_repeated_check() -> None:
    # 288/300 = 96%: below a 98% target at 95% confidence, not at 99.9%.
    borderline = LiveEvidence(300, 288)
    assert decide_mode_change(Mode.CASCADE, heldout(0.6), borderline, KNOBS) is None
    loose = replace(KNOBS, rollback_confidence=0.95)
    change = decide_mode_change(Mode.CASCADE, heldout(0.6), borderline, loose)
    assert change is not None and change.to_mode is Mode.SHADOW
    assert "95.0% upper bound 0.975" in change.reason
    assert change.evidence["live"]["rollback_confidence"] == 0.95


def test_noise_alone_does_not_roll_back() -> None:
    # 29/30 is consistent with a true agreement of 0.98: no confident evidence of drift.
    assert decide_mode_change(Mode.CASCADE, heldout(0.6), LiveEvidence(30, 29), KNOBS) is None
    # Too few comparisons to judge, even if all disagree.
    assert decide_mode_change(Mode.CASCADE, heldout(0.6), LiveEvidence(10, 0), KNOBS) is None


def test_losing_the_student_sends_the_task_back_to_shadow() -> None:
    change = decide_mode_change(Mode.STUDENT, None, NO_LIVE, KNOBS)
    assert change is not None and change.to_mode is Mode.SHADOW


def test_teacher_mode_is_never_changed_by_policy() -> None:
    assert decide_mode_change(Mode.TEACHER, heldout(1.0), LiveEvidence(300, 300), KNOBS) is None


def test_a_serving_student_without_a_threshold_steps_back() -> None:
    lost = HeldoutEvidence("v4", None, 0.0, 0.0, 800)
    change = decide_mode_change(Mode.CASCADE, lost, NO_LIVE, KNOBS)
    assert change is not None and change.to_mode is Mode.SHADOW
    assert "no longer keeps" in change.reason
    change = decide_mode_change(Mode.STUDENT, lost, LiveEvidence(300, 300), KNOBS)
    assert change is not None and change.to_mode is Mode.CASCADE

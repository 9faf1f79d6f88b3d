"""Evaluation of students: metrics, held-out reports and the cascade's confidence threshold."""

from understudy.evaluation.metrics import (
    CurvePoint,
    accuracy,
    coverage_curve,
    expected_calibration_error,
    macro_f1,
    pick_threshold,
)
from understudy.evaluation.report import (
    EvaluationReport,
    HeadReport,
    SupportsPredict,
    evaluate,
    write_heldout_metrics,
)
from understudy.stats import wilson_lower_bound

__all__ = [
    "CurvePoint",
    "EvaluationReport",
    "HeadReport",
    "SupportsPredict",
    "accuracy",
    "coverage_curve",
    "evaluate",
    "expected_calibration_error",
    "macro_f1",
    "pick_threshold",
    "wilson_lower_bound",
    "write_heldout_metrics",
]

"""Rich tables of evaluation reports and predictions, for the command line."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table
from rich.text import Text

from understudy.evaluation.report import EvaluationReport
from understudy.tasks import Prediction


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def report_table(report: EvaluationReport) -> Table:
    """One row per head plus an overall row: agreement, accuracy vs gold, macro-F1, ECE."""
    table = Table(
        "head",
        "n",
        "agreement (teacher)",
        "accuracy (gold)",
        "macro-F1",
        "ECE",
        title=escape(f"{report.task_key} {report.student_version} ({report.student_kind})"),
    )
    for head in report.heads:
        table.add_row(
            Text(head.name),
            str(head.n),
            f"{_percent(head.agreement)} of {head.n_teacher}",
            f"{_percent(head.accuracy)} of {head.n_gold}",
            f"{head.macro_f1:.3f}",
            f"{head.ece:.3f}",
        )
    table.add_row(
        "all heads", str(report.n), _percent(report.agreement), "", "", f"{report.ece:.3f}"
    )
    return table


def threshold_line(report: EvaluationReport) -> str:
    """The cascade threshold in words: what the student would answer at the target."""
    if report.threshold is None:
        return (
            f"no confidence threshold reaches {report.target_agreement:.1%} agreement with 95% "
            "confidence on this held-out set: keep the teacher"
        )
    return (
        f"threshold {report.threshold:.3f}: the student answers {_percent(report.coverage)} of "
        f"calls with agreement ≥ {_percent(report.threshold_lower_bound)} (95% lower bound; "
        f"target {report.target_agreement:.1%}); {report.predict_ms_per_text:.2f} ms per text"
    )


def prediction_table(prediction: Prediction) -> Table:
    """One row per head: the label and its calibrated probability, then the runner-up."""
    table = Table("head", "label", "probability", "runner-up")
    for head, label in prediction.labels.items():
        ranked = sorted(prediction.probs[head].items(), key=lambda item: -item[1])
        runner_up = f"{ranked[1][0]} ({ranked[1][1]:.3f})" if len(ranked) > 1 else ""
        # Text, not markup: head names and labels come from the task's schema.
        table.add_row(
            Text(head), Text(label), f"{prediction.probs[head][label]:.3f}", Text(runner_up)
        )
    return table

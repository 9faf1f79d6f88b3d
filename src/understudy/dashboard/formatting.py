"""How the dashboard and its terminal mirror write numbers and facts: percentages, milliseconds,
dollars, the graph a student serves, the switch policy's live evidence, the changes an event
recorded, the older task versions still answering ("–" for a missing value)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from understudy.routing import Mode
from understudy.store.records import TaskState


def pct(value: float | None, digits: int = 1) -> str:
    """A fraction as a percentage, e.g. ``0.123`` -> ``12.3%``."""
    return "–" if value is None else f"{value * 100:.{digits}f}%"


def ms(value: float | None) -> str:
    """Milliseconds, one decimal below 10 ms."""
    if value is None:
        return "–"
    return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


def usd(value: float | None) -> str:
    """US dollars, four decimals below one dollar (a few calls' worth is cents or less)."""
    if value is None:
        return "–"
    return f"${value:,.2f}" if value >= 1 else f"${value:.4f}"


def served_graph(kind: str, metrics: Mapping[str, Any] | None) -> str:
    """What a training run's student answers with: ``int8 <scheme>`` when an int8 graph was
    faithful enough to fp32 (``understudy.serving.onnx_export``), ``fp32`` when none was,
    ``scikit-learn`` for n-gram students; "–" when the run did not record it (failed runs, runs
    before the scheme was recorded, students served by torch)."""
    if kind == "ngram":
        return "scikit-learn"
    metrics = metrics or {}
    if metrics.get("int8_scheme"):
        return f"int8 {metrics['int8_scheme']}"
    if "int8_scheme" in metrics and metrics.get("int8_agreement_with_fp32") is not None:
        return "fp32"
    return "–"


def policy_live_evidence(mode: Mode, comparisons: int, agreements: int) -> str:
    """The live agreement the switch policy judges a task by (``switch.policy_live_agreement``):
    audited student answers outside shadow mode, the serving student's predictions in it."""
    if mode is Mode.TEACHER:
        return "–"
    what = "predictions" if mode is Mode.SHADOW else "audited student answers"
    if comparisons == 0:
        return f"no {what} compared since the last mode change"
    return (
        f"{agreements:,}/{comparisons:,} {what} agree ({agreements / comparisons:.1%}) "
        "since the last mode change"
    )


SETTINGS_DEFAULTED = frozenset({"target_agreement", "audit_rate"})
"""Per-task knobs whose None means the settings' value applies (see ``routing.overrides``)."""


def event_changes(evidence: Mapping[str, Any]) -> str:
    """What an event recorded, e.g. ``serving_version v8, threshold 0.760``: numbers between 0 and
    1 (thresholds, rates, agreements) to three decimals, None as "none" (or "default" for a knob
    that falls back to the settings), anything nested as JSON."""
    parts = []
    for name, value in evidence.items():
        if value is None:
            shown = "default" if name in SETTINGS_DEFAULTED else "none"
        elif isinstance(value, float):
            shown = f"{value:.3f}" if 0.0 <= value <= 1.0 else f"{value:g}"
        elif isinstance(value, str | int):
            shown = str(value)
        else:
            shown = json.dumps(value)
        parts.append(f"{name} {shown}")
    return ", ".join(parts)


def task_knob(value: float | None, default: float) -> str:
    """A per-task knob as it applies: its own value, or the settings' marked "(default)"."""
    return f"{default:g} (default)" if value is None else f"{value:g}"


def older_versions_answering(states: Sequence[TaskState]) -> str:
    """Older task versions whose student still answers callers on their schema, e.g.
    ``version 1 (cascade, student v3)``; empty when none."""
    return "; ".join(
        f"version {state.version} ({state.mode.value}, student {state.serving_version or 'none'})"
        for state in states
    )

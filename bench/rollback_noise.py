"""How often the live-audit rollback fires by chance, and how fast it catches real drift.

The worker checks live agreement (the last ``live_window`` audited calls) on every pass, so a
one-sided bound at a fixed confidence is tested again and again: its false-alarm rate over a
task's life is far above 1 - confidence. This simulates the product's own rule
(``routing.policy.decide_mode_change`` with the settings' ``live_window`` and
``min_live_for_rollback``) on Bernoulli audit streams, checking after every audit (a pass per
audit: the worst case), for several ``rollback_confidence`` values:

- false rollback: a student whose true agreement is at or above the target; the share of runs
  rolled back within ``--audits`` audits;
- detection delay: a student at 99% that drifts to a lower agreement once the window is full;
  audits after the drift until the rollback (median and p90; ``--audits`` when it never came).

Pure simulation, no model or server: it takes seconds.

    .venv/bin/python bench/rollback_noise.py     # -> bench/results/rollback-noise.json
"""

from __future__ import annotations

import argparse
import json
import platform
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from understudy.routing import HeldoutEvidence, LiveEvidence, Mode, SwitchKnobs, decide_mode_change
from understudy.settings import Settings

RESULTS = Path(__file__).parent / "results" / "rollback-noise.json"
CONFIDENCES = (0.95, 0.99, 0.999)
FALSE_ALARM_CASES = ((0.98, 0.98), (0.98, 0.985), (0.98, 0.99), (0.95, 0.95), (0.95, 0.96))
"""(target, true agreement) of a student that meets its target."""
DRIFT_CASES = ((0.98, 0.99, 0.95), (0.98, 0.99, 0.90), (0.98, 0.99, 0.50))
"""(target, agreement before, agreement after) of a student that drifts."""
SERVING = HeldoutEvidence("v1", 0.9, 0.6, 0.99, 1000)
"""A serving student whose held-out evidence is sound: only live agreement can roll it back."""


class RollbackRule:
    """``decide_mode_change`` in cascade mode, memoised on (agreements, comparisons)."""

    def __init__(self, knobs: SwitchKnobs):
        self.knobs = knobs
        self._cache: dict[tuple[int, int], bool] = {}

    def fires(self, agreements: int, comparisons: int) -> bool:
        key = (agreements, comparisons)
        if key not in self._cache:
            live = LiveEvidence(comparisons, agreements)
            change = decide_mode_change(Mode.CASCADE, SERVING, live, self.knobs)
            self._cache[key] = change is not None and change.to_mode is Mode.SHADOW
        return self._cache[key]


def first_rollback(rule: RollbackRule, agreed: np.ndarray, window: int, start: int) -> int | None:
    """Index (1-based count of audits) of the first check from ``start`` on that rolls back."""
    cumulative = np.concatenate([[0], np.cumsum(agreed)])
    for n in range(max(start, 1), len(agreed) + 1):
        size = min(n, window)
        if rule.fires(int(cumulative[n] - cumulative[n - size]), size):
            return n
    return None


def knobs(settings: Settings, target: float, confidence: float) -> SwitchKnobs:
    """The settings' switch knobs at ``target``, rolling back at ``confidence``."""
    return replace(SwitchKnobs.from_settings(settings, target), rollback_confidence=confidence)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000, help="simulated streams per case")
    parser.add_argument("--audits", type=int, default=2000, help="audits per stream")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    settings = Settings()
    window = settings.live_window
    rng = np.random.default_rng(args.seed)
    rows: list[dict[str, Any]] = []
    cases = len(CONFIDENCES) * (len(FALSE_ALARM_CASES) + len(DRIFT_CASES))
    with Progress() as progress:
        bar = progress.add_task("simulating audit streams", total=cases * args.runs)
        for confidence in CONFIDENCES:
            for target, truth in FALSE_ALARM_CASES:
                rule = RollbackRule(knobs(settings, target, confidence))
                fired = 0
                for _ in range(args.runs):
                    agreed = rng.random(args.audits) < truth
                    fired += first_rollback(rule, agreed, window, 1) is not None
                    progress.advance(bar)
                rows.append(
                    {
                        "kind": "false rollback",
                        "rollback_confidence": confidence,
                        "target": target,
                        "true_agreement": truth,
                        "rolled_back_share": fired / args.runs,
                    }
                )
            for target, before, after in DRIFT_CASES:
                rule = RollbackRule(knobs(settings, target, confidence))
                delays = []
                for _ in range(args.runs):
                    agreed = np.concatenate(
                        [rng.random(window) < before, rng.random(args.audits) < after]
                    )
                    at = first_rollback(rule, agreed, window, window + 1)
                    delays.append(args.audits if at is None else at - window)
                    progress.advance(bar)
                rows.append(
                    {
                        "kind": "drift",
                        "rollback_confidence": confidence,
                        "target": target,
                        "agreement_before": before,
                        "agreement_after": after,
                        "audits_to_rollback_p50": float(np.median(delays)),
                        "audits_to_rollback_p90": float(np.percentile(delays, 90)),
                    }
                )
    results = {
        "benchmark": "rollback_noise",
        "measured": "simulated audit streams through routing.policy.decide_mode_change, "
        "one check per audit",
        "created_at": datetime.now(UTC).isoformat(),
        "machine": {"python": platform.python_version()},
        "args": {"runs": args.runs, "audits": args.audits, "seed": args.seed},
        "settings": {
            "live_window": window,
            "min_live_for_rollback": settings.min_live_for_rollback,
        },
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    show(rows, args.audits)
    print(f"wrote {args.out}")


def show(rows: list[dict[str, Any]], audits: int) -> None:
    console = Console()
    table = Table(title=f"False rollbacks within {audits:,} audits (share of runs)")
    table.add_column("target")
    table.add_column("true agreement")
    for confidence in CONFIDENCES:
        table.add_column(f"{confidence:.1%}", justify="right")
    for target, truth in FALSE_ALARM_CASES:
        shares = [
            row["rolled_back_share"]
            for row in rows
            if row["kind"] == "false rollback"
            and (row["target"], row["true_agreement"]) == (target, truth)
        ]
        table.add_row(f"{target:.3f}", f"{truth:.3f}", *(f"{share:.2f}" for share in shares))
    console.print(table)
    table = Table(title="Audits from drift to rollback, p50 / p90")
    table.add_column("target")
    table.add_column("drift")
    for confidence in CONFIDENCES:
        table.add_column(f"{confidence:.1%}", justify="right")
    for target, before, after in DRIFT_CASES:
        delays = [
            f"{row['audits_to_rollback_p50']:.0f} / {row['audits_to_rollback_p90']:.0f}"
            for row in rows
            if row["kind"] == "drift"
            and (row["target"], row["agreement_before"], row["agreement_after"])
            == (target, before, after)
        ]
        table.add_row(f"{target:.3f}", f"{before:.2f} -> {after:.2f}", *delays)
    console.print(table)


if __name__ == "__main__":
    main()

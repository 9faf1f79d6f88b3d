"""The dashboard in a terminal: rich tables for ``understudy tasks`` / ``task`` and the
keyboard review queue of ``understudy review`` (the CLI commands only parse and call these)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from understudy.dashboard.formatting import (
    ms,
    older_versions_answering,
    pct,
    policy_live_evidence,
    served_graph,
    task_knob,
    usd,
)
from understudy.settings import Settings
from understudy.store import Store, switch
from understudy.store import queries as q
from understudy.tasks import LabelSource


def tasks_table(overviews: list[q.TaskOverview]) -> Table:
    """Every task's line of the tasks page."""
    table = Table(title="Tasks (rates over the last 7 days)")
    for column in (
        "task",
        "mode",
        "calls/day",
        "student share",
        "student vs teacher",
        "labelled",
        "cost avoided",
    ):
        table.add_column(column, justify="left" if column in ("task", "mode") else "right")
    table.add_column("can switch?")
    for o in overviews:
        agreement = pct(o.agreement)
        if o.compared:
            agreement += f" ({pct(o.agreement_low)}–{pct(o.agreement_high)}, n={o.compared})"
        table.add_row(
            Text(f"{o.key} v{o.version}"),
            o.mode.value,
            f"{o.calls_per_day:.0f}",
            pct(o.student_share),
            agreement,
            str(o.labelled),
            usd(o.savings.avoided_cost_usd),
            Text("; ".join(o.blockers) or "ready"),
        )
    return table


def print_task(console: Console, store: Store, key: str, settings: Settings) -> None:
    """One task: its overview, its policy knobs and live evidence, latency, serving student,
    recent runs and events (``settings``: the defaults its own knobs override, prices, the live
    window the worker reads)."""
    o = q.task_overview(
        store, key, min_labels=settings.first_train_labels, prices=settings.model_prices
    )
    state = store.task_state(key, o.version)
    live = switch.policy_live_agreement(store, state, settings.live_window)
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    rows = [
        ("mode", o.mode.value),
        ("threshold", "none" if o.threshold is None else f"{o.threshold:.3f}"),
        ("target agreement", task_knob(state.target_agreement, settings.target_agreement)),
        ("audit rate", task_knob(state.audit_rate, settings.audit_rate)),
        ("serving student", o.serving_version or "none"),
        ("calls (7 days)", f"{o.calls:,} ({o.calls_per_day:.0f}/day)"),
        ("student share", pct(o.student_share)),
        ("student vs teacher", f"{pct(o.agreement)} on {o.compared} compared calls (7 days)"),
        ("policy's live evidence", policy_live_evidence(o.mode, *live)),
        ("labelled", f"{o.labelled} ({o.human_labelled} by people)"),
        ("tokens avoided (7 days)", f"{o.savings.avoided_tokens:,}"),
        ("teacher cost avoided (7 days)", usd(o.savings.avoided_cost_usd)),
    ]
    for side, latency in o.latency.items():
        rows.append((f"{side} p50/p99", f"{ms(latency.p50_ms)} / {ms(latency.p99_ms)}"))
    rows.append(("blockers", "; ".join(o.blockers) or "none"))
    older = [older_state for _, older_state in store.older_answering_tasks(key)]
    if older:
        rows.append(("older schemas answered", older_versions_answering(older)))
    for name, value in rows:
        facts.add_row(name, Text(value))
    console.print(Panel(facts, title=escape(f"{o.key} v{o.version}")))
    runs = Table(title="Student runs")
    for column in ("run", "schema", "kind", "status", "version", "graph", "agreement", "coverage"):
        runs.add_column(column)
    for run in store.student_runs(key)[:10]:
        metrics = run.metrics or {}
        runs.add_row(
            str(run.id),
            str(run.task_version),
            run.kind,
            # Text, not markup: an error message may hold brackets.
            Text(f"{run.status}\n{metrics['error']}" if metrics.get("error") else run.status),
            run.version or "–",
            served_graph(run.kind, run.metrics),
            pct(metrics.get("agreement")),
            pct(metrics.get("coverage")),
        )
    console.print(runs)
    events = Table(title="Recent events")
    for column in ("when", "schema", "event", "change", "reason"):
        events.add_column(column)
    for event in store.events(key, limit=10):
        change = f"{event.from_mode or '–'} → {event.to_mode}" if event.to_mode else ""
        events.add_row(
            event.created_at.strftime("%Y-%m-%d %H:%M"),
            str(event.task_version or "–"),
            event.kind,
            change,
            Text(event.reason or ""),
        )
    console.print(events)


@dataclass
class ReviewTally:
    """What a terminal review session did."""

    labelled: int = 0
    skipped: int = 0
    undone: int = 0


def review(
    store: Store,
    key: str,
    console: Console,
    ask: Callable[[str], str],
    *,
    author: str | None = None,
    label: tuple[str, str] | None = None,
    disagreement_only: bool = False,
) -> ReviewTally:
    """Review a task's queue one call at a time until it is empty or ``q`` is typed.

    For each head ``ask`` returns the typed answer: a label's number, ``s`` (skip the call), ``u``
    (undo the last label or skip) or ``q`` (quit). Labels are stored with ``Store.add_labels`` as
    human labels, the library call behind ``POST /v1/feedback``.
    """
    task = store.get_task(key)
    tally = ReviewTally()
    skipped: list[str] = []
    history: list[tuple[str, q.ReviewItem]] = []
    pending: list[q.ReviewItem] = []
    while True:
        if not pending:
            pending = q.review_queue(
                store,
                key,
                label=label,
                disagreement_only=disagreement_only,
                exclude=skipped,
            )
            if not pending:
                console.print("[green]Nothing left to review.[/green]")
                return tally
        item = pending[0]
        console.print(
            Panel(
                Text(item.text),
                title=escape(f"{item.reason.value} · {item.call_id}"),
                subtitle=escape(
                    f"teacher: {_labels(item.teacher_labels)} · "
                    f"student: {_labels(item.student_labels)} · confidence {pct(item.confidence)}"
                ),
            )
        )
        chosen: dict[str, str] = {}
        action = ""
        for head in task.heads:
            menu = "  ".join(f"[{i}] {value}" for i, value in enumerate(head.labels, start=1))
            console.print(
                f"[bold]{escape(head.name)}[/bold]: {escape(menu)}   "
                + escape("[s] skip  [u] undo  [q] quit")
            )
            while True:
                answer = ask(">").strip().lower()
                if answer in ("s", "u", "q"):
                    action = answer
                    break
                if answer.isdigit() and 1 <= int(answer) <= len(head.labels):
                    chosen[head.name] = head.labels[int(answer) - 1]
                    break
                console.print(f"[red]type 1–{len(head.labels)}, s, u or q[/red]")
            if action:
                break
        if action == "q":
            return tally
        if action == "s":
            skipped.append(pending.pop(0).call_id)
            history.append(("skip", item))
            tally.skipped += 1
        elif action == "u":
            if not history:
                console.print("nothing to undo")
                continue
            kind, previous = history.pop()
            if kind == "label":
                q.undo_human_labels(store, previous.call_id)
                tally.labelled -= 1
            else:
                skipped.remove(previous.call_id)
                tally.skipped -= 1
            tally.undone += 1
            pending.insert(0, previous)
            console.print(Text(f"undid {kind} of {previous.call_id}"))
        else:
            stored = store.add_labels(item.call_id, chosen, source=LabelSource.HUMAN, author=author)
            pending.pop(0)
            history.append(("label", item))
            tally.labelled += 1
            console.print(f"[green]saved[/green] {escape(_labels(stored))}")


def _labels(labels: dict[str, str]) -> str:
    return ", ".join(f"{head}={value}" for head, value in labels.items()) or "–"

"""The dashboard's routes under ``/ui``: server-rendered pages and the review queue's small API.

Handlers are plain ``def`` functions, so FastAPI runs them in its thread pool and the store's
blocking queries never stall the event loop. Labels from the review page go through the public
``POST /v1/feedback`` (the same path as programmatic feedback); only undo, which the feedback API
has no verb for, has a route here.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, StreamingResponse
from jinja2 import Environment, PackageLoader, select_autoescape

from understudy.dashboard import charts
from understudy.dashboard.auth import require_admin
from understudy.dashboard.formatting import (
    event_changes,
    ms,
    older_versions_answering,
    pct,
    policy_live_evidence,
    served_graph,
    task_knob,
    usd,
)
from understudy.errors import InvalidRequest, NotFound
from understudy.routing.modes import Mode
from understudy.routing.overrides import (
    check_threshold,
    parse_audit_rate,
    parse_target_agreement,
    task_target,
)
from understudy.settings import Settings
from understudy.store import Store, switch
from understudy.store import queries as q
from understudy.store.tables import utcnow
from understudy.store.worker_status import worker_status

if TYPE_CHECKING:  # the gateway imports this module: no import of it at run time
    from understudy.gateway.students import StudentPool

STATIC_DIR = Path(__file__).parent / "static"
STATIC_TYPES = {".css": "text/css", ".js": "text/javascript"}
# Chart ranges offered on the task page: name -> (bucket seconds, buckets).
RANGES = {"48h": (3600, 48), "7d": (6 * 3600, 28), "30d": (86400, 30)}
REVIEW_BATCH = 20
CALLS_PAGE = 50

router = APIRouter(prefix="/ui", dependencies=[Depends(require_admin)], include_in_schema=False)

_env = Environment(
    loader=PackageLoader("understudy.dashboard", "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _when(value: datetime | None) -> str:
    return "–" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


_env.filters.update(pct=pct, ms=ms, when=_when, usd=usd, changes=event_changes)
_env.globals.update(served_graph=served_graph)


# Own accessors rather than ``understudy.gateway.state``: importing the gateway package from here
# would import ``create_app``, which imports this router (a cycle).
def _store(request: Request) -> Store:
    return cast(Store, request.app.state.store)


def _settings(request: Request) -> Settings:
    return cast(Settings, request.app.state.settings)


def _students(request: Request) -> StudentPool:
    """The gateway's serving students, whose cached task states a change here must refresh."""
    return cast("StudentPool", request.app.state.students)


def _page(template: str, **context: Any) -> HTMLResponse:
    return HTMLResponse(_env.get_template(template).render(**context))


@router.get("/static/{name}")
def static(name: str) -> FileResponse:
    """The dashboard's vendored CSS and JavaScript."""
    path = STATIC_DIR / name
    if path.parent != STATIC_DIR or path.suffix not in STATIC_TYPES or not path.is_file():
        raise NotFound(f"no static file {name!r}")
    return FileResponse(path, media_type=STATIC_TYPES[path.suffix])


@router.get("", response_class=HTMLResponse)
@router.get("/", response_class=HTMLResponse)
@router.get("/tasks", response_class=HTMLResponse)
def tasks_page(request: Request) -> HTMLResponse:
    """Every task: mode, traffic, the student's share, live agreement, latency, the teacher
    cost avoided, and why it cannot switch (computed blockers and the worker's reasons); a
    warning when no worker is running or the one running is stuck."""
    settings = _settings(request)
    store = _store(request)
    overviews = q.tasks_overview(
        store, min_labels=settings.first_train_labels, prices=settings.model_prices
    )
    return _page(
        "tasks.html",
        nav="tasks",
        tasks=overviews,
        worker_problem=worker_status(store, settings.worker_poll_s).problem(utcnow()),
        days=q.OVERVIEW_DAYS,
        latency_sample=q.LATENCY_SAMPLE,
    )


@router.get("/tasks/{key}", response_class=HTMLResponse)
def task_page(
    request: Request, key: str, span: str = Query("48h", alias="range"), message: str = ""
) -> HTMLResponse:
    """One task: charts over time, the serving student and its history, the coverage curve,
    confusion against gold, and the mode and threshold controls."""
    if span not in RANGES:
        raise InvalidRequest(f"range must be one of {', '.join(RANGES)}", param="range")
    store = _store(request)
    settings = _settings(request)
    overview = q.task_overview(
        store, key, min_labels=settings.first_train_labels, prices=settings.model_prices
    )
    bucket_s, buckets = RANGES[span]
    series = q.timeseries(store, key, bucket_s=bucket_s, buckets=buckets)
    serving = q.serving_metrics(store, key)
    state = store.task_state(key)
    target = task_target(state, settings)
    live = switch.policy_live_agreement(store, state, settings.live_window)
    return _page(
        "task.html",
        nav="tasks",
        task=overview,
        ranges=list(RANGES),
        chart_range=span,
        charts=_time_charts(series),
        curve=_curve(serving, overview.threshold, target),
        serving=serving,
        runs=store.student_runs(key)[:20],
        events=store.events(key, limit=30),
        confusions=q.confusion(store, key),
        modes=[m.value for m in Mode],
        target=target,
        live_evidence=policy_live_evidence(state.mode, *live),
        older=older_versions_answering([old for _, old in store.older_answering_tasks(key)]),
        state=state,
        knobs={
            "target agreement": task_knob(state.target_agreement, settings.target_agreement),
            "audit rate": task_knob(state.audit_rate, settings.audit_rate),
        },
        defaults={"target_agreement": settings.target_agreement, "audit_rate": settings.audit_rate},
        message=message,
    )


def _time_charts(series: list[q.Bucket]) -> list[Any]:
    if not series:
        return []
    labels = [b.start.strftime("%m-%d %H:%M") for b in series]
    return [
        charts.line_chart(
            "Volume (calls per bucket)",
            labels,
            [
                charts.Series("all", [float(b.calls) for b in series]),
                charts.Series("student", [float(b.student_calls) for b in series]),
            ],
            y_format=lambda v: f"{v:.0f}",
        ),
        charts.line_chart(
            "Agreement and coverage",
            labels,
            [
                charts.Series("agreement", [b.agreement for b in series]),
                charts.Series("coverage", [b.coverage for b in series]),
            ],
            y_max=1.0,
            y_format=lambda v: f"{v:.0%}",
        ),
        charts.line_chart(
            "Mean latency (ms)",
            labels,
            [
                charts.Series(side, [b.latency_ms[side] for b in series])
                for side in (q.TEACHER, q.STUDENT)
            ],
            y_format=lambda v: f"{v:.0f}",
        ),
    ]


def _curve(serving: dict[str, Any] | None, threshold: float | None, target: float) -> Any:
    points = (serving or {}).get("curve") or []
    if not points:
        return None
    return charts.curve_chart(
        [(float(p["threshold"]), float(p["coverage"]), float(p["agreement"])) for p in points],
        threshold,
        target,
    )


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form body as a dict of first values (no multipart: the forms here are
    small and urlencoded, so no extra dependency is needed to read them)."""
    body = (await request.body()).decode()
    return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}


def _reason(form: dict[str, str]) -> str:
    """The form's reason for a change, which every change of a task's routing must give."""
    reason = form.get("reason", "").strip()
    if not reason:
        raise InvalidRequest("a reason is required; it goes into the task's audit log")
    return reason


def _confirm(key: str, form: str, change: str, **fields: str) -> HTMLResponse:
    """The page that asks to confirm ``change`` of task ``key``: it posts ``fields`` back to the
    task's ``form`` route with ``confirm=yes``."""
    return _page(
        "confirm.html",
        nav="tasks",
        key=key,
        action=f"/ui/tasks/{key}/{form}",
        change=change,
        fields=fields,
    )


def _redirect(key: str, message: str) -> RedirectResponse:
    return RedirectResponse(f"/ui/tasks/{key}?{urlencode({'message': message})}", status_code=303)


@router.post("/tasks/{key}/mode", response_model=None)
async def change_mode(request: Request, key: str) -> HTMLResponse | RedirectResponse:
    """Change a task's mode: the first post shows a confirmation page, the confirmed post (with
    ``confirm=yes``) calls ``Store.set_mode``, which records the change in the event log."""
    form = await _form(request)
    store = _store(request)
    try:
        mode = Mode(form.get("mode", ""))
    except ValueError:
        raise InvalidRequest(f"unknown mode {form.get('mode')!r}", param="mode") from None
    reason = _reason(form)
    current = store.task_state(key)
    if form.get("confirm") != "yes":
        return _confirm(
            key, "mode", f"mode {current.mode.value} → {mode.value}", mode=mode.value, reason=reason
        )
    state = store.set_mode(key, mode, f"{reason} (dashboard)", evidence={"via": "dashboard"})
    _students(request).forget_state(key, state.version)
    return _redirect(key, f"mode changed to {mode.value}")


@router.post("/tasks/{key}/threshold", response_model=None)
async def change_threshold(request: Request, key: str) -> HTMLResponse | RedirectResponse:
    """Set (or clear, with an empty value: the cascade then answers nothing) a task's cascade
    threshold, with the same confirmation step as the mode; recorded as a ``state`` event by
    ``Store.update_task_state``."""
    form = await _form(request)
    store = _store(request)
    raw = form.get("threshold", "").strip()
    try:
        threshold = float(raw) if raw else None
    except ValueError:
        raise InvalidRequest(f"threshold {raw!r} is not a number", param="threshold") from None
    check_threshold(threshold)
    reason = _reason(form)
    current = store.task_state(key)
    shown = "none" if threshold is None else f"{threshold:.3f}"
    if form.get("confirm") != "yes":
        before = "none" if current.threshold is None else f"{current.threshold:.3f}"
        return _confirm(
            key, "threshold", f"threshold {before} → {shown}", threshold=raw, reason=reason
        )
    state = store.update_task_state(key, threshold=threshold, reason=f"{reason} (dashboard)")
    _students(request).forget_state(key, state.version)
    return _redirect(key, f"threshold set to {shown}")


@router.post("/tasks/{key}/knobs", response_model=None)
async def change_knobs(request: Request, key: str) -> HTMLResponse | RedirectResponse:
    """Set a task's own target agreement and audit rate (an empty value: the settings' applies),
    with the same confirmation step as the mode; recorded as a ``state`` event by
    ``Store.update_task_state``."""
    form = await _form(request)
    store = _store(request)
    settings = _settings(request)
    raw_target = form.get("target_agreement", "")
    raw_audit = form.get("audit_rate", "")
    target = parse_target_agreement(raw_target)
    audit = parse_audit_rate(raw_audit)
    reason = _reason(form)
    current = store.task_state(key)
    defaults = {"target_agreement": settings.target_agreement, "audit_rate": settings.audit_rate}
    wanted = {"target_agreement": target, "audit_rate": audit}
    # Only what differs: the form always sends both fields.
    changes: dict[str, Any] = {name: v for name, v in wanted.items() if v != getattr(current, name)}
    if not changes:
        raise InvalidRequest("nothing to change: both values are already in force")
    shown = ", ".join(
        f"{name.replace('_', ' ')} {task_knob(getattr(current, name), defaults[name])} → "
        f"{task_knob(value, defaults[name])}"
        for name, value in changes.items()
    )
    if form.get("confirm") != "yes":
        return _confirm(
            key, "knobs", shown, target_agreement=raw_target, audit_rate=raw_audit, reason=reason
        )
    state = store.update_task_state(key, reason=f"{reason} (dashboard)", **changes)
    _students(request).forget_state(key, state.version)
    return _redirect(key, f"set {shown}")


def _label_filter(label: str) -> tuple[str, str] | None:
    if not label:
        return None
    head, sep, value = label.partition("=")
    if not sep:
        raise InvalidRequest("label filter must be head=value", param="label")
    return head, value


@router.get("/tasks/{key}/review", response_class=HTMLResponse)
def review_page(
    request: Request, key: str, label: str = "", disagreement: bool = False
) -> HTMLResponse:
    """The review queue, one call at a time, driven by the keyboard (see ``review.js``)."""
    store = _store(request)
    task = store.get_task(key)
    _label_filter(label)  # a malformed filter is a 400 here, not an error inside the page's script
    config = {
        "task": key,
        "heads": [
            {"name": h.name, "labels": list(h.labels), "kind": h.kind.value} for h in task.heads
        ],
        "queue": f"/ui/api/tasks/{key}/review",
        "feedback": "/v1/feedback",
        "undo": "/ui/api/labels/",
        "filters": {"label": label, "disagreement": disagreement},
    }
    return _page(
        "review.html",
        nav="tasks",
        key=key,
        heads=task.heads,
        label=label,
        disagreement=disagreement,
        depth=q.review_depth(store, key),
        config=json.dumps(config),
    )


@router.get("/api/tasks/{key}/review")
def review_items(
    request: Request,
    key: str,
    label: str = "",
    disagreement: bool = False,
    exclude: str = "",
    limit: int = Query(REVIEW_BATCH, ge=1, le=200),
) -> dict[str, Any]:
    """The next batch of the review queue as JSON; ``exclude`` is a comma-separated list of
    request ids to leave out (the ones skipped this session)."""
    items = q.review_queue(
        _store(request),
        key,
        limit=limit,
        label=_label_filter(label),
        disagreement_only=disagreement,
        exclude=[i for i in exclude.split(",") if i],
    )
    return {"items": [item.to_json() for item in items]}


@router.post("/api/labels/{request_id}/undo")
def undo_labels(request: Request, request_id: str) -> dict[str, Any]:
    """Withdraw the newest human labels of a call (the review page's ``u``)."""
    return {"request_id": request_id, "removed": q.undo_human_labels(_store(request), request_id)}


@router.get("/tasks/{key}/export.{fmt}")
def export(request: Request, key: str, fmt: str) -> StreamingResponse:
    """The task's labelled data (human labels override the teacher's) as JSONL or CSV."""
    try:
        kind = q.ExportFormat(fmt)
    except ValueError:
        raise InvalidRequest("export format must be jsonl or csv", param="fmt") from None
    store = _store(request)
    store.get_task(key)  # an unknown task is a 404 before the stream starts
    media = "application/x-ndjson" if kind is q.ExportFormat.JSONL else "text/csv"
    return StreamingResponse(
        q.export_labelled(store, key, kind),
        media_type=media,
        headers={"content-disposition": f'attachment; filename="{key}.{kind.value}"'},
    )


@router.get("/calls", response_class=HTMLResponse)
def calls_page(
    request: Request,
    task: str = "",
    side: str = "",
    text: str = "",
    failed: str = "",
    before: str = "",
) -> HTMLResponse:
    """Search and filter logged calls, newest first, 50 to a page."""
    try:
        cursor = datetime.fromisoformat(before) if before else None
    except ValueError:
        raise InvalidRequest("before must be an ISO timestamp", param="before") from None
    store = _store(request)
    rows = q.search_calls(
        store,
        task_key=task or None,
        answered_by=side or None,
        text=text or None,
        failed={"yes": True, "no": False}.get(failed),
        before=cursor,
        limit=CALLS_PAGE,
    )
    filters = {"task": task, "side": side, "text": text, "failed": failed}
    more = None
    if len(rows) == CALLS_PAGE:
        more = "?" + urlencode({**filters, "before": rows[-1].created_at.isoformat()})
    return _page(
        "calls.html",
        nav="calls",
        calls=rows,
        filters=filters,
        task_keys=q.task_keys(store),
        more=more,
    )


@router.get("/calls/{request_id}", response_class=HTMLResponse)
def call_page(request: Request, request_id: str) -> HTMLResponse:
    """One logged call: request, response, who answered, latency, labels."""
    call = _store(request).get_call(request_id)
    return _page(
        "call.html",
        nav="calls",
        call=call,
        request_json=json.dumps(call.request, indent=2, ensure_ascii=False),
        response_json=json.dumps(call.response, indent=2, ensure_ascii=False),
    )

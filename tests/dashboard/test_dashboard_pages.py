"""The dashboard's pages and its small API, through the gateway app."""

from __future__ import annotations

import json
from datetime import timedelta

from dashboard_support import N_CALLS
from fastapi.testclient import TestClient

from understudy.dashboard.formatting import served_graph
from understudy.dashboard.sample import SeededCall, seed_traffic
from understudy.gateway import create_app
from understudy.routing.modes import Mode
from understudy.savings import task_savings
from understudy.settings import Settings
from understudy.store import Store, switch
from understudy.store import tables as t
from understudy.store.worker_lock import WorkerLock
from understudy.tasks import Head, Task, TaskSpec
from understudy.worker import Worker


def test_tasks_and_task_pages_render_the_seeded_task(client: TestClient, store: Store) -> None:
    tasks = client.get("/ui/tasks")
    assert tasks.status_code == 200
    assert 'href="/ui/tasks/sentiment"' in tasks.text and "ready" in tasks.text
    page = client.get("/ui/tasks/sentiment")
    assert page.status_code == 200
    assert page.text.count("<svg") == 4  # volume, agreement/coverage, latency, coverage curve
    assert "threshold 0.80" in page.text  # the chosen point on the curve
    assert "gold ↓ / predicted →" in page.text
    # The live agreement the switch policy judges the shadow task by: the serving student's
    # predictions since the last mode change, beside the 7-day agreement on compared calls.
    comparisons, agreements = switch.policy_live_agreement(
        store, store.task_state("sentiment"), Settings().live_window
    )
    assert comparisons > 0
    assert f"{agreements:,}/{comparisons:,} predictions agree" in page.text
    assert client.get("/ui/tasks/sentiment?range=7d").status_code == 200
    assert client.get("/ui/tasks/sentiment?range=1y").status_code == 400
    missing = client.get("/ui/tasks/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_task"


def test_the_tasks_page_warns_when_no_worker_is_running(client: TestClient, store: Store) -> None:
    assert "No worker is running against this database" in client.get("/ui/tasks").text
    worker = WorkerLock(store.engine)
    assert worker.acquire()
    try:
        assert "No worker is running" not in client.get("/ui/tasks").text
    finally:
        worker.release()


def test_mode_change_needs_confirmation_and_is_audited(client: TestClient, store: Store) -> None:
    form = {"mode": "cascade", "reason": "agreement holds"}
    first = client.post("/ui/tasks/sentiment/mode", data=form)
    assert first.status_code == 200 and "mode shadow → cascade" in first.text
    assert store.task_state("sentiment").mode is Mode.SHADOW
    done = client.post(
        "/ui/tasks/sentiment/mode", data={**form, "confirm": "yes"}, follow_redirects=False
    )
    assert done.status_code == 303
    assert store.task_state("sentiment").mode is Mode.CASCADE
    event = store.events("sentiment", limit=1)[0]
    assert (event.kind, event.from_mode, event.to_mode) == ("mode", "shadow", "cascade")
    assert event.reason == "agreement holds (dashboard)"
    assert "mode changed to cascade" in client.get(done.headers["location"]).text
    assert client.post("/ui/tasks/sentiment/mode", data={"mode": "cascade"}).status_code == 400


def test_threshold_change(client: TestClient, store: Store) -> None:
    form = {"threshold": "0.9", "reason": "tighter", "confirm": "yes"}
    assert client.post("/ui/tasks/sentiment/threshold", data=form).status_code == 200
    assert store.task_state("sentiment").threshold == 0.9
    assert store.events("sentiment", limit=1)[0].evidence == {"threshold": 0.9}
    bad = client.post("/ui/tasks/sentiment/threshold", data={**form, "threshold": "2"})
    assert bad.status_code == 400
    cleared = client.post("/ui/tasks/sentiment/threshold", data={**form, "threshold": ""})
    assert cleared.status_code == 200 and store.task_state("sentiment").threshold is None
    page = client.get("/ui/tasks/sentiment").text
    assert "(the cascade answers nothing)" in page
    # The audit log lists each change readably: the set threshold, then the cleared one.
    assert "threshold 0.900" in page and "threshold none" in page


def test_target_and_audit_rate_change(client: TestClient, store: Store) -> None:
    form = {"target_agreement": "0.95", "audit_rate": "", "reason": "noisy labels"}
    first = client.post("/ui/tasks/sentiment/knobs", data=form)
    assert first.status_code == 200
    assert "target agreement 0.98 (default) → 0.95" in first.text  # to confirm
    assert "audit rate" not in first.text  # unchanged: not part of the change
    assert store.task_state("sentiment").target_agreement is None
    done = client.post("/ui/tasks/sentiment/knobs", data={**form, "confirm": "yes"})
    assert done.status_code == 200  # followed to the task page
    state = store.task_state("sentiment")
    assert (state.target_agreement, state.audit_rate) == (0.95, None)
    assert "target agreement 0.95 · audit rate 0.05 (default)" in done.text
    event = store.events("sentiment", limit=1)[0]
    assert event.reason == "noisy labels (dashboard)"
    assert event.evidence == {"target_agreement": 0.95}
    unchanged = {"target_agreement": "0.95", "audit_rate": "", "reason": "again"}
    assert client.post("/ui/tasks/sentiment/knobs", data=unchanged).status_code == 400
    for bad in ({"target_agreement": "0.4"}, {"audit_rate": "-1"}, {"reason": ""}):
        refused = client.post("/ui/tasks/sentiment/knobs", data={**form, **bad, "confirm": "yes"})
        assert refused.status_code == 400, bad
    assert store.task_state("sentiment").target_agreement == 0.95
    client.post(
        "/ui/tasks/sentiment/knobs",
        data={"target_agreement": "", "audit_rate": "", "reason": "back", "confirm": "yes"},
    )
    page = client.get("/ui/tasks/sentiment").text
    assert "<td>target_agreement default</td>" in page  # the audit log's entry


def test_review_api_and_feedback_round_trip(
    client: TestClient, store: Store, seeded: list[SeededCall]
) -> None:
    page = client.get("/ui/tasks/sentiment/review?disagreement=true")
    assert page.status_code == 200 and 'id="review"' in page.text
    items = client.get("/ui/api/tasks/sentiment/review", params={"limit": 3}).json()["items"]
    assert len(items) == 3 and items[0]["reason"] == "disagreement"
    first = items[0]["call_id"]
    saved = client.post(
        "/v1/feedback", json={"request_id": first, "labels": {"sentiment": "neutral"}}
    )
    assert saved.status_code == 200
    after = client.get("/ui/api/tasks/sentiment/review", params={"limit": 3}).json()["items"]
    assert first not in {i["call_id"] for i in after}
    undone = client.post(f"/ui/api/labels/{first}/undo").json()
    assert undone == {"request_id": first, "removed": {"sentiment": "neutral"}}
    skipped = client.get(
        "/ui/api/tasks/sentiment/review", params={"limit": 3, "exclude": first}
    ).json()["items"]
    assert first not in {i["call_id"] for i in skipped}
    assert client.get("/ui/api/tasks/sentiment/review?label=oops").status_code == 400


def test_export_calls_browser_and_call_page(
    client: TestClient, store: Store, seeded: list[SeededCall]
) -> None:
    export = client.get("/ui/tasks/sentiment/export.jsonl")
    assert export.status_code == 200
    assert len(export.text.splitlines()) == store.count_labelled("sentiment")
    assert json.loads(export.text.splitlines()[0])["source"] == "teacher"
    assert client.get("/ui/tasks/sentiment/export.csv").text.startswith("text,sentiment,")
    assert client.get("/ui/tasks/sentiment/export.xml").status_code == 400
    calls = client.get("/ui/calls", params={"side": "student", "task": "sentiment"})
    assert calls.status_code == 200
    shown = calls.text.count('href="/ui/calls/us-')
    assert shown == min(50, sum(c.answered_by == "student" for c in seeded))
    assert "Older →" in calls.text
    call = seeded[0]
    detail = client.get(f"/ui/calls/{call.id}")
    assert detail.status_code == 200 and call.text in detail.text
    assert client.get("/ui/calls/us-missing").status_code == 404
    assert client.get("/ui/static/review.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/ui/static/..%2Fviews.py").status_code == 404


def test_pages_show_the_teacher_cost_avoided(settings: Settings, store: Store, task: Task) -> None:
    seed_traffic(store, task, N_CALLS, seed=4, end=t.utcnow(), span=timedelta(days=2))
    priced = settings.model_copy(update={"model_prices": {"teacher-model": [2.5, 10.0]}})
    expected = task_savings(store, "sentiment", priced.model_prices).avoided_cost_usd
    assert expected is not None and expected > 0
    shown = f"${expected:,.2f}" if expected >= 1 else f"${expected:.4f}"
    with TestClient(create_app(priced, store)) as client:
        assert shown in client.get("/ui/tasks").text
        assert shown in client.get("/ui/tasks/sentiment").text
    with TestClient(create_app(settings, store)) as unpriced:  # no price: no dollar figure
        assert "$" not in unpriced.get("/ui/tasks").text


def test_worker_blocks_show_with_their_reason(settings: Settings, store: Store) -> None:
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}, "why": {"type": "string"}},
        "required": ["ok", "why"],
    }
    task = store.register_task(
        TaskSpec("explain", schema, (Head("ok", ("false", "true")),), ("why",), ("why",))
    )
    (action,) = Worker(settings, store).run_once()
    assert action.what == "blocked" and "why" in action.detail
    badge = f"worker: {action.detail}"
    with TestClient(create_app(settings, store)) as client:
        assert badge in client.get("/ui/tasks").text
        assert badge in client.get("/ui/tasks/explain").text
        # A training run that starts later shows the worker got past the block.
        store.start_student_run(task, "ngram")
        assert "worker:" not in client.get("/ui/tasks").text


def test_the_student_history_says_which_graph_each_run_serves(
    client: TestClient, store: Store
) -> None:
    task = store.get_task("sentiment")
    runs = {
        "blockwise": {
            "agreement": 0.9,
            "int8_scheme": "blockwise",
            "int8_agreement_with_fp32": 0.995,
        },
        "fp32": {"agreement": 0.9, "int8_scheme": None, "int8_agreement_with_fp32": 0.97},
    }
    for metrics in runs.values():
        store.finish_student_run(
            store.start_student_run(task, "finetune"), "rejected", metrics=metrics
        )
    page = client.get("/ui/tasks/sentiment").text
    history = page[page.index("Student history") : page.index("Audit log")]
    # The seeded n-gram run, then the two fine-tuned ones: the int8 scheme kept, or fp32.
    assert "<td>scikit-learn</td>" in history
    assert "<td>int8 blockwise</td>" in history and "<td>fp32</td>" in history
    # Runs that did not record it: before the scheme was recorded, failed, or served by torch.
    assert served_graph("finetune", {"int8_agreement_with_fp32": 0.995}) == "–"
    assert served_graph("probe", {"error": "out of memory"}) == "–"
    assert served_graph("distill", None) == "–"


def test_the_student_history_says_why_a_run_did_not_finish(
    client: TestClient, store: Store
) -> None:
    store.start_student_run(store.get_task("sentiment"), "finetune", train_size=900)
    switch.interrupt_running_runs(store)
    page = client.get("/ui/tasks/sentiment").text
    history = page[page.index("Student history") : page.index("Audit log")]
    assert "interrupted" in history and "killed, crashed or out of memory" in history

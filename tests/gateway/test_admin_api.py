"""``/admin/tasks``: tasks' routing state as JSON and manual changes to it, with reasons."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from understudy.gateway import create_app
from understudy.routing.modes import Mode
from understudy.settings import Settings
from understudy.store import Store, open_store
from understudy.tasks import detect_task
from worker_support import REQUEST


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(Settings(data_dir=tmp_path))
    spec = detect_task(REQUEST)
    assert spec is not None
    opened.register_task(spec)
    yield opened
    opened.close()


@pytest.fixture()
def http(tmp_path: Path, store: Store) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(data_dir=tmp_path), store)) as client:
        yield client


def test_tasks_are_listed_with_the_values_in_force(http: TestClient) -> None:
    listed = http.get("/admin/tasks")
    assert listed.status_code == 200
    assert listed.json() == [
        {
            "task": "review",
            "version": 1,
            "mode": "shadow",
            "threshold": None,
            "target_agreement": 0.98,
            "target_agreement_is_default": True,
            "audit_rate": 0.05,
            "audit_rate_is_default": True,
            "serving_version": None,
        }
    ]
    assert http.get("/admin/tasks/review").json() == listed.json()[0]
    missing = http.get("/admin/tasks/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_task"


def test_a_change_applies_and_is_recorded_with_its_reason(http: TestClient, store: Store) -> None:
    change = {"reason": "checked by hand", "mode": "cascade", "threshold": 0.9, "audit_rate": 0.2}
    changed = http.patch("/admin/tasks/review", json=change)
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["mode"], body["threshold"], body["audit_rate"]) == ("cascade", 0.9, 0.2)
    assert body["audit_rate_is_default"] is False and body["target_agreement_is_default"] is True
    state = store.task_state("review")
    assert (state.mode, state.threshold, state.audit_rate) == (Mode.CASCADE, 0.9, 0.2)
    events = store.events("review", limit=2)
    assert [e.kind for e in events] == ["mode", "state"]
    assert {e.reason for e in events} == {"checked by hand (api)"}
    assert events[1].evidence == {"threshold": 0.9, "audit_rate": 0.2}

    # null puts a target or rate back to the settings' (and clears the threshold).
    reset = http.patch("/admin/tasks/review", json={"reason": "back", "audit_rate": None})
    assert reset.json()["audit_rate"] == 0.05 and reset.json()["audit_rate_is_default"] is True
    assert reset.json()["threshold"] == 0.9  # untouched: not in the change


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"mode": "cascade"}, "reason"),
        ({"reason": "  ", "mode": "cascade"}, "reason"),
        ({"reason": "x"}, None),
        ({"reason": "x", "target_agreement": 1.0}, "target_agreement"),
        ({"reason": "x", "audit_rate": -0.1}, "audit_rate"),
        ({"reason": "x", "threshold": 2}, "threshold"),
        ({"reason": "x", "mode": "sideways"}, "mode"),
        ({"reason": "x", "mode": None}, "mode"),
        ({"reason": "x", "treshold": 0.5}, "treshold"),
    ],
)
def test_bad_changes_are_refused_and_change_nothing(
    http: TestClient, store: Store, change: dict[str, object], param: str | None
) -> None:
    refused = http.patch("/admin/tasks/review", json=change)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert [e.kind for e in store.events("review")] == ["task_registered"]

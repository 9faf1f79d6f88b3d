"""An older task version (callers on an old schema) still answering is shown beside the newest,
and can be moved and tuned on its own by the CLI and the admin API; the newest version stays the
default."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from understudy.cli import app
from understudy.gateway import create_app
from understudy.routing.modes import Mode
from understudy.settings import Settings
from understudy.store import Store, open_store
from worker_support import register_changed_review_task, register_review_task


@pytest.fixture()
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    monkeypatch.setenv("UNDERSTUDY_DATA_DIR", str(tmp_path))
    opened = open_store(Settings(data_dir=tmp_path))
    register_review_task(opened)
    register_changed_review_task(opened)
    opened.set_mode("review", Mode.CASCADE, "promoted", version=1)
    yield opened
    opened.close()


def modes(store: Store) -> tuple[Mode, Mode]:
    return store.task_state("review", 1).mode, store.task_state("review", 2).mode


def test_the_cli_moves_the_version_it_is_given(store: Store) -> None:
    runner = CliRunner()
    moved = runner.invoke(app, ["mode", "review", "teacher", "--version", "1"])
    assert moved.exit_code == 0, moved.output
    assert "review (version 1): cascade → teacher" in moved.output
    assert modes(store) == (Mode.TEACHER, Mode.SHADOW)

    newest = runner.invoke(app, ["mode", "review", "teacher"])
    assert "review (version 2): shadow → teacher" in newest.output
    assert modes(store) == (Mode.TEACHER, Mode.TEACHER)

    missing = runner.invoke(app, ["mode", "review", "shadow", "--version", "3"])
    assert missing.exit_code == 1 and "no task 'review' version 3" in missing.output

    tuned = runner.invoke(app, ["tune", "review", "--audit-rate", "0.5", "--version", "1"])
    assert tuned.exit_code == 0, tuned.output
    assert "review (version 1): target agreement 0.98 (default), audit rate 0.5" in tuned.output
    assert store.task_state("review", 1).audit_rate == 0.5
    assert store.task_state("review", 2).audit_rate is None


def test_the_admin_api_reads_and_changes_the_version_it_is_given(
    tmp_path: Path, store: Store
) -> None:
    with TestClient(create_app(Settings(data_dir=tmp_path), store)) as http:
        assert http.get("/admin/tasks/review").json()["version"] == 2
        old = http.get("/admin/tasks/review", params={"version": 1}).json()
        assert (old["version"], old["mode"]) == (1, "cascade")

        change = {"reason": "old clients retired", "mode": "teacher", "audit_rate": 0.5}
        changed = http.patch("/admin/tasks/review", params={"version": 1}, json=change)
        assert changed.status_code == 200, changed.text
        assert (changed.json()["version"], changed.json()["mode"]) == (1, "teacher")
        assert modes(store) == (Mode.TEACHER, Mode.SHADOW)
        assert store.task_state("review", 1).audit_rate == 0.5
        assert store.task_state("review", 2).audit_rate is None

        missing = http.get("/admin/tasks/review", params={"version": 3})
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "unknown_task"
        bad = http.get("/admin/tasks/review", params={"version": "one"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "version"


def test_the_task_views_show_an_older_version_still_answering(tmp_path: Path, store: Store) -> None:
    shown = CliRunner().invoke(app, ["task", "review"])
    assert shown.exit_code == 0, shown.output
    assert "version 1 (cascade, student none)" in shown.output
    with TestClient(create_app(Settings(data_dir=tmp_path), store)) as http:
        page = http.get("/ui/tasks/review")
        assert page.status_code == 200
        assert "still answered by its own student: version 1 (cascade, student none)" in page.text

    store.set_mode("review", Mode.TEACHER, "old clients retired", version=1)
    shown = CliRunner().invoke(app, ["task", "review"])
    assert "older schemas answered" not in shown.output
    # Events (and runs) say which schema they concern.
    assert re.search(r"│ 1\s+│ mode\s+│ cascade →", shown.output), shown.output
    with TestClient(create_app(Settings(data_dir=tmp_path), store)) as http:
        page = http.get("/ui/tasks/review").text
        assert re.search(r"<td>1</td><td>mode</td>\s*<td>cascade → teacher</td>", page)

"""The operator commands: ``understudy tasks / task / mode / review / export``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dashboard_support import seed_history
from typer.testing import CliRunner

from understudy.cli import app
from understudy.dashboard.sample import SeededCall
from understudy.routing.modes import Mode
from understudy.settings import Settings
from understudy.store import Store, switch
from understudy.store import queries as q
from understudy.store import tables as t
from understudy.store.worker_lock import WorkerLock
from understudy.tasks import Task

runner = CliRunner()


@pytest.fixture(autouse=True)
def _data_dir(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNDERSTUDY_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("UNDERSTUDY_CONFIG", str(settings.data_dir / "absent.toml"))
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture()
def seeded(store: Store, task: Task) -> list[SeededCall]:
    """The conftest's history, but ending now: the commands read the real clock, and their rates
    cover the last 7 days, so a history fixed in time would fall out of them."""
    return seed_history(store, task, end=None)


def test_tasks_and_task(seeded: list[SeededCall]) -> None:
    listed = runner.invoke(app, ["tasks"])
    assert listed.exit_code == 0, listed.output
    assert "sentiment v1" in listed.output and "shadow" in listed.output
    assert "No worker is running against this database" in listed.output
    shown = runner.invoke(app, ["task", "sentiment"])
    assert shown.exit_code == 0, shown.output
    assert "serving student" in shown.output and "promoted" in shown.output
    assert "scikit-learn" in shown.output  # the graph the seeded n-gram student answers with
    assert "predictions agree" in shown.output  # the policy's live evidence in shadow mode
    # With a price for the seeded teacher model, both show the teacher cost avoided in dollars.
    priced = {"UNDERSTUDY_MODEL_PRICES": '{"teacher-model": [100.0, 400.0]}'}
    for command in (["tasks"], ["task", "sentiment"]):
        result = runner.invoke(app, command, env=priced)
        assert result.exit_code == 0 and "$" in result.output, result.output
    assert "$" not in runner.invoke(app, ["task", "sentiment"]).output  # no price: no figure
    missing = runner.invoke(app, ["task", "nope"])
    assert missing.exit_code == 1 and "no task 'nope'" in missing.output


def test_task_says_why_a_run_did_not_finish(store: Store, seeded: list[SeededCall]) -> None:
    task = store.get_task("sentiment")
    store.start_student_run(task, "finetune", train_size=900)
    switch.interrupt_running_runs(store)
    failed = store.start_student_run(task, "probe")
    store.finish_student_run(failed, "failed", metrics={"error": "bad [/bold] shape [3, 4]"})
    result = runner.invoke(app, ["task", "sentiment"])
    assert result.exit_code == 0, result.output
    shown = " ".join(result.output.split())
    assert "interrupted" in shown and "out of memory" in shown
    assert "bad [/bold] shape [3, 4]" in shown  # printed as is, not read as markup


def test_tasks_says_nothing_of_the_worker_while_one_runs(
    store: Store, seeded: list[SeededCall]
) -> None:
    worker = WorkerLock(store.engine)
    assert worker.acquire()
    try:
        assert "No worker" not in runner.invoke(app, ["tasks"]).output
    finally:
        worker.release()


def test_mode_is_recorded_with_its_reason(store: Store, seeded: list[SeededCall]) -> None:
    result = runner.invoke(app, ["mode", "sentiment", "cascade", "--reason", "checked by hand"])
    assert result.exit_code == 0, result.output
    assert "shadow → cascade" in result.output
    assert store.task_state("sentiment").mode is Mode.CASCADE
    assert store.events("sentiment", limit=1)[0].reason == "checked by hand (cli)"
    # From the move on, the policy judges the task by audited student answers: none yet.
    shown = runner.invoke(app, ["task", "sentiment"]).output
    assert "no audited student answers compared since the last mode change" in shown
    assert runner.invoke(app, ["mode", "sentiment", "robot"]).exit_code == 2


def test_review_labels_skips_and_undoes(store: Store, seeded: list[SeededCall]) -> None:
    first, second, third = (i.call_id for i in q.review_queue(store, "sentiment", limit=3))
    result = runner.invoke(
        app, ["review", "sentiment", "--author", "ana"], input="1\ns\n2\nu\n9\n3\nq\n"
    )
    assert result.exit_code == 0, result.output
    assert "labelled 2, skipped 1, undid 1" in result.output
    assert "type 1–3, s, u or q" in result.output  # "9" was refused
    human = {e.call_id: e.labels for e in store.examples("sentiment") if e.source.value == "human"}
    assert human == {first: {"sentiment": "positive"}, third: {"sentiment": "neutral"}}
    assert second not in human


def test_text_from_callers_and_people_is_printed_as_is(
    store: Store, seeded: list[SeededCall]
) -> None:
    """Caller texts, reasons and labels with brackets are text, not rich markup: "[/x]" once
    crashed these commands, and the review menu's "[s] skip" lost its "[s]"."""
    first = q.review_queue(store, "sentiment", limit=1)[0].call_id
    with store.engine.begin() as conn:
        conn.execute(
            t.calls.update().where(t.calls.c.id == first).values(input_text="a [/x] [red]film")
        )
    reviewed = runner.invoke(app, ["review", "sentiment"], input="q\n")
    assert reviewed.exit_code == 0, reviewed.output
    assert "a [/x] [red]film" in reviewed.output
    assert "[1] positive" in reviewed.output and "[s] skip  [u] undo  [q] quit" in reviewed.output
    moved = runner.invoke(app, ["mode", "sentiment", "cascade", "--reason", "ok [/bold] [urgent]"])
    assert moved.exit_code == 0, moved.output
    shown = runner.invoke(app, ["task", "sentiment"])
    assert shown.exit_code == 0, shown.output
    assert "ok [/bold] [urgent] (cli)" in " ".join(shown.output.split())


def test_export_to_a_file_and_stdout(
    tmp_path: Path, store: Store, seeded: list[SeededCall]
) -> None:
    out = tmp_path / "labels.csv"
    result = runner.invoke(app, ["export", "sentiment", "--format", "csv", "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert lines[0] == "text,sentiment,source,call_id"
    assert len(lines) == store.count_labelled("sentiment") + 1
    jsonl = runner.invoke(app, ["export", "sentiment"])
    records = [json.loads(line) for line in jsonl.output.splitlines()]
    assert len(records) == len(lines) - 1 and set(records[0]) == {
        "text",
        "labels",
        "source",
        "call_id",
    }
    assert runner.invoke(app, ["export", "sentiment", "--format", "xml"]).exit_code == 2


def test_tune_sets_a_tasks_own_target_and_audit_rate(
    store: Store, seeded: list[SeededCall]
) -> None:
    result = runner.invoke(
        app, ["tune", "sentiment", "--target-agreement", "0.95", "--reason", "noisy labels"]
    )
    assert result.exit_code == 0, result.output
    assert "target agreement 0.95, audit rate 0.05 (default)" in result.output
    state = store.task_state("sentiment")
    assert (state.target_agreement, state.audit_rate) == (0.95, None)
    event = store.events("sentiment", limit=1)[0]
    assert event.reason == "noisy labels (cli)" and event.evidence == {"target_agreement": 0.95}
    shown = runner.invoke(app, ["task", "sentiment"]).output
    assert "0.95" in shown and "0.05 (default)" in shown

    cleared = runner.invoke(
        app, ["tune", "sentiment", "--target-agreement", "default", "--audit-rate", "0.2"]
    )
    assert cleared.exit_code == 0, cleared.output
    state = store.task_state("sentiment")
    assert (state.target_agreement, state.audit_rate) == (None, 0.2)

    for option, value in (("target-agreement", "1"), ("audit-rate", "1.5"), ("audit-rate", "x")):
        refused = runner.invoke(app, ["tune", "sentiment", f"--{option}", value])
        assert refused.exit_code == 1 and option.replace("-", "_") in refused.output
    assert runner.invoke(app, ["tune", "sentiment"]).exit_code == 2
    assert store.task_state("sentiment").audit_rate == 0.2  # refusals changed nothing

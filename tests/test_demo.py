"""``understudy demo`` end to end on a short stream: a real `understudy serve` child process
(with its worker), the real openai client, the shipped fake teacher and the trec6 dataset."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from understudy.cli import app
from understudy.settings import Settings
from understudy.store import open_store


def test_a_short_demo_replays_every_call_and_reports(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["demo", "--calls", "300", "--teacher-latency-ms", "0", "--data-dir", str(tmp_path)],
        env={"COLUMNS": "120"},
    )
    assert result.exit_code == 0, result.output
    assert "what happened" in result.output
    assert "calls (errors)" in result.output and "300 (0)" in result.output
    store = open_store(Settings(data_dir=tmp_path))
    [row] = store.list_tasks()
    assert row.task.key == "question_type" and row.calls == 300
    # Too few calls for a student: the teacher answered (and labelled) every one.
    assert row.labelled == 300
    assert {call.answered_by for call in store.recent_calls("question_type", limit=300)} == {
        "teacher"
    }

"""``understudy train`` and ``eval`` hold a task to its own target agreement, as the worker does."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from understudy.cli import app
from understudy.settings import Settings
from understudy.store import open_store
from understudy.tasks import detect_task
from worker_support import REQUEST, log_teacher_calls


def test_train_and_eval_use_the_tasks_own_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UNDERSTUDY_DATA_DIR", str(tmp_path))
    store = open_store(Settings(data_dir=tmp_path))
    spec = detect_task(REQUEST)
    assert spec is not None
    log_teacher_calls(store, store.register_task(spec), 300, seed=8)
    runner = CliRunner()
    tuned = runner.invoke(app, ["tune", "review", "--target-agreement", "0.9"])
    assert tuned.exit_code == 0, tuned.output

    trained = runner.invoke(app, ["train", "review", "--student", "ngram"])
    assert trained.exit_code == 0, trained.output
    assert "target 90.0%" in trained.output
    evaluated = runner.invoke(app, ["eval", "review"])
    assert evaluated.exit_code == 0, evaluated.output
    assert "target 90.0%" in evaluated.output
    # An explicit --target still wins.
    explicit = runner.invoke(app, ["eval", "review", "--target", "0.95"])
    assert explicit.exit_code == 0, explicit.output
    assert "95.0%" in explicit.output and "90.0%" not in explicit.output

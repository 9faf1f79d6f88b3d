"""``understudy import`` through the CLI, and the settings commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from understudy.cli import app
from understudy.settings import Settings
from understudy.store import open_store
from understudy.tasks import LabelSource

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"topic": {"type": "string", "enum": ["sport", "tech"]}},
    "required": ["topic"],
}


def _pair(text: str, topic: str) -> dict[str, Any]:
    request = {
        "model": "gpt-x",
        "messages": [{"role": "user", "content": text}],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "topics", "schema": SCHEMA},
        },
    }
    response = {
        "model": "gpt-x-2024",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": json.dumps({"topic": topic})}}
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 4},
    }
    return {"request": request, "response": response}


@pytest.fixture()
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("UNDERSTUDY_DATA_DIR", str(tmp_path / "data"))
    return Settings()


def _write(path: Path, rows: list[Any]) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_import_pairs_and_simple_rows(env: Settings, tmp_path: Path) -> None:
    rows = [
        _pair("the match went to extra time", "sport"),
        _pair("a new phone chip", "tech"),
        {"task": "sentiment", "text": "loved it", "label": "positive"},
        {"task": "sentiment", "text": "hated it", "label": "negative"},
        "{broken",
        {"task": "sentiment", "text": "meh"},
    ]
    path = _write(tmp_path / "logs.jsonl", rows)
    result = CliRunner().invoke(app, ["import", str(path)])
    assert result.exit_code == 1, result.output  # two lines were rejected
    assert "imported 4 rows" in result.output and "line 5" in result.output

    store = open_store(env)
    topics = store.examples("topics")
    assert sorted((e.text, e.labels["topic"]) for e in topics) == [
        ("a new phone chip", "tech"),
        ("the match went to extra time", "sport"),
    ]
    assert {e.source for e in topics} == {LabelSource.IMPORT}
    sentiment = store.get_task("sentiment")
    assert [(h.name, h.labels) for h in sentiment.heads] == [("label", ("negative", "positive"))]
    assert {e.text: e.labels for e in store.examples("sentiment")} == {
        "loved it": {"label": "positive"},
        "hated it": {"label": "negative"},
    }

    again = CliRunner().invoke(app, ["import", str(path)])
    assert "imported 0 rows (4 already present" in again.output
    assert store.count_labelled("topics") == 2


def test_simple_rows_into_an_existing_task_are_validated(env: Settings, tmp_path: Path) -> None:
    first = _write(tmp_path / "a.jsonl", [_pair("goal!", "sport")])
    assert CliRunner().invoke(app, ["import", str(first)]).exit_code == 0
    second = _write(
        tmp_path / "b.jsonl",
        [{"text": "new laptop", "label": "tech"}, {"text": "cooking", "label": "food"}],
    )
    result = CliRunner().invoke(app, ["import", str(second), "--task", "topics"])
    assert result.exit_code == 1 and "do not fit task 'topics'" in result.output
    assert sorted(e.text for e in open_store(env).examples("topics")) == ["goal!", "new laptop"]


def test_settings_command_masks_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNDERSTUDY_UPSTREAM_API_KEY", "sk-very-secret")
    result = CliRunner().invoke(app, ["settings"])
    assert result.exit_code == 0
    assert "UNDERSTUDY_UPSTREAM_API_KEY" in result.output
    assert "sk-very-secret" not in result.output


def test_settings_command_prints_values_as_text(monkeypatch: pytest.MonkeyPatch) -> None:
    # A regex's brackets once read as rich markup: "[/x]" crashed the command.
    monkeypatch.setenv("UNDERSTUDY_REDACT_PATTERNS", '{"ids": "id-[a-z]+[/x]"}')
    monkeypatch.setenv("COLUMNS", "200")
    result = CliRunner().invoke(app, ["settings"])
    assert result.exit_code == 0, result.output
    assert "id-[a-z]+[/x]" in result.output

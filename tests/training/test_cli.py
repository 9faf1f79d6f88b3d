"""``understudy train / eval / predict`` with a JSONL file, through the typer app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from understudy.cli import app
from understudy.tasks import Example


@pytest.fixture
def data_file(tmp_path: Path, train_examples: list[Example]) -> Path:
    path = tmp_path / "tickets.jsonl"
    rows = [json.dumps({"text": e.text, "labels": e.labels}) for e in train_examples]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_train_eval_predict_an_ngram_student_from_a_file(
    tmp_path: Path, data_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UNDERSTUDY_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()

    trained = runner.invoke(
        app, ["train", "tickets", "--student", "ngram", "--data", str(data_file)]
    )
    assert trained.exit_code == 0, trained.output
    assert "published tickets v1" in trained.output
    metrics = json.loads((tmp_path / "data/models/tickets/v1/metrics.json").read_text())
    assert metrics["heldout"]["heads"]["topic"]["accuracy"] >= 0.9  # file rows count as gold
    assert "calibration" in metrics

    evaluated = runner.invoke(app, ["eval", "tickets", "--data", str(data_file)])
    assert evaluated.exit_code == 0, evaluated.output
    assert "all heads" in evaluated.output and "threshold" in evaluated.output

    predicted = runner.invoke(app, ["predict", "tickets", "my refund is late asap"])
    assert predicted.exit_code == 0, predicted.output
    assert "urgent" in predicted.output and "true" in predicted.output


def test_train_rejects_an_option_the_student_kind_does_not_have(
    tmp_path: Path, data_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UNDERSTUDY_DATA_DIR", str(tmp_path / "data"))
    result = CliRunner().invoke(
        app, ["train", "tickets", "--data", str(data_file), "--encoder", str(tmp_path)]
    )
    assert result.exit_code == 1
    assert "no option encoder_dir" in result.output
    assert not (tmp_path / "data/models/tickets/v1").exists()


def test_predict_without_a_student_says_how_to_train_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UNDERSTUDY_DATA_DIR", str(tmp_path / "data"))
    result = CliRunner().invoke(app, ["predict", "nothing", "hello"])
    assert result.exit_code == 1
    assert "understudy train nothing" in result.output

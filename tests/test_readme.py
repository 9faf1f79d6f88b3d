"""The README's settings table is the one ``understudy settings --markdown`` generates."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from understudy.cli import app
from understudy.settings import Settings
from understudy.settings_doc import README_BEGIN, README_END

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_settings_table_is_current() -> None:
    generated = CliRunner().invoke(app, ["settings", "--markdown"]).output.strip()
    text = README.read_text(encoding="utf-8")
    embedded = text.split(README_BEGIN, 1)[1].split(README_END, 1)[0].strip()
    assert embedded == generated, "run `understudy settings --markdown` and paste it into README.md"
    for name in Settings.model_fields:
        assert f"`UNDERSTUDY_{name.upper()}`" in embedded

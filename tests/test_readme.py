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
    assert embedded == generated, "run `understudy settings --write README.md`"
    for name in Settings.model_fields:
        assert f"`UNDERSTUDY_{name.upper()}`" in embedded


def test_settings_write_rewrites_only_the_table(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(f"intro\n{README_BEGIN}\nstale\n{README_END}\noutro\n")
    result = CliRunner().invoke(app, ["settings", "--write", str(doc)])
    assert result.exit_code == 0
    text = doc.read_text()
    assert text.startswith(f"intro\n{README_BEGIN}\n| Variable |") and text.endswith(
        f"{README_END}\noutro\n"
    )
    assert "stale" not in text
    (tmp_path / "plain.md").write_text("no markers")
    assert (
        CliRunner().invoke(app, ["settings", "--write", str(tmp_path / "plain.md")]).exit_code == 2
    )

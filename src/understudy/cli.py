"""The ``understudy`` command line: thin commands that call the library and print with rich."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="understudy",
    help="Shadow your LLM classifier, train a small student on its answers, switch when good.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def main() -> None:
    """understudy: an OpenAI-compatible gateway that trains and serves students."""


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Interface to bind (default: setting `host`).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: setting `port`).")] = None,
) -> None:
    """Start the gateway: point the openai client's base_url at http://HOST:PORT/v1."""
    import uvicorn

    from understudy.gateway import create_app
    from understudy.settings import Settings

    settings = Settings()
    uvicorn.run(
        create_app(settings),
        host=host or settings.host,
        port=port or settings.port,
        log_level=settings.log_level,
    )


@app.command("import")
def import_logs(
    file: Annotated[Path, typer.Argument(help="JSONL: {request, response} or {task, text, label}")],
    task: Annotated[str | None, typer.Option(help="Import every row into this task key.")] = None,
) -> None:
    """Load existing logs so a task can start from history; exits 1 if any line was rejected."""
    from rich.console import Console

    from understudy.importer import import_jsonl
    from understudy.store import open_store

    console = Console()
    report = import_jsonl(open_store(), file, task)
    tasks = ", ".join(sorted(report.tasks)) or "none"
    console.print(
        f"imported {report.imported} rows ({report.duplicates} already present, "
        f"{len(report.errors)} rejected) into tasks: {tasks}"
    )
    for error in report.errors[:20]:
        console.print(f"  [red]{error}[/red]")
    if report.errors:
        raise typer.Exit(1)


@app.command("settings")
def show_settings(
    markdown: Annotated[
        bool, typer.Option(help="Print the reference table of every setting (README format).")
    ] = False,
) -> None:
    """Show the settings in effect (secrets masked), or document them all as Markdown."""
    from rich.console import Console
    from rich.table import Table

    from understudy.settings import Settings
    from understudy.settings_doc import settings_markdown

    if markdown:
        typer.echo(settings_markdown())
        return
    table = Table("setting", "value")
    for name, value in Settings().model_dump().items():
        table.add_row(
            f"UNDERSTUDY_{name.upper()}", "****" if "api_key" in name and value else str(value)
        )
    Console().print(table)

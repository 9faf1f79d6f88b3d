"""The ``understudy`` command line: thin commands that call the library and print with rich."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="understudy",
    help="Shadow your LLM classifier, train a small student on its answers, switch when it is good.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def main() -> None:
    """understudy: an OpenAI-compatible gateway that trains and serves students."""

"""The ``understudy`` command line: thin commands that call the library and print with rich."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, cast

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


@app.command()
def pretrain(
    out: Annotated[Path, typer.Option(help="Directory to write the pretrained encoder into.")],
    dataset: Annotated[
        list[str] | None,
        typer.Option(help="Offline dataset whose training texts join the corpus (repeatable)."),
    ] = None,
    task: Annotated[
        str | None, typer.Option(help="Task key whose logged inputs join the corpus.")
    ] = None,
    text_file: Annotated[
        Path | None, typer.Option(help="UTF-8 file with one text per line to add to the corpus.")
    ] = None,
    hidden_size: int = 128,
    layers: int = 2,
    heads: int = 2,
    intermediate_size: int = 512,
    feedforward: Annotated[str, typer.Option(help="dense | fff")] = "dense",
    token_mixer: Annotated[str, typer.Option(help="attention | fourier")] = "attention",
    fff_depth: Annotated[int | None, typer.Option(help="FFF tree depth (default: auto)")] = None,
    fff_leaf_width: int = 1,
    vocab_size: int = 8192,
    seq_len: int = 64,
    batch_size: int = 32,
    accumulation: int = 2,
    steps: int = 300,
    learning_rate: float = 1e-3,
    checkpoint_every: int = 100,
    seed: int = 0,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
) -> None:
    """Crammed MLM pretraining of a small BERT on offline text (datasets, a task's inputs)."""
    from rich.console import Console

    from understudy.datasets import DATASET_NAMES, DatasetName
    from understudy.errors import ConfigurationError
    from understudy.pretraining import PretrainConfig
    from understudy.pretraining import pretrain as run_pretraining
    from understudy.pretraining.corpus import dataset_texts, task_texts

    texts: list[str] = []
    for name in dataset or []:
        if name not in DATASET_NAMES:
            raise typer.BadParameter(
                f"choose from {', '.join(DATASET_NAMES)}", param_hint="dataset"
            )
        texts += dataset_texts([cast(DatasetName, name)], seed=seed)
    if task is not None:
        from understudy.store.engine import open_store

        texts += task_texts(open_store(), task)
    if text_file is not None:
        texts += [line for line in text_file.read_text(encoding="utf-8").splitlines() if line]
    if not texts:
        raise typer.BadParameter("give --dataset, --task or --text-file", param_hint="corpus")
    config = PretrainConfig(
        hidden_size=hidden_size,
        num_layers=layers,
        num_heads=heads,
        intermediate_size=intermediate_size,
        feedforward=feedforward,
        token_mixer=token_mixer,
        fff_depth=fff_depth,
        fff_leaf_width=fff_leaf_width,
        vocab_size=vocab_size,
        seq_len=seq_len,
        batch_size=batch_size,
        accumulation=accumulation,
        steps=steps,
        peak_learning_rate=learning_rate,
        checkpoint_every=checkpoint_every,
        seed=seed,
        device=device,
    )
    try:
        result = run_pretraining(texts, out, config)
    except ConfigurationError as exc:
        raise typer.BadParameter(exc.message) from exc
    Console().print(
        f"pretrained on {len(texts)} texts in {result.seconds:.0f} s: held-out MLM loss "
        f"{result.heldout_loss:.3f}, accuracy {result.heldout_accuracy:.1%} -> {result.out_dir}"
    )

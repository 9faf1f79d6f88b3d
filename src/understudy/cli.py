"""The ``understudy`` command line: thin commands that call the library and print with rich."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

if TYPE_CHECKING:
    from understudy.demo import DemoConfig

app = typer.Typer(
    name="understudy",
    help="Shadow your LLM classifier, train a small student on its answers, switch when good.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def main() -> None:
    """understudy: an OpenAI-compatible gateway that trains and serves students."""


# A task version, for the commands that change one (default: the newest).
TaskVersionOption = Annotated[
    int | None,
    typer.Option(
        "--version",
        help="Task version (default: the newest; callers on an older schema are still answered "
        "by that version's student).",
    ),
]


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
    from understudy.worker_process import WorkerSupervisor

    settings = Settings()
    # Training runs in its own process so it never blocks the gateway's answers.
    worker = WorkerSupervisor(settings) if settings.start_worker else None
    if worker is not None:
        worker.start()
    try:
        uvicorn.run(
            create_app(settings),
            host=host or settings.host,
            port=port or settings.port,
            log_level=settings.log_level,
        )
    finally:
        if worker is not None:
            worker.stop()


@app.command("worker")
def run_worker(
    once: Annotated[bool, typer.Option(help="Make one pass over the tasks and exit.")] = False,
    stop_with: Annotated[
        int | None,
        typer.Option(
            help="Stop when the process with this pid ends (serve passes its own).", hidden=True
        ),
    ] = None,
) -> None:
    """Run the worker: train, evaluate and publish students; move tasks between modes."""
    import logging
    import signal
    import threading

    from rich.console import Console

    from understudy.settings import Settings
    from understudy.store import open_store
    from understudy.worker import Worker
    from understudy.worker_process import stop_with_parent

    if stop_with is not None:
        stop_with_parent(stop_with)
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    import torch

    torch.set_num_threads(settings.worker_threads)
    niceness = os.nice(settings.worker_nice) if hasattr(os, "nice") else 0
    logging.getLogger(__name__).info(
        "worker: %d training thread(s), niceness %d", settings.worker_threads, niceness
    )
    worker = Worker(settings, open_store(settings))
    if once:
        console = Console()
        if not worker.lead():
            console.print(
                f"{worker.lock_holder()} holds this database's worker lock: one worker acts on a "
                "database at a time. Run this when it has stopped, or on a copy of the data "
                "directory.",
                style="red",
                markup=False,
            )
            raise typer.Exit(1)
        try:
            for action in worker.run_once():
                console.print(f"{action.task_key} {action.what}: {action.detail}", markup=False)
        finally:
            worker.worker_lock.release()
        return
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        worker.run(stop)
    except KeyboardInterrupt:
        stop.set()


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
        f"{len(report.errors)} rejected) into tasks: {tasks}",
        markup=False,
    )
    for error in report.errors[:20]:
        console.print(f"  {error}", style="red", markup=False)
    if report.errors:
        raise typer.Exit(1)


@app.command("settings")
def show_settings(
    markdown: Annotated[
        bool, typer.Option(help="Print the reference table of every setting (README format).")
    ] = False,
    write: Annotated[
        Path | None,
        typer.Option(help="Rewrite the table between the settings markers in this file."),
    ] = None,
) -> None:
    """Show the settings in effect (secrets masked), or document them all as Markdown."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from understudy.settings import Settings
    from understudy.settings_doc import settings_markdown, with_settings_table

    if write is not None:
        try:
            updated = with_settings_table(write.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--write") from exc
        write.write_text(updated, encoding="utf-8")
        typer.echo(f"updated the settings table in {write}")
        return
    if markdown:
        typer.echo(settings_markdown())
        return
    table = Table("setting", "value")
    for name, value in Settings().model_dump().items():
        # Text, not markup: values such as redact patterns hold brackets.
        shown = "****" if "api_key" in name and value else str(value)
        table.add_row(f"UNDERSTUDY_{name.upper()}", Text(shown))
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
        f"{result.heldout_loss:.3f}, accuracy {result.heldout_accuracy:.1%} -> {result.out_dir}",
        markup=False,
    )


@app.command()
def train(
    task: Annotated[str, typer.Argument(help="Task key.")],
    student: Annotated[str, typer.Option(help="ngram | probe | finetune | distill")] = "ngram",
    data: Annotated[
        Path | None,
        typer.Option(help='JSONL of {"text", "labels": {head: label}} instead of the store.'),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (default 0).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs (not probe).")] = None,
    encoder: Annotated[
        Path | None, typer.Option(help="Base encoder directory (probe/finetune/distill).")
    ] = None,
    max_length: Annotated[
        int | None, typer.Option(help="Longest input in tokens (probe/finetune/distill).")
    ] = None,
    target: Annotated[
        float | None,
        typer.Option(
            help="Agreement target for the threshold (default: the task's own, else the setting)."
        ),
    ] = None,
    layers: Annotated[
        int | None, typer.Option(help="Encoder layers kept (finetune: all, distill: 4).")
    ] = None,
    assistant: Annotated[
        Path | None,
        typer.Option(
            help="Fine-tuned student artifact a distilled student starts from and learns "
            "(default: the task's newest published finetune student, if any)."
        ),
    ] = None,
) -> None:
    """Train a student, evaluate it on held-out calls and publish it as the task's next version."""
    from rich.console import Console

    from understudy.errors import UnderstudyError
    from understudy.evaluation.render import report_table, threshold_line
    from understudy.routing.overrides import task_target
    from understudy.serving.registry import ModelRegistry
    from understudy.settings import Settings
    from understudy.store import open_store
    from understudy.training.workflow import build_config, task_data, train_and_publish

    settings = Settings()
    console = Console()
    store = None if data is not None else open_store(settings)
    try:
        examples = task_data(task, settings, data=data, store=store)
        default_target = (
            settings.target_agreement
            if store is None
            else task_target(store.task_state(task, examples.task.version), settings)
        )
        registry = ModelRegistry(settings.models_dir)
        if student == "distill" and assistant is None:
            assistant = registry.newest_of_kind(task, examples.task.version, "finetune")
        config = build_config(
            student,
            {
                "seed": seed,
                "epochs": epochs,
                "encoder_dir": encoder,
                "max_length": max_length,
                "num_layers": layers,
                "assistant_dir": assistant,
            },
        )
        if assistant is not None:
            console.print(f"the distilled student starts from and learns {assistant}", markup=False)
        console.print(
            f"training a {student} student for {task}: {len(examples.train)} examples, "
            f"{len(examples.heldout)} held out",
            markup=False,
        )
        published = train_and_publish(
            student,
            examples,
            registry,
            config=config,
            target_agreement=target if target is not None else default_target,
            store=store,
        )
    except UnderstudyError as exc:
        console.print(exc.message, style="red", markup=False)
        raise typer.Exit(1) from exc
    console.print(
        f"published {task} {published.version} in {published.result.timings_s['total']:.1f} s "
        f"-> {published.path}",
        markup=False,
    )
    if published.report is not None:
        console.print(report_table(published.report))
        console.print(threshold_line(published.report))


@app.command("eval")
def eval_student(
    task: Annotated[str, typer.Argument(help="Task key.")],
    version: Annotated[str | None, typer.Option(help="Student version (default: latest).")] = None,
    data: Annotated[
        Path | None, typer.Option(help="JSONL of labelled examples to evaluate on (all rows).")
    ] = None,
    backend: Annotated[str, typer.Option(help="auto | torch | onnx | onnx-fp32")] = "auto",
    target: Annotated[
        float | None,
        typer.Option(
            help="Agreement target for the threshold (default: the task's own, else the setting)."
        ),
    ] = None,
) -> None:
    """Evaluate a published student on the held-out calls (or a JSONL file) and show its curve."""
    from rich.console import Console

    from understudy.errors import UnderstudyError
    from understudy.evaluation import evaluate
    from understudy.evaluation.render import report_table, threshold_line
    from understudy.routing.overrides import task_target
    from understudy.serving.artifact import StudentManifest
    from understudy.serving.loader import Backend
    from understudy.serving.registry import ModelRegistry
    from understudy.settings import Settings
    from understudy.store import open_store
    from understudy.tasks import Task
    from understudy.training.jsonl import read_examples

    settings = Settings()
    console = Console()
    registry = ModelRegistry(settings.models_dir)
    try:
        chosen = version or registry.latest(task)
        if chosen is None:
            console.print(
                f"no student for task {task!r}; run `understudy train {task}`",
                style="red",
                markup=False,
            )
            raise typer.Exit(1)
        loaded = registry.load(task, chosen, backend=cast(Backend, backend))
        manifest = StudentManifest.read(registry.path(task, chosen))
        spec = Task(key=task, version=manifest.task_version, schema={}, heads=manifest.heads)
        default_target = settings.target_agreement
        if data is not None:
            heldout = read_examples(data)
        else:
            store = open_store(settings)
            heldout = store.examples(task, manifest.task_version, heldout=True)
            default_target = task_target(store.task_state(task, manifest.task_version), settings)
        report = evaluate(loaded, spec, heldout, target if target is not None else default_target)
    except UnderstudyError as exc:
        console.print(exc.message, style="red", markup=False)
        raise typer.Exit(1) from exc
    console.print(report_table(report))
    console.print(threshold_line(report))


@app.command()
def predict(
    task: Annotated[str, typer.Argument(help="Task key.")],
    text: Annotated[str, typer.Argument(help="The input text to classify.")],
    version: Annotated[str | None, typer.Option(help="Student version (default: latest).")] = None,
    backend: Annotated[str, typer.Option(help="auto | torch | onnx | onnx-fp32")] = "auto",
) -> None:
    """Answer one text with a published student: labels and calibrated probabilities."""
    from rich.console import Console

    from understudy.errors import UnderstudyError
    from understudy.evaluation.render import prediction_table
    from understudy.serving.loader import Backend
    from understudy.serving.registry import ModelRegistry
    from understudy.settings import Settings

    console = Console()
    registry = ModelRegistry(Settings().models_dir)
    try:
        chosen = version or registry.latest(task)
        if chosen is None:
            console.print(
                f"no student for task {task!r}; run `understudy train {task}`",
                style="red",
                markup=False,
            )
            raise typer.Exit(1)
        loaded = registry.load(task, chosen, backend=cast(Backend, backend))
        (prediction,) = loaded.predict([text])
    except UnderstudyError as exc:
        console.print(exc.message, style="red", markup=False)
        raise typer.Exit(1) from exc
    console.print(
        f"{task} {chosen} ({loaded.kind}), confidence {prediction.confidence:.3f}", markup=False
    )
    console.print(prediction_table(prediction))


# --- operator commands: the dashboard in a terminal ---------------------------------------------


@app.command("tasks")
def list_tasks() -> None:
    """Every task: mode, traffic, the student's share, live agreement, why it can't switch."""
    from rich.console import Console

    from understudy.dashboard.terminal import tasks_table
    from understudy.settings import Settings
    from understudy.store import open_store
    from understudy.store.queries import tasks_overview
    from understudy.store.tables import utcnow
    from understudy.store.worker_status import worker_status

    settings = Settings()
    store = open_store(settings)
    overviews = tasks_overview(
        store, min_labels=settings.first_train_labels, prices=settings.model_prices
    )
    console = Console()
    console.print(tasks_table(overviews) if overviews else "No task yet.")
    problem = worker_status(store, settings.worker_poll_s).problem(utcnow())
    if problem:
        console.print(problem, style="yellow", markup=False)


@app.command("task")
def show_task(name: Annotated[str, typer.Argument(help="Task key.")]) -> None:
    """One task: state, traffic, latency, serving student, training runs and recent events."""
    from rich.console import Console

    from understudy.dashboard.terminal import print_task
    from understudy.errors import UnderstudyError
    from understudy.settings import Settings
    from understudy.store import open_store

    console = Console()
    settings = Settings()
    try:
        print_task(console, open_store(settings), name, settings)
    except UnderstudyError as exc:
        console.print(exc.message, style="red", markup=False)
        raise typer.Exit(1) from exc


@app.command("mode")
def set_mode(
    task: Annotated[str, typer.Argument(help="Task key.")],
    mode: Annotated[str, typer.Argument(help="shadow | cascade | student | teacher")],
    reason: Annotated[str, typer.Option(help="Why; recorded in the task's audit log.")] = (
        "set by an operator"
    ),
    version: TaskVersionOption = None,
) -> None:
    """Move a task to another mode (recorded as an event with the reason)."""
    from rich.console import Console

    from understudy.errors import UnderstudyError
    from understudy.routing.modes import Mode
    from understudy.store import open_store

    console = Console()
    if mode not in {m.value for m in Mode}:
        console.print(
            f"unknown mode {mode!r}; one of {', '.join(m.value for m in Mode)}",
            style="red",
            markup=False,
        )
        raise typer.Exit(2)
    try:
        store = open_store()
        before = store.task_state(task, version)
        state = store.set_mode(
            task, mode, f"{reason} (cli)", evidence={"via": "cli"}, version=before.version
        )
    except UnderstudyError as exc:
        console.print(exc.message, style="red", markup=False)
        raise typer.Exit(1) from exc
    console.print(
        f"{task} (version {state.version}): {before.mode.value} → {state.mode.value}", markup=False
    )


@app.command("tune")
def tune_task(
    task: Annotated[str, typer.Argument(help="Task key.")],
    target_agreement: Annotated[
        str | None,
        typer.Option(help="Agreement the task's student must keep, or 'default' (the settings')."),
    ] = None,
    audit_rate: Annotated[
        str | None,
        typer.Option(help="Share of student answers the teacher audits, or 'default'."),
    ] = None,
    reason: Annotated[str, typer.Option(help="Why; recorded in the task's audit log.")] = (
        "set by an operator"
    ),
    version: TaskVersionOption = None,
) -> None:
    """Set a task's own target agreement and audit rate (recorded as an event with the reason)."""
    from rich.console import Console

    from understudy.dashboard.formatting import task_knob
    from understudy.errors import UnderstudyError
    from understudy.routing.overrides import parse_audit_rate, parse_target_agreement
    from understudy.settings import Settings
    from understudy.store import open_store

    console = Console()
    if target_agreement is None and audit_rate is None:
        console.print("[red]nothing to change: give --target-agreement and/or --audit-rate[/red]")
        raise typer.Exit(2)
    settings = Settings()
    try:
        changes: dict[str, Any] = {}  # only what was given: the rest keeps its value
        if target_agreement is not None:
            changes["target_agreement"] = parse_target_agreement(target_agreement)
        if audit_rate is not None:
            changes["audit_rate"] = parse_audit_rate(audit_rate)
        state = open_store(settings).update_task_state(
            task, reason=f"{reason} (cli)", version=version, **changes
        )
    except UnderstudyError as exc:
        console.print(exc.message, style="red", markup=False)
        raise typer.Exit(1) from exc
    console.print(
        f"{task} (version {state.version}): target agreement "
        f"{task_knob(state.target_agreement, settings.target_agreement)}, "
        f"audit rate {task_knob(state.audit_rate, settings.audit_rate)}",
        markup=False,
    )


@app.command("review")
def review_queue(
    task: Annotated[str, typer.Argument(help="Task key.")],
    label: Annotated[
        str | None, typer.Option(help="Only calls with this teacher label, as head=value.")
    ] = None,
    disagreements: Annotated[
        bool, typer.Option("--disagreements", help="Only student-teacher disagreements.")
    ] = False,
    author: Annotated[str | None, typer.Option(help="Your name, stored with the labels.")] = None,
) -> None:
    """Label a task's review queue in the terminal: a number picks a label, s skips, u undoes,
    q quits."""
    from rich.console import Console

    from understudy.dashboard.terminal import review
    from understudy.errors import UnderstudyError
    from understudy.store import open_store

    console = Console()
    head, sep, value = (label or "").partition("=")
    if label is not None and not sep:
        console.print("[red]--label must be head=value[/red]")
        raise typer.Exit(2)
    try:
        tally = review(
            open_store(),
            task,
            console,
            lambda prompt: str(typer.prompt(prompt, default="q", show_default=False)),
            author=author,
            label=(head, value) if label is not None else None,
            disagreement_only=disagreements,
        )
    except UnderstudyError as exc:
        console.print(exc.message, style="red", markup=False)
        raise typer.Exit(1) from exc
    console.print(f"labelled {tally.labelled}, skipped {tally.skipped}, undid {tally.undone}")


@app.command("export")
def export_labels(
    task: Annotated[str, typer.Argument(help="Task key.")],
    fmt: Annotated[str, typer.Option("--format", help="jsonl | csv")] = "jsonl",
    out: Annotated[Path | None, typer.Option(help="Output file (default: stdout).")] = None,
) -> None:
    """Write a task's labelled data (human labels override the teacher's) as JSONL or CSV."""
    import sys

    from understudy.errors import UnderstudyError
    from understudy.store import open_store
    from understudy.store.queries import ExportFormat, export_labelled

    if fmt not in {f.value for f in ExportFormat}:
        typer.echo("--format must be jsonl or csv", err=True)
        raise typer.Exit(2)
    try:
        lines = export_labelled(open_store(), task, fmt)
        if out is None:
            sys.stdout.writelines(lines)
        else:
            with out.open("w", encoding="utf-8", newline="") as handle:
                handle.writelines(lines)
    except UnderstudyError as exc:
        typer.echo(exc.message, err=True)
        raise typer.Exit(1) from exc


# --- security and operations: API keys ------------------------------------------------------

keys_app = typer.Typer(
    help="Gateway API keys: once one exists, every route but /healthz needs a key.",
    no_args_is_help=True,
)
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def create_key(
    admin: Annotated[
        bool, typer.Option("--admin/--client", help="Admin key (dashboard) or client key (API).")
    ] = False,
    name: Annotated[str | None, typer.Option(help="A name to tell the key apart.")] = None,
) -> None:
    """Create a key and print it once (only its SHA-256 digest is stored)."""
    from understudy.store import open_store
    from understudy.store.keys import KeyRole
    from understudy.store.keys import create_key as store_create_key

    listed, key = store_create_key(open_store(), KeyRole.ADMIN if admin else KeyRole.CLIENT, name)
    typer.echo(key)
    typer.echo(
        f"{listed.role} key {listed.id} ({listed.prefix}...) created; it is shown only now. "
        "Gateways accept it within `auth_cache_ttl_s` seconds.",
        err=True,
    )


@keys_app.command("list")
def list_keys() -> None:
    """Every key: id, name, role, the first characters, when created and revoked."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from understudy.store import open_store
    from understudy.store.keys import list_keys as store_list_keys

    table = Table("id", "name", "role", "key", "created", "revoked")
    for key in store_list_keys(open_store()):
        revoked = key.revoked_at.strftime("%Y-%m-%d %H:%M") if key.revoked_at else ""
        table.add_row(
            str(key.id),
            Text(key.name or ""),
            key.role.value,
            f"{key.prefix}...",
            key.created_at.strftime("%Y-%m-%d %H:%M"),
            revoked,
        )
    Console().print(table)


@keys_app.command("revoke")
def revoke_key(
    which: Annotated[str, typer.Argument(help="The key's id, name or shown prefix.")],
) -> None:
    """Revoke a key; gateways refuse it within `auth_cache_ttl_s` seconds."""
    from understudy.errors import UnderstudyError
    from understudy.store import open_store
    from understudy.store.keys import revoke_key as store_revoke_key

    try:
        key = store_revoke_key(open_store(), which)
    except UnderstudyError as exc:
        typer.echo(exc.message, err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"revoked {key.role} key {key.id} ({key.prefix}...)")


def _demo_config(
    dataset: str,
    calls: int,
    concurrency: int,
    teacher_latency_ms: float,
    target_agreement: float,
    data_dir: Path | None,
    **overrides: Any,
) -> DemoConfig:
    from understudy.demo import DemoConfig
    from understudy.replay import SCENARIOS
    from understudy.settings import TARGET_AGREEMENT_RANGE

    if dataset not in SCENARIOS:
        raise typer.BadParameter(f"choose one of {', '.join(SCENARIOS)}", param_hint="--dataset")
    low, high = TARGET_AGREEMENT_RANGE
    if not low < target_agreement < high:
        raise typer.BadParameter(
            f"must be above {low} and below {high}", param_hint="--target-agreement"
        )
    return DemoConfig(
        dataset=dataset,  # type: ignore[arg-type]  # checked against SCENARIOS above
        calls=calls,
        concurrency=concurrency,
        teacher_latency_ms=teacher_latency_ms,
        target_agreement=target_agreement,
        data_dir=data_dir,
        **overrides,
    )


# The replay options `demo` and `bench e2e` share (each sets its own defaults).
DatasetOption = Annotated[str, typer.Option(help="rt-sentiment or trec6.")]
CallsOption = Annotated[int, typer.Option(min=1, help="Calls to replay.")]
ConcurrencyOption = Annotated[int, typer.Option(min=1, help="Client threads.")]
TeacherLatencyOption = Annotated[
    float, typer.Option(min=0, help="The fake teacher's delay per answer (ms).")
]
TargetOption = Annotated[
    float, typer.Option(help="Agreement the student must keep (above 0.5, below 1).")
]


@app.command()
def demo(
    dataset: DatasetOption = "trec6",
    calls: CallsOption = 5000,
    concurrency: ConcurrencyOption = 8,
    teacher_latency_ms: TeacherLatencyOption = 300.0,
    target_agreement: TargetOption = 0.92,
    data_dir: Annotated[
        Path | None, typer.Option(help="Keep the demo's database and models here.")
    ] = None,
) -> None:
    """The whole story in a few minutes, no API key: shadow, learn, switch, with a live view."""
    from rich.console import Console

    from understudy.demo import report_table, run_demo

    console = Console()
    config = _demo_config(
        dataset, calls, concurrency, teacher_latency_ms, target_agreement, data_dir
    )
    report = run_demo(config, console)
    console.print(report_table(report))
    console.print(
        f"Look around: UNDERSTUDY_DATA_DIR={report.config['data_dir']} "
        f"UNDERSTUDY_TARGET_AGREEMENT={report.config['target_agreement']} understudy serve, "
        "then open http://127.0.0.1:8000/ui",
        markup=False,
    )


bench_app = typer.Typer(
    help="Benchmarks that run from the installed package.", no_args_is_help=True
)
app.add_typer(bench_app, name="bench")


@bench_app.command("e2e")
def bench_e2e(
    dataset: DatasetOption = "rt-sentiment",
    calls: CallsOption = 5000,
    concurrency: ConcurrencyOption = 8,
    teacher_latency_ms: TeacherLatencyOption = 300.0,
    target_agreement: TargetOption = 0.98,
    out: Annotated[Path, typer.Option(help="Where to write the JSON results.")] = Path(
        "bench/results/e2e.json"
    ),
) -> None:
    """Replay a dataset stream end to end; print and write coverage, agreement, latency, savings."""
    import json
    import platform

    from rich.console import Console

    from understudy.demo import report_table, run_demo
    from understudy.settings import Settings

    console = Console()
    # The product's default students, not the demo's short list: this measures the product.
    kinds = tuple(Settings.model_fields["student_kinds"].get_default())
    config = _demo_config(
        dataset, calls, concurrency, teacher_latency_ms, target_agreement, None, student_kinds=kinds
    )
    report = run_demo(config, console, live=False)
    console.print(report_table(report))
    payload = {
        "benchmark": "e2e",
        "command": f"understudy bench e2e --dataset {dataset} --calls {calls} "
        f"--target-agreement {target_agreement}",
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "report": report.to_json(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n")
    console.print(f"wrote {out}", markup=False)


@app.command("savings")
def show_savings(
    task: Annotated[str | None, typer.Argument(help="Task key (default: every task).")] = None,
) -> None:
    """Teacher calls, tokens and cost the students avoided, net of audits, per task."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from understudy.savings import task_savings
    from understudy.settings import Settings
    from understudy.store import open_store

    settings = Settings()
    store = open_store(settings)
    keys = [task] if task else [known.key for known, _ in store.latest_tasks()]
    table = Table(title="savings")
    for column in ("task", "teacher calls", "student calls", "audited", "tokens avoided"):
        table.add_column(column, justify="right" if column != "task" else "left")
    table.add_column("cost avoided", justify="right")
    for key in keys:
        saved = task_savings(store, key, settings.model_prices)
        cost = "-" if saved.avoided_cost_usd is None else f"${saved.avoided_cost_usd:.4f}"
        table.add_row(
            Text(key),
            str(saved.teacher_calls),
            str(saved.student_calls),
            str(saved.audited_calls),
            str(saved.avoided_tokens),
            cost,
        )
    Console().print(table)


# --- security and operations: retention and diagnosis ---------------------------------------


@app.command("purge")
def purge(
    days: Annotated[
        float | None,
        typer.Option(help="Purge raw bodies older than this many days (default: retention_days)."),
    ] = None,
) -> None:
    """Delete the raw request/response bodies of old calls; labels and training texts stay."""
    from understudy.privacy import purge_raw_bodies
    from understudy.settings import Settings
    from understudy.store import open_store

    settings = Settings()
    older_than = days if days is not None else settings.retention_days
    if older_than is None:
        typer.echo("give --days or set UNDERSTUDY_RETENTION_DAYS", err=True)
        raise typer.Exit(2)
    report = purge_raw_bodies(open_store(settings), older_than)
    typer.echo(
        f"purged the raw bodies of {report.calls} calls older than "
        f"{report.cutoff:%Y-%m-%d %H:%M} UTC"
    )


@app.command("doctor")
def doctor() -> None:
    """Check settings, database, upstream, model artifacts, the worker, the call log and auth;
    exit 1 if anything is broken, saying how to fix it."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from understudy.doctor import Status, diagnose

    findings = diagnose()
    style = {Status.OK: "green", Status.WARN: "yellow", Status.FAIL: "red"}
    table = Table("check", "status", "finding", "how to fix")
    for finding in findings:
        table.add_row(
            finding.check,
            Text(finding.status.value, style=style[finding.status]),
            Text(finding.detail),
            Text(finding.fix),
        )
    Console(width=160).print(table)
    if any(finding.status is Status.FAIL for finding in findings):
        raise typer.Exit(1)

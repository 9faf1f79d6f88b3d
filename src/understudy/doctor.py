"""``understudy doctor``: checks an installation and says what is wrong and how to fix it.

Checks, in order: the settings load and make sense; the database is reachable and migrated to
the newest schema (read only: the doctor never migrates); the upstream answers ``GET /models``;
every serving student's artifact exists and matches its checksums; a worker holds the database's
worker lock (something trains students and moves tasks); the call log's journal holds no rejected
calls and no journal left by a killed gateway. Nothing is written.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import httpx
import sqlalchemy as sa
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from pydantic import ValidationError

from understudy.errors import UnderstudyError
from understudy.gateway.upstream import mask_secrets
from understudy.serving.registry import ModelRegistry
from understudy.settings import Settings
from understudy.store import Store
from understudy.store.call_log import REJECTED_FILE, orphaned_segments
from understudy.store.engine import MIGRATIONS_DIR, create_engine
from understudy.store.keys import key_snapshot
from understudy.store.tables import utcnow
from understudy.store.worker_status import worker_status

# Seconds the upstream gets to answer ``GET /models``.
UPSTREAM_TIMEOUT_S = 5.0
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


class Status(StrEnum):
    """A check's outcome: fine, worth knowing, or broken (exit code 1)."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Finding:
    """One check's result: what was checked, its status, what was found and how to fix it."""

    check: str
    status: Status
    detail: str
    fix: str = ""


def diagnose(settings_factory: Callable[[], Settings] = Settings) -> list[Finding]:
    """Run every check; later checks are skipped when the settings do not load."""
    try:
        settings = settings_factory()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first["loc"])
        return [
            Finding(
                "config",
                Status.FAIL,
                f"setting {name}: {first['msg']}",
                f"fix UNDERSTUDY_{name.upper()} (environment or understudy.toml)",
            )
        ]
    findings = list(_config(settings))
    store_findings, store = _database(settings)
    findings += store_findings
    findings += _upstream(settings)
    findings += _journal(settings)
    if store is not None:
        findings += _artifacts(settings, store)
        findings += _worker(settings, store)
        findings += _auth(settings, store)
        store.close()
    return findings


def _config(settings: Settings) -> Iterator[Finding]:
    problems = []
    for name, regex in settings.redact_patterns.items():
        try:
            re.compile(regex)
        except re.error as exc:
            problems.append(f"redact pattern {name} is not a regular expression ({exc})")
    if not settings.upstream_base_url.startswith(("http://", "https://")):
        problems.append(f"upstream_base_url {settings.upstream_base_url!r} is not an http(s) URL")
    if settings.max_concurrent_requests < 1 or settings.max_queued_requests < 0:
        problems.append("max_concurrent_requests must be >= 1 and max_queued_requests >= 0")
    if problems:
        yield Finding("config", Status.FAIL, "; ".join(problems), "correct these settings")
    else:
        yield Finding("config", Status.OK, f"settings load (data_dir {settings.data_dir})")


def _database(settings: Settings) -> tuple[list[Finding], Store | None]:
    url = settings.resolved_database_url
    parsed = sa.make_url(url)
    shown = parsed.render_as_string(hide_password=True)
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").exists():
        # Connecting would create an empty file; the doctor only reads.
        return [
            Finding(
                "database",
                Status.FAIL,
                f"no database at {parsed.database} (at migration none)",
                "start `understudy serve` once, or check UNDERSTUDY_DATA_DIR / "
                "UNDERSTUDY_DATABASE_URL",
            )
        ], None
    try:
        engine = create_engine(url)
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    except Exception as exc:  # any driver error means the same thing here: unreachable
        return [
            Finding(
                "database",
                Status.FAIL,
                f"cannot open {shown}: {type(exc).__name__}: {exc}",
                "check UNDERSTUDY_DATABASE_URL / UNDERSTUDY_DATA_DIR and that the file or server "
                "is reachable and writable",
            )
        ], None
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(config).get_current_head()
    if current != head:
        engine.dispose()
        return [
            Finding(
                "database",
                Status.FAIL,
                f"{shown} is at migration {current or 'none'}, the code expects {head}",
                "start `understudy serve` or `understudy worker` once (they migrate), or run any "
                "store command such as `understudy tasks`",
            )
        ], None
    store = Store(engine)
    return [Finding("database", Status.OK, f"{shown} at migration {head}")], store


def _upstream(settings: Settings) -> Iterator[Finding]:
    url = settings.upstream_base_url.rstrip("/") + "/models"
    headers = {}
    if settings.upstream_api_key is not None:
        headers["authorization"] = f"Bearer {settings.upstream_api_key.get_secret_value()}"
    try:
        response = httpx.get(url, headers=headers, timeout=UPSTREAM_TIMEOUT_S)
    except httpx.HTTPError as exc:
        yield Finding(
            "upstream",
            Status.FAIL,
            mask_secrets(f"GET {url} failed: {type(exc).__name__}: {exc}"),
            "check UNDERSTUDY_UPSTREAM_BASE_URL and that the teacher's API is reachable",
        )
        return
    if response.status_code in (401, 403):
        if settings.upstream_api_key is None:
            yield Finding(
                "upstream",
                Status.WARN,
                f"GET {url} needs a key ({response.status_code}); none is configured, so "
                "callers' own keys are passed through",
                "set UNDERSTUDY_UPSTREAM_API_KEY unless callers bring their own key",
            )
        else:
            yield Finding(
                "upstream",
                Status.FAIL,
                f"GET {url} rejected the configured key ({response.status_code})",
                "set a valid UNDERSTUDY_UPSTREAM_API_KEY",
            )
    elif response.status_code >= 400:
        yield Finding(
            "upstream",
            Status.FAIL,
            f"GET {url} answered {response.status_code}",
            "check UNDERSTUDY_UPSTREAM_BASE_URL (it should end in /v1 for OpenAI-style APIs)",
        )
    else:
        yield Finding("upstream", Status.OK, f"GET {url} answered {response.status_code}")


def _journal(settings: Settings) -> Iterator[Finding]:
    directory = settings.journal_dir
    rejected = directory / REJECTED_FILE
    if rejected.is_file() and rejected.stat().st_size:
        count = len(rejected.read_bytes().splitlines())
        yield Finding(
            "call log",
            Status.FAIL,
            f"{count} call(s) the database rejected are kept in {rejected}",
            "read each line's error; fix the cause (e.g. a deleted task), then import the calls "
            "again or delete the file",
        )
        return
    orphans = orphaned_segments(directory) if directory.is_dir() else []
    if orphans:
        yield Finding(
            "call log",
            Status.WARN,
            f"{len(orphans)} journal segment(s) in {directory} were left by a gateway that was "
            "killed before committing them",
            "start the gateway (`understudy serve`): it replays them into the database",
        )
        return
    yield Finding("call log", Status.OK, "no rejected calls, no journal left by a killed gateway")


def _artifacts(settings: Settings, store: Store) -> Iterator[Finding]:
    registry = ModelRegistry(settings.models_dir)
    serving = [
        (row.task.key, row.state.serving_version)
        for row in store.list_tasks()
        if row.state.serving_version is not None
    ]
    broken = []
    for key, version in serving:
        assert version is not None
        try:
            registry.verify(key, version)
        except UnderstudyError as exc:
            broken.append(f"{key} {version}: {exc.message}")
    if broken:
        yield Finding(
            "models",
            Status.FAIL,
            "; ".join(broken),
            "retrain with `understudy train TASK` or set the task back with "
            "`understudy mode TASK shadow`; gateways answer those tasks with the teacher meanwhile",
        )
    else:
        yield Finding("models", Status.OK, f"{len(serving)} serving student(s) verified")


def _worker(settings: Settings, store: Store) -> Iterator[Finding]:
    status = worker_status(store, settings.worker_poll_s)
    if not status.running:
        yield Finding(
            "worker",
            Status.WARN,
            "no worker is running against this database: no student trains, no task changes "
            "mode, no drifting student is rolled back",
            "start `understudy serve` (it starts one unless UNDERSTUDY_START_WORKER=false) or "
            "`understudy worker`",
        )
        return
    now = utcnow()
    stuck = status.stuck_for_s(now)
    if stuck is not None:
        yield Finding(
            "worker",
            Status.FAIL,
            f"{status.holder} holds the worker lock but finished no pass for {stuck / 60:.0f} min",
            "stop its process (`understudy serve` starts another)",
        )
        return
    beat = status.heartbeat
    last = "no pass yet"
    if beat is not None and beat.last_pass_at is not None:
        last = f"last pass {(now - beat.last_pass_at).total_seconds():.0f} s ago"
    yield Finding("worker", Status.OK, f"{status.holder} holds the worker lock; {last}")


def _auth(settings: Settings, store: Store) -> Iterator[Finding]:
    if key_snapshot(store).enabled:
        yield Finding("auth", Status.OK, "API keys are required")
    elif settings.host not in LOCAL_HOSTS:
        yield Finding(
            "auth",
            Status.FAIL,
            f"the gateway binds to {settings.host} and no API key exists: anyone who can reach "
            "it can use it and its dashboard",
            "create keys with `understudy keys create --admin` and `--client`",
        )
    else:
        yield Finding(
            "auth",
            Status.WARN,
            "no API key exists: every caller on this machine is admitted",
            "create keys with `understudy keys create --admin` before exposing the gateway",
        )

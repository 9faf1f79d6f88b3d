"""PostgreSQL, the multi-replica backend: migrations (also from two processes at once), the
gateway's call log, feedback and the dashboard, the one-worker lock, on a throwaway server.

The server is started from the PostgreSQL binaries when they are installed (CI installs Debian's
``postgresql``); without them these tests are skipped with the reason.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
import sqlalchemy as sa

from understudy.processes import ProcessRef
from understudy.routing.modes import Mode
from understudy.settings import Settings
from understudy.store import CallKind, CallRecord, open_store, switch
from understudy.store.worker_lock import WorkerLock
from understudy.testing.fake_teacher import FakeTeacher, run_fake_teacher
from understudy.testing.gateway import run_gateway
from understudy.worker import Worker
from worker_support import register_changed_review_task, register_review_task

SCHEMA = {
    "type": "object",
    "properties": {"sentiment": {"type": "string", "enum": ["negative", "positive"]}},
    "required": ["sentiment"],
}


def _bin_dir() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(versions[-1]).parent if versions else None


def _as_postgres_user() -> list[str]:
    """PostgreSQL refuses to run as root: run its binaries as the ``postgres`` user then."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """The base URL of a fresh PostgreSQL server on a free localhost port."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Not under pytest's tmp dir: its parents are private to root, the server user can't enter.
    root = Path(tempfile.mkdtemp(prefix="understudy-pg-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    run = _as_postgres_user()
    initdb = [*run, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    ctl = [*run, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "log")]
    try:
        for command in (initdb, [*ctl, "-o", options, "-w", "start"]):
            done = subprocess.run(command, capture_output=True, text=True)
            assert done.returncode == 0, f"{command}: {done.stdout}{done.stderr}"
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run([*ctl, "-m", "immediate", "stop"], check=False, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture()
def database_url(server: str) -> str:
    """A new, empty database on the server, for one test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return f"{server}/{name}"


def _open(database_url: str) -> int:
    store = open_store(Settings(database_url=database_url))
    with store.engine.connect() as conn:
        version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
    store.close()
    return len(str(version))


def test_two_processes_migrate_a_fresh_database_once(database_url: str) -> None:
    with ProcessPoolExecutor(2) as pool:
        assert all(list(pool.map(_open, [database_url] * 4)))
    store = open_store(Settings(database_url=database_url))
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar_one() == 1


def test_record_calls_skips_ids_already_logged(database_url: str) -> None:
    store = open_store(Settings(database_url=database_url))
    records = [
        CallRecord(id=f"c{i}", kind=CallKind.PASSTHROUGH, request={"i": i}, response=None,
                   status_code=200)
        for i in range(5)
    ]  # fmt: skip
    assert store.record_calls(records[:3]) == 3
    # A replayed journal: only the new ones land.
    assert store.record_calls(records, skip_logged=True) == 2
    with pytest.raises(sa.exc.IntegrityError):  # the gateway's fresh ids skip the lookup
        store.record_calls(records[:1])
    assert store.get_call("c4").request == {"i": 4}


def test_the_gateway_logs_answers_takes_feedback_and_renders_the_dashboard(
    database_url: str, tmp_path: Path
) -> None:
    teacher = FakeTeacher(lambda _schema, text: {"sentiment": "positive" if "good" in text
                                                 else "negative"})  # fmt: skip
    with run_fake_teacher(teacher) as teacher_url:
        settings = Settings(
            upstream_base_url=teacher_url, database_url=database_url, data_dir=tmp_path / "data"
        )
        with run_gateway(settings) as url:
            client = openai.OpenAI(base_url=url, api_key="k", max_retries=0)
            ids = []
            for i in range(12):
                raw = client.chat.completions.with_raw_response.create(
                    model="m",
                    messages=[{"role": "user", "content": f"Review: {'good' if i % 2 else 'bad'}"}],
                    response_format={
                        "type": "json_schema",
                        "json_schema": {"name": "reviews", "schema": SCHEMA},
                    },
                )
                ids.append(raw.headers["x-understudy-request-id"])
            root = url.removesuffix("/v1")
            feedback = httpx.post(
                f"{url}/feedback",
                json={"request_id": ids[0], "labels": {"sentiment": "positive"}},
            )
            assert feedback.status_code == 200, feedback.text
            for page in ("/ui", "/ui/tasks/reviews", "/metrics"):
                assert httpx.get(f"{root}{page}").status_code == 200, page
    store = open_store(settings)
    assert [store.get_call(i).labels for i in ids[:2]] == [
        {"sentiment": "negative"},
        {"sentiment": "positive"},
    ]
    human = [e for e in store.examples("reviews") if e.source.value == "human"]
    assert len(human) == 1 and human[0].labels == {"sentiment": "positive"}


# A worker's process on another replica: takes the worker lock, says so, and keeps it until killed.
HOLD_THE_WORKER_LOCK = """
import sys, time
from understudy.settings import Settings
from understudy.store import open_store
from understudy.store.worker_lock import WorkerLock
assert WorkerLock(open_store(Settings(database_url=sys.argv[1])).engine).acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_one_worker_holds_the_lock_until_its_process_dies(database_url: str) -> None:
    mine = WorkerLock(open_store(Settings(database_url=database_url)).engine)
    other = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_WORKER_LOCK, database_url],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert other.stdout is not None and other.stdout.readline() == "held\n"
        assert not mine.acquire()
        assert mine.taken_elsewhere()  # what `understudy doctor` asks
    finally:
        other.kill()
        other.wait()
    # The server drops a session's advisory locks with its connection.
    deadline = time.monotonic() + 30
    while not mine.acquire():
        assert time.monotonic() < deadline, "the dead worker's lock was never released"
        time.sleep(0.05)
    assert mine.acquire()  # still held: its connection is alive
    second = WorkerLock(open_store(Settings(database_url=database_url)).engine)
    assert not second.acquire() and second.taken_elsewhere()
    mine.release()
    assert not second.taken_elsewhere()
    assert second.acquire()
    second.release()


def test_older_versions_and_command_runs_on_postgres(database_url: str, tmp_path: Path) -> None:
    settings = Settings(database_url=database_url, data_dir=tmp_path, student_kinds=["ngram"])
    store = open_store(settings)
    old = register_review_task(store)
    register_changed_review_task(store)
    store.set_mode("review", Mode.CASCADE, "promoted", version=1)
    assert [task.version for task, _ in store.older_answering_tasks()] == [1]
    assert store.older_answering_tasks("other") == []
    # A worker's pass applies the switch policy to the old version there too (it has no student).
    actions = Worker(settings, store).run_once()
    assert [(a.what, a.detail) for a in actions] == [
        ("mode cascade -> shadow", "no serving student")
    ]
    assert store.task_state("review", 1).mode is Mode.SHADOW

    live = store.start_student_run(old, "ngram", 10, started_by=ProcessRef.current())
    gone = store.start_student_run(old, "ngram", 10)
    assert switch.interrupt_running_runs(store) == [(gone, "review", "ngram")]
    assert store.student_run_status(live) == "running"
    store.close()

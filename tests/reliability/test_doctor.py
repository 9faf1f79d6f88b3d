"""``understudy doctor``: a healthy installation passes; each broken part is named with a fix,
and the exit code is 1."""

from __future__ import annotations

import os
import socket
from datetime import timedelta

from reliability_support import sentiment_request
from typer.testing import CliRunner

from understudy.cli import app as cli_app
from understudy.settings import Settings
from understudy.store import open_store
from understudy.store import tables as t
from understudy.store.keys import KeyRole, create_key
from understudy.store.tables import utcnow
from understudy.tasks import detect_task
from understudy.worker import Worker


def _doctor(env: dict[str, str]) -> tuple[int, str]:
    result = CliRunner().invoke(cli_app, ["doctor"], env=env)
    return result.exit_code, " ".join(result.stdout.split())


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


def test_a_healthy_installation_passes(settings: Settings) -> None:
    store = open_store(settings)
    create_key(store, KeyRole.ADMIN)
    store.close()
    env = {
        "UNDERSTUDY_DATA_DIR": str(settings.data_dir),
        "UNDERSTUDY_UPSTREAM_BASE_URL": settings.upstream_base_url,
    }
    code, output = _doctor(env)
    assert code == 0, output
    assert "fail" not in output
    assert "answered 200" in output and "API keys are required" in output


def test_broken_parts_are_named_with_fixes(settings: Settings) -> None:
    store = open_store(settings)
    spec = detect_task(sentiment_request("x"))
    assert spec is not None
    store.register_task(spec)
    store.update_task_state("sentiment", serving_version="v7")  # no such artifact
    store.close()
    env = {
        "UNDERSTUDY_DATA_DIR": str(settings.data_dir),
        "UNDERSTUDY_UPSTREAM_BASE_URL": _closed_port_url(),
        "UNDERSTUDY_HOST": "0.0.0.0",
    }
    code, output = _doctor(env)
    assert code == 1
    assert "ConnectError" in output and "UNDERSTUDY_UPSTREAM_BASE_URL" in output
    assert "sentiment v7" in output and "understudy train" in output
    assert "binds to 0.0.0.0 and no API key exists" in output


def test_an_unmigrated_or_invalid_setup_fails(settings: Settings) -> None:
    env = {
        "UNDERSTUDY_DATA_DIR": str(settings.data_dir),
        "UNDERSTUDY_UPSTREAM_BASE_URL": settings.upstream_base_url,
    }
    code, output = _doctor(env)  # nothing has created the database yet
    assert code == 1 and "at migration none" in output
    assert not (settings.data_dir / "understudy.db").exists()  # the doctor only reads
    code, output = _doctor({**env, "UNDERSTUDY_MAX_BODY_BYTES": "lots"})
    assert code == 1 and "max_body_bytes" in output


def test_the_call_log_journal_is_checked(settings: Settings) -> None:
    open_store(settings).close()
    env = {
        "UNDERSTUDY_DATA_DIR": str(settings.data_dir),
        "UNDERSTUDY_UPSTREAM_BASE_URL": settings.upstream_base_url,
    }
    assert "no rejected calls" in _doctor(env)[1]
    journal = settings.journal_dir
    journal.mkdir(parents=True)
    (journal / "calls-1-dead.jsonl").write_text('{"id": "x"}\n')  # no process holds it
    code, output = _doctor(env)
    assert code == 0 and "left by a gateway that was killed" in output
    (journal / "rejected.jsonl").write_text('{"error": "boom", "journal_line": "{}"}\n')
    code, output = _doctor(env)
    assert code == 1 and "1 call(s) the database rejected" in output


def test_the_doctor_says_whether_a_worker_is_running(settings: Settings) -> None:
    store = open_store(settings)
    env = {
        "UNDERSTUDY_DATA_DIR": str(settings.data_dir),
        "UNDERSTUDY_UPSTREAM_BASE_URL": settings.upstream_base_url,
    }
    output = _doctor(env)[1]
    assert "no worker is running against this database" in output and "understudy worker" in output
    assert not list(settings.data_dir.glob("*.worker.lock"))  # the doctor only reads
    worker = Worker(settings, store)
    assert worker.lead()
    try:
        output = _doctor(env)[1]
        assert f"worker process {os.getpid()} on {socket.gethostname()}" in output
        assert "holds the worker lock; no pass yet" in output
        # Holding the lock with no pass for an hour: stuck, and that is broken.
        with store.engine.begin() as conn:
            conn.execute(
                t.worker_heartbeat.update().values(started_at=utcnow() - timedelta(hours=1))
            )
        code, output = _doctor(env)
        assert code == 1 and "finished no" in output and "pass for 60 min" in output, output
    finally:
        worker.worker_lock.release()
    assert "no worker is running" in _doctor(env)[1]  # a lock file nobody holds

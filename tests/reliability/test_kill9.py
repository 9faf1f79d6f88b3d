"""Durability: ``kill -9`` of the gateway under load loses no answered call, ``kill -9`` of
the worker mid-training leaves a run marked ``interrupted`` and a clean restart that promotes, and
``serve`` replaces a worker that dies (one that outlives a killed ``serve`` stops by itself).

Both run real subprocesses against a SQLite database in a temp dir (marked ``reliability``: run
with ``pytest -m reliability``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from reliability_support import GatewayProcess, env_of, poll, sentiment_request

from understudy.importer import import_jsonl
from understudy.settings import Settings
from understudy.store import open_store
from understudy.store.worker_lock import WorkerLock
from understudy.testing.fake_teacher import FakeTeacher
from understudy.testing.tiny_models import write_tiny_encoder

pytestmark = pytest.mark.reliability

LOAD_THREADS = 8
# Answered calls to wait for before the kill: enough that the kill lands mid-load.
CALLS_BEFORE_KILL = 150


def _load(url: str, answered: list[str], stop: threading.Event, seed: int) -> None:
    """Classification, pass-through and streamed calls until ``stop``; ``answered`` gets the
    request id of every call that came back complete with 200."""
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0, timeout=10)
    i = 0
    while not stop.is_set():
        i += 1
        text = f"{'good' if (seed + i) % 2 else 'bad'} call {seed}-{i}"
        try:
            if i % 5 == 0:
                stream = client.chat.completions.with_raw_response.create(
                    **sentiment_request(text), stream=True
                )
                chunks = list(stream.parse())
                if chunks:
                    answered.append(stream.headers["x-understudy-request-id"])
            else:
                body = (
                    sentiment_request(text)
                    if i % 3
                    else {
                        "model": "m",
                        "messages": [{"role": "user", "content": text}],
                    }
                )
                raw = client.chat.completions.with_raw_response.create(**body)
                raw.parse()
                answered.append(raw.headers["x-understudy-request-id"])
        except (openai.APIError, httpx.HTTPError):
            if stop.is_set():
                return
            time.sleep(0.01)  # the gateway is down; back off briefly, not a synchronisation


@pytest.fixture()
def teacher_at(teacher: FakeTeacher, teacher_url: str, settings: Settings) -> Iterator[Settings]:
    teacher.latency_ms = 5
    yield settings


def test_kill9_of_the_gateway_under_load_loses_no_answered_call(
    teacher_at: Settings, tmp_path: Path
) -> None:
    settings = teacher_at
    log = tmp_path / "gateway.log"
    gateway = GatewayProcess(settings, log)
    answered: list[str] = []
    stop = threading.Event()
    threads = [
        threading.Thread(target=_load, args=(gateway.url, answered, stop, n))
        for n in range(LOAD_THREADS)
    ]
    for thread in threads:
        thread.start()
    try:
        poll(lambda: len(answered) >= CALLS_BEFORE_KILL, "load to build up")
        gateway.kill()  # kill -9 mid-load: no shutdown hook runs
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    before_restart = list(answered)

    restarted = GatewayProcess(settings, log)
    after: list[str] = []
    client = openai.OpenAI(base_url=f"{restarted.url}/v1", api_key="k", max_retries=0)
    for i in range(10):
        raw = client.chat.completions.with_raw_response.create(**sentiment_request(f"good {i}"))
        after.append(raw.headers["x-understudy-request-id"])
    restarted.kill(signal.SIGTERM)

    store = open_store(settings)
    for request_id in [*before_restart, *after]:
        call = store.get_call(request_id)  # raises UnknownRequest if the call was lost
        assert call.status_code == 200
    text = log.read_text(errors="replace")
    assert "database is locked" not in text
    assert len(before_restart) >= CALLS_BEFORE_KILL


def test_kill9_of_the_worker_mid_training_recovers(settings: Settings, tmp_path: Path) -> None:
    encoder = write_tiny_encoder(tmp_path / "encoder", seed=0)
    trained = settings.model_copy(
        update={
            "student_kinds": ["finetune"],
            "base_encoder": encoder,
            "first_train_labels": 50,
            "encoder_student_min_labels": 50,
            "finetune_min_labels": 50,
            "worker_poll_s": 0.2,
            "max_length": 32,
        }
    )
    rows = tmp_path / "labels.jsonl"
    with rows.open("w") as handle:
        for i in range(150):
            label = "positive" if i % 2 else "negative"
            text = f"{'good great' if i % 2 else 'bad awful'} film {i} " + "plot " * (i % 7)
            handle.write(json.dumps({"task": "sentiment", "text": text, "label": label}) + "\n")
    store = open_store(trained)
    assert import_jsonl(store, rows, None).imported == 150

    def runs() -> list[str]:
        return [run.status for run in store.student_runs("sentiment")]

    command = [sys.executable, "-m", "understudy", "worker"]
    first = subprocess.Popen(command, env=env_of(trained), stderr=subprocess.DEVNULL)
    try:
        poll(lambda: "running" in runs(), "a training run to start")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    assert runs() == ["running"]

    second = subprocess.Popen(command, env=env_of(trained), stderr=subprocess.DEVNULL)
    try:
        poll(lambda: "promoted" in runs(), "the restarted worker to promote a student", 240)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=60)
    assert sorted(runs()) == ["interrupted", "promoted"]
    state = store.task_state("sentiment")
    assert state.serving_version is not None
    staging = [p for p in trained.models_dir.rglob("*") if "staging" in p.name]
    assert staging == []


def test_serve_starts_another_worker_when_its_worker_dies(
    settings: Settings, tmp_path: Path
) -> None:
    store = open_store(settings)
    lock = WorkerLock(store.engine)
    lock_file = Path(f"{store.engine.url.database}.worker.lock")

    def worker_pid() -> int | None:
        """The pid of the worker holding the lock, None while none does."""
        if not lock.taken_elsewhere():
            return None
        return int(lock_file.read_text().strip() or 0) or None

    log = tmp_path / "serve.log"
    env = {**env_of(settings), "UNDERSTUDY_START_WORKER": "true", "UNDERSTUDY_PORT": "0"}
    with log.open("ab") as output:
        serve = subprocess.Popen(
            [sys.executable, "-m", "understudy", "serve"], env=env, stdout=output, stderr=output
        )
    try:
        poll(lambda: worker_pid() is not None, "serve's worker to take the worker lock")
        first = worker_pid()
        assert first is not None
        os.kill(first, signal.SIGKILL)  # as the out-of-memory killer would
        poll(lambda: worker_pid() not in (None, first), "serve to start another worker")
        assert f"worker process {first} exited with code -9; starting another" in log.read_text()
    finally:
        serve.send_signal(signal.SIGKILL)  # no clean-up runs: the worker must stop by itself
        serve.wait(timeout=30)
    try:
        poll(lambda: worker_pid() is None, "the worker to stop with serve")
    except AssertionError:
        # Say what the worker was doing (it logs to serve's output), to tell a stuck stop from
        # a missed signal.
        pid = worker_pid()
        status = Path(f"/proc/{pid}/status")
        state = status.read_text()[:300] if pid and status.exists() else "no such process"
        raise AssertionError(
            f"worker {pid} still holds the worker lock 60 s after serve died ({state}); "
            f"serve's output:\n{log.read_text()[-4000:]}"
        ) from None

"""Two replicas, each with its own data directory, sharing one database and one model registry
(``registry_dir``): one worker acts, and the student it publishes answers on the other replica's
gateway. (SQLite stands in for PostgreSQL here; its lock is tested in tests/store/test_postgres.py.)
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import openai

from understudy.routing import Mode
from understudy.settings import Settings
from understudy.store import open_store
from understudy.testing.fake_teacher import FakeTeacher, run_fake_teacher
from understudy.testing.gateway import run_gateway
from understudy.worker import Worker
from worker_support import REQUEST, review


def keyword_sentiment(schema: dict[str, Any], text: str) -> dict[str, Any]:
    positive = {"great", "wonderful", "superb", "delightful", "moving", "brilliant"}
    return {"sentiment": "positive" if positive & set(text.split()) else "negative"}


def answered_by(client: openai.OpenAI, text: str) -> str:
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": f"Classify this review:\n\n{text}"}],
        response_format=REQUEST["response_format"],
    )
    return str(raw.headers["x-understudy-answered-by"])


def test_a_student_published_by_one_replica_answers_on_another(tmp_path: Path) -> None:
    with run_fake_teacher(FakeTeacher(keyword_sentiment, seed=1)) as teacher_url:
        shared = {
            "upstream_base_url": teacher_url,
            "database_url": f"sqlite:///{tmp_path / 'shared.db'}",
            "registry_dir": tmp_path / "registry",
            "first_train_labels": 50,
            "student_kinds": ["ngram"],
            "template_min_calls": 10,
            "model_refresh_s": 0.05,
        }
        first = Settings(data_dir=tmp_path / "replica-1", **shared)
        second = Settings(data_dir=tmp_path / "replica-2", **shared)
        rng = random.Random(3)
        with run_gateway(second) as url:
            client = openai.OpenAI(base_url=url, api_key="test", max_retries=0)
            assert {answered_by(client, review(rng)[0]) for _ in range(150)} == {"teacher"}

            # Each replica's worker: the first to take the lock acts, the other stands by.
            acting, standing_by = (
                Worker(first, open_store(first)),
                Worker(second, open_store(second)),
            )
            assert acting.lead() and not standing_by.lead()
            assert "promoted" in [action.what for action in acting.run_once()]
            (version,) = [p.name for p in (tmp_path / "registry" / "review").iterdir()]
            assert not (tmp_path / "replica-1" / "models").exists()

            acting.store.set_mode("review", Mode.STUDENT, "test: the student answers everything")
            deadline = time.monotonic() + 20
            while answered_by(client, review(rng)[0]) != "student":
                assert time.monotonic() < deadline, f"replica 2 never served {version}"
                time.sleep(0.05)
            acting.worker_lock.release()

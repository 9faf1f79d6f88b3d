"""A seeded store with one task's traffic history, and the gateway app over it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from dashboard_support import END, seed_history
from fastapi.testclient import TestClient

from understudy.dashboard.sample import SeededCall, sentiment_spec
from understudy.gateway import create_app
from understudy.settings import Settings
from understudy.store import Store, open_store
from understudy.tasks import Task


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", first_train_labels=100)


@pytest.fixture()
def store(settings: Settings) -> Iterator[Store]:
    opened = open_store(settings)
    yield opened
    opened.close()


@pytest.fixture()
def task(store: Store) -> Task:
    return store.register_task(sentiment_spec())


@pytest.fixture()
def seeded(store: Store, task: Task) -> list[SeededCall]:
    return seed_history(store, task, END)


@pytest.fixture()
def client(settings: Settings, store: Store, seeded: list[SeededCall]) -> Iterator[TestClient]:
    with TestClient(create_app(settings, store)) as test_client:
        yield test_client

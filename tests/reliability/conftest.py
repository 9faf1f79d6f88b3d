"""A fake teacher per module, and settings with an empty database per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from reliability_support import label_fn

from understudy.settings import Settings
from understudy.testing.fake_teacher import FakeTeacher, run_fake_teacher


@pytest.fixture(scope="module")
def teacher() -> FakeTeacher:
    return FakeTeacher(label_fn, seed=11)


@pytest.fixture(autouse=True)
def _reset_teacher(teacher: FakeTeacher) -> Iterator[None]:
    yield
    teacher.fail_status, teacher.malformed, teacher.latency_ms = None, False, 0.0
    teacher.fail_next, teacher.retry_after_s, teacher.reset_connections = 0, None, False
    teacher.requests.clear()
    teacher.headers.clear()


@pytest.fixture(scope="module")
def teacher_url(teacher: FakeTeacher) -> Iterator[str]:
    with run_fake_teacher(teacher) as url:
        yield url


@pytest.fixture()
def settings(teacher_url: str, tmp_path: Path) -> Settings:
    """Fast-reacting settings: no key cache, short backoffs, a short breaker cool-down."""
    return Settings(
        upstream_base_url=teacher_url,
        upstream_timeout_s=5.0,
        data_dir=tmp_path / "data",
        auth_cache_ttl_s=0.0,
        upstream_backoff_base_s=0.01,
        upstream_backoff_max_s=0.05,
        breaker_cooldown_s=0.5,
        start_worker=False,
    )

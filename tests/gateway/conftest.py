"""One fake teacher and one gateway per test module (starting servers dominates test time)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from gateway_support import MAX_BODY_BYTES, label_fn

from understudy.settings import Settings
from understudy.store import Store, open_store
from understudy.testing.fake_teacher import FakeTeacher, run_fake_teacher
from understudy.testing.gateway import run_gateway


@pytest.fixture(scope="module")
def teacher() -> FakeTeacher:
    return FakeTeacher(label_fn, logprobs=True, seed=7)


@pytest.fixture(autouse=True)
def _reset_teacher_faults(teacher: FakeTeacher) -> Iterator[None]:
    yield
    teacher.fail_status, teacher.malformed, teacher.latency_ms, teacher.error_rate = (
        None,
        False,
        0.0,
        0.0,
    )


@pytest.fixture(scope="module")
def teacher_url(teacher: FakeTeacher) -> Iterator[str]:
    with run_fake_teacher(teacher) as url:
        yield url


@pytest.fixture(scope="module")
def settings(teacher_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        upstream_base_url=teacher_url,
        upstream_timeout_s=5.0,
        data_dir=tmp_path_factory.mktemp("gateway") / "data",
        max_body_bytes=MAX_BODY_BYTES,
        template_min_calls=5,
    )


@pytest.fixture(scope="module")
def gateway_url(settings: Settings) -> Iterator[str]:
    with run_gateway(settings) as url:
        yield url


@pytest.fixture(scope="module")
def store(settings: Settings, gateway_url: str) -> Store:
    """A second connection to the gateway's database, for assertions."""
    return open_store(settings)


@pytest.fixture()
def fresh_settings(teacher_url: str, tmp_path: Path) -> Settings:
    """Settings with their own empty database, for tests that start their own gateway."""
    return Settings(upstream_base_url=teacher_url, data_dir=tmp_path / "data")

"""A bounded fuzz run against a local gateway (``bench/fuzz.py``): 500 malformed requests in
the default suite, 10,000 with ``-m reliability``. No 5xx but the documented upstream ones (502,
503, 504), no dropped connection, and the gateway healthy afterwards."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH_FUZZ = Path(__file__).parents[2] / "bench" / "fuzz.py"


def _fuzz_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("understudy_bench_fuzz", BENCH_FUZZ)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being created
    spec.loader.exec_module(module)
    return module


def _check(count: int, seed: int, data_dir: Path) -> None:
    report = _fuzz_module().fuzz_gateway(count, seed, data_dir, concurrency=4)
    assert report.unexpected == []
    assert report.transport_errors == []
    assert report.healthy_after
    assert sum(report.statuses.values()) == count
    # The run reached the handlers: both rejections and real answers happened.
    assert report.statuses[400] > 0 and report.statuses[200] > 0


def test_500_malformed_requests_get_no_server_error(tmp_path: Path) -> None:
    _check(500, seed=1, data_dir=tmp_path / "data")


@pytest.mark.reliability
def test_10000_malformed_requests_get_no_server_error(tmp_path: Path) -> None:
    _check(10_000, seed=2, data_dir=tmp_path / "data")

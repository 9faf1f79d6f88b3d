"""``understudy worker`` as its own process: it yields the CPU to the gateway's students."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.skipif(not hasattr(os, "nice"), reason="niceness is POSIX")
def test_the_worker_lowers_its_own_priority(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "UNDERSTUDY_DATA_DIR": str(tmp_path),
        "UNDERSTUDY_WORKER_NICE": "7",
        "UNDERSTUDY_LOG_LEVEL": "info",
    }
    done = subprocess.run(
        [sys.executable, "-m", "understudy", "worker", "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    expected = min(19, os.nice(0) + 7)
    assert f"niceness {expected}" in done.stderr

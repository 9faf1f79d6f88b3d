"""Constants and seeding shared by the dashboard tests (a uniquely named module: every test folder
has its own ``conftest``, so ``from conftest import ...`` could pick up another folder's)."""

from __future__ import annotations

from datetime import UTC, datetime

from understudy.dashboard.sample import SeededCall, seed_student_run, seed_traffic
from understudy.store import Store
from understudy.tasks import Task

# Seeded history ends here, so time-bucketed assertions do not depend on the clock.
END = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
N_CALLS = 400


def seed_history(store: Store, task: Task, end: datetime | None) -> list[SeededCall]:
    """``N_CALLS`` calls of ``task`` ending at ``end`` (None: now) and a promoted student v1."""
    calls = seed_traffic(store, task, N_CALLS, seed=3, end=end)
    seed_student_run(store, task, "v1", threshold=0.8)
    return calls

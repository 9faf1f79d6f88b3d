"""Constants shared by the dashboard tests (a uniquely named module: every test folder has its own
``conftest``, so ``from conftest import ...`` could pick up another folder's)."""

from __future__ import annotations

from datetime import UTC, datetime

# Seeded history ends here, so time-bucketed assertions do not depend on the clock.
END = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
N_CALLS = 400

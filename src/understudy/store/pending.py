"""Which reads wait for the calls this process has journaled but not yet committed.

Every connection an understudy engine hands out first waits for the pending calls (see
``understudy.store.call_log``), so a reader sees every call that was answered. Two kinds of read
skip the wait: the call log's own writer (it would wait for itself), and reads that never look at
calls, such as a task's mode or the API keys, which the gateway makes on its hot path and must not
stall behind a database that cannot take the calls.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_this_thread = threading.local()


def waits_for_calls() -> bool:
    """Whether reads on this thread wait for the pending calls now."""
    return not getattr(_this_thread, "skip_wait", False)


@contextmanager
def without_waiting_for_calls() -> Iterator[None]:
    """Connections taken on this thread inside the block do not wait for pending calls."""
    previous = getattr(_this_thread, "skip_wait", False)
    _this_thread.skip_wait = True
    try:
        yield
    finally:
        _this_thread.skip_wait = previous

"""The gateway's serving students: one per task, loaded off the event loop, hot-swapped.

The worker publishes a new student version by writing the task's ``serving_version`` in the store.
``StudentPool.current`` notices the change (it re-reads task states at most every
``model_refresh_s`` seconds), loads the new version in a thread while the old one keeps answering,
then swaps the reference; requests already inside the old student's batcher finish there.

Only a task's first call waits for its state to be read. After that a call never waits on the
database: a stale state is answered from the cache while one background read refreshes it, so a
slow or failing database (whose reads first wait for the call log, see
``understudy.store.call_log``) does not slow answers down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import anyio

from understudy.routing.modes import Mode
from understudy.serving.batcher import MicroBatcher
from understudy.serving.registry import ModelRegistry
from understudy.serving.student import Student
from understudy.store import Store, TaskState
from understudy.tasks import Task

logger = logging.getLogger(__name__)

# Seconds a replaced student keeps its batcher open, so requests that picked it up just before
# the swap still get their answer from it.
RETIRE_GRACE_S = 5.0
# Seconds before a student version that failed to load is tried again (a shared registry that
# was briefly unreachable, a load that ran out of memory); the previous student answers meanwhile.
LOAD_RETRY_S = 60.0


@dataclass(frozen=True)
class ServingStudent:
    """A loaded student version and the batcher that feeds it."""

    version: str
    student: Student
    batcher: MicroBatcher


class StudentPool:
    """Task states (cached) and serving students of every task the gateway has seen."""

    def __init__(
        self,
        store: Store,
        registry: ModelRegistry,
        *,
        refresh_s: float,
        max_batch: int,
        max_wait_ms: float,
    ) -> None:
        self.store = store
        self.registry = registry
        self.refresh_s = refresh_s
        self.max_batch = max_batch
        self.max_wait_ms = max_wait_ms
        self._states: dict[tuple[str, int], tuple[TaskState, float]] = {}
        self._refreshing: dict[tuple[str, int], asyncio.Task[TaskState]] = {}
        # Keyed by task version: while clients on an old schema still call, its task version
        # keeps answering with its own student, whose heads match that schema.
        self._serving: dict[tuple[str, int], ServingStudent] = {}
        self._loading: dict[tuple[str, int], asyncio.Task[None]] = {}
        # (task key, task version, student version) -> when its load last failed (monotonic s).
        self._failed: dict[tuple[str, int, str], float] = {}
        self._retiring: set[asyncio.Task[None]] = set()

    async def state(self, task: Task) -> TaskState:
        """The task version's state. The first call reads it from the store; later calls get
        the cached state, which a background read refreshes once it is ``refresh_s`` old."""
        key = (task.key, task.version)
        cached = self._states.get(key)
        if cached is None:
            return await self._read_state(task)
        state, read_at = cached
        if time.monotonic() - read_at >= self.refresh_s and key not in self._refreshing:
            refresh = asyncio.get_running_loop().create_task(
                self._read_state(task), name=f"refresh-state-{task.key}"
            )
            self._refreshing[key] = refresh
            refresh.add_done_callback(lambda done: self._refreshed(key, done))
        return state

    def _refreshed(self, key: tuple[str, int], done: asyncio.Task[TaskState]) -> None:
        if self._refreshing.get(key) is done:
            del self._refreshing[key]

    async def _read_state(self, task: Task) -> TaskState:
        key = (task.key, task.version)
        try:
            state = await anyio.to_thread.run_sync(self.store.task_state, task.key, task.version)
        except Exception:
            cached = self._states.get(key)
            if cached is None:
                raise
            # Keep serving the known state; the next refresh is due in ``refresh_s``.
            logger.exception("task %s: could not re-read its state; keeping the last", task.key)
            self._states[key] = (cached[0], time.monotonic())
            return cached[0]
        self._states[key] = (state, time.monotonic())
        return state

    def forget_state(self, task_key: str, task_version: int) -> None:
        """Drop the cached state so the next call re-reads it (after a change made through this
        gateway: the admin API, the dashboard); a background read already under way is dropped
        too, as it may predate the change."""
        key = (task_key, task_version)
        self._states.pop(key, None)
        refreshing = self._refreshing.pop(key, None)
        if refreshing is not None:
            refreshing.cancel()

    async def current(self, state: TaskState) -> ServingStudent | None:
        """The student serving this task version now, starting a background load when a newer
        serving version was published. Returns the previous student (or None) until the load is
        done."""
        task = (state.key, state.version)
        serving = self._serving.get(task)
        wanted = state.serving_version
        if wanted is None:
            return None
        failed_at = self._failed.get((*task, wanted))
        retry = failed_at is None or time.monotonic() - failed_at >= LOAD_RETRY_S
        if (serving is None or serving.version != wanted) and retry:
            loading = self._loading.get(task)
            if loading is None or loading.done():
                self._loading[task] = asyncio.get_running_loop().create_task(
                    self._load(task, wanted), name=f"load-student-{state.key}"
                )
        return serving

    async def wait_loaded(self, state: TaskState) -> ServingStudent | None:
        """Like ``current``, but when no student of this task version is loaded yet, waits for
        its load (the first call after start-up). While a newer version loads, the loaded one
        answers, as in ``current``."""
        serving = await self.current(state)
        loading = self._loading.get((state.key, state.version))
        if serving is None and loading is not None:
            await loading
        return self._serving.get((state.key, state.version))

    async def _load(self, task: tuple[str, int], version: str) -> None:
        task_key, task_version = task
        try:
            student = await anyio.to_thread.run_sync(self.registry.load, task_key, version)
        except Exception:
            # A broken artifact must not take the task down: keep the old student, log, and try
            # this version again only after LOAD_RETRY_S.
            logger.exception(
                "task %s (version %d): could not load student %s; keeping the old one, trying "
                "again in %.0f s",
                task_key,
                task_version,
                version,
                LOAD_RETRY_S,
            )
            self._failed[(task_key, task_version, version)] = time.monotonic()
            return
        batcher = MicroBatcher(student, max_batch=self.max_batch, max_wait_ms=self.max_wait_ms)
        old = self._serving.get(task)
        self._serving[task] = ServingStudent(version, student, batcher)
        logger.info("task %s (version %d): now serving student %s", task_key, task_version, version)
        if old is not None:
            # Retired in a task of its own: whoever waits for this load must not wait out the
            # old student's grace as well.
            retiring = asyncio.get_running_loop().create_task(self._retire(old))
            self._retiring.add(retiring)
            retiring.add_done_callback(self._retiring.discard)

    @staticmethod
    async def _retire(old: ServingStudent) -> None:
        try:
            await asyncio.sleep(RETIRE_GRACE_S)
        finally:
            await old.batcher.close()

    async def warm_up(self) -> None:
        """Start loading the serving student of every task version that answers with one
        (cascade or student mode), so the first calls after start-up are not sent to the teacher
        while it loads. A failure is logged: calls then load students as they come."""
        try:
            versions = await anyio.to_thread.run_sync(
                lambda: [*self.store.latest_tasks(), *self.store.older_answering_tasks()]
            )
        except Exception:
            logger.exception("could not read the tasks to load their students ahead of calls")
            return
        for task, state in versions:
            if state.mode in (Mode.CASCADE, Mode.STUDENT) and task.student_can_answer:
                await self.current(state)

    async def close(self) -> None:
        """Stop pending loads and state reads, and every batcher."""
        for pending in [*self._loading.values(), *self._refreshing.values(), *self._retiring]:
            pending.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        for serving in self._serving.values():
            await serving.batcher.close()
        self._serving.clear()

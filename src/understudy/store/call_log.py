"""``CallLog``: the gateway's write-behind log of calls.

A call is appended to a journal file before its answer leaves, and committed to the database by
one writer thread, in batches. Committing on the answer's path cost about 1 ms for the SQLite
transaction (a row, its labels and their indexes) plus a thread hop, most of the latency the
gateway added; appending one line to a file costs tens of microseconds. It is as durable: once
``write()`` returns the bytes are in the OS page cache, so a killed process loses nothing, and
only an OS crash can lose the last calls, exactly as with SQLite's WAL at ``synchronous=NORMAL``.

The journal is a set of segments ``calls-<pid>-<token>.jsonl`` in one directory, one JSON line
per call, each segment held under an exclusive ``flock`` by the process writing it. A segment
rolls over at ``SEGMENT_BYTES`` and is deleted once all its calls are committed. At start-up,
segments no live process holds (left by a killed gateway) are replayed into the database
(``Store.record_calls`` skips calls already logged) and deleted.

Reads in this process see every call it answered: each connection an understudy engine takes
from its pool first waits (up to ``FLUSH_TIMEOUT_S``) for the calls pending for that database
(``wait_for_pending_calls``), so the feedback API, audits, the dashboard and a second ``Store`` on
the same database never miss a call the gateway has answered. Other processes (the worker,
other replicas) see a call once it commits, typically within a millisecond or two.

A call the database rejects (not a transient failure such as a lock or a lost connection, which
is retried with backoff) goes to ``rejected.jsonl`` in the journal directory, with the error and
a log line; nothing is dropped silently.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from understudy.errors import CallNotLogged, UnknownTask
from understudy.store import tables as t
from understudy.store.pending import waits_for_calls, without_waiting_for_calls
from understudy.store.records import CallKind, CallRecord
from understudy.store.repository import Store
from understudy.tasks import LabelSource, Task

logger = logging.getLogger(__name__)

SEGMENT_BYTES = 8 * 1024 * 1024  # a segment rolls over at this size (bytes)
MAX_BATCH = 256  # calls committed in one transaction at most
FLUSH_TIMEOUT_S = 10.0  # how long a reader waits for pending calls before reading anyway
RETRY_MIN_S, RETRY_MAX_S = 0.05, 5.0  # backoff between attempts while the database fails
REJECTED_FILE = "rejected.jsonl"
_SEGMENT_GLOB = "calls-*.jsonl"
# Failures worth retrying: the database is locked, busy, restarting or out of connections.
_TRANSIENT = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError)

# The call logs of this process by database URL.
_open_logs: dict[str, list[CallLog]] = {}
_open_logs_lock = threading.Lock()


def wait_for_pending_calls(database_url: str) -> None:
    """Wait until the calls this process has journaled for ``database_url`` are committed (at
    most ``FLUSH_TIMEOUT_S`` per log; then log a warning and go on). Every understudy engine
    calls this before handing out a connection, unless the thread reads
    ``without_waiting_for_calls``."""
    if not waits_for_calls():
        return
    with _open_logs_lock:
        logs = list(_open_logs.get(database_url, ()))
    for log in logs:
        if log.pending and not log.flush():
            logger.warning(
                "reading with %d calls not yet committed (the database keeps failing)",
                log.pending,
            )


def encode_call(record: CallRecord) -> bytes:
    """One journal line (with its newline) for ``record``; its task is named by key and
    version. ASCII-escaped JSON, so any text the call held survives the round trip."""
    entry: dict[str, Any] = {f.name: getattr(record, f.name) for f in fields(record)}
    entry["task"] = None if record.task is None else [record.task.key, record.task.version]
    entry["kind"] = record.kind.value
    entry["label_source"] = None if record.label_source is None else record.label_source.value
    entry["created_at"] = None if record.created_at is None else record.created_at.isoformat()
    return json.dumps(entry, separators=(",", ":")).encode() + b"\n"


def decode_call(line: bytes, task_of: dict[tuple[str, int], Task], store: Store) -> CallRecord:
    """The record a journal line holds; raises ``ValueError`` for a torn or foreign line and
    ``UnknownTask`` when its task no longer exists."""
    entry = json.loads(line)
    if not isinstance(entry, dict) or "id" not in entry:
        raise ValueError("not a journaled call")
    task = None
    if entry["task"] is not None:
        key, version = str(entry["task"][0]), int(entry["task"][1])
        if (key, version) not in task_of:
            task_of[key, version] = store.get_task(key, version)
        task = task_of[key, version]
    source = entry["label_source"]
    created = entry["created_at"]
    return CallRecord(
        **{
            **entry,
            "task": task,
            "kind": CallKind(entry["kind"]),
            "label_source": None if source is None else LabelSource(source),
            "created_at": None if created is None else datetime.fromisoformat(created),
        }
    )


@dataclass
class _Segment:
    """A journal segment this process appends to (or has closed), with the sequence number of
    the last call written to it."""

    path: Path
    fd: int
    size: int = 0
    last_seq: int = 0
    closed: bool = False


class CallLog:
    """Write-behind logging of calls into ``store`` through a journal in ``directory``.

    ``submit`` returns once the call is journaled; a writer thread commits it. ``close`` commits
    what is pending and stops the thread. Construction replays journals left by killed
    processes first (see the module docstring).
    """

    def __init__(self, store: Store, directory: Path) -> None:
        self.store = store
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        replay_orphans(store, directory)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._queue: deque[tuple[int, CallRecord]] = deque()
        self._submitted = 0
        self._committed = 0
        self._segments: list[_Segment] = []
        self._closing = False
        self._thread = threading.Thread(target=self._write_loop, name="call-log", daemon=True)
        self._url = str(store.engine.url)
        with _open_logs_lock:
            _open_logs.setdefault(self._url, []).append(self)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Calls journaled but not yet committed."""
        return len(self._queue)

    def submit(self, record: CallRecord) -> None:
        """Journal ``record`` (its ``created_at`` fixed now) and queue it for the writer.

        Raises ``CallNotLogged`` when the journal cannot be written (e.g. a full disk): the
        caller must not answer the call then (the error renders as a 503).
        """
        if record.created_at is None:
            record = replace(record, created_at=t.utcnow())
        line = encode_call(record)
        with self._lock:
            if self._closing:
                raise RuntimeError("the call log is closed")
            segment: _Segment | None = None
            try:
                segment = self._segment_for(len(line))
                _write_all(segment.fd, line)
            except OSError as error:
                if segment is not None:  # a torn line may end it: the next call starts a new one
                    segment.closed = True
                logger.error(
                    "call %s not answered: writing the journal in %s failed: %s",
                    record.id,
                    self.directory,
                    error,
                )
                raise CallNotLogged(
                    f"the gateway could not record this call ({error.strerror or error}), so it "
                    "does not answer it; retry later"
                ) from error
            self._submitted += 1
            segment.size += len(line)
            segment.last_seq = self._submitted
            self._queue.append((self._submitted, record))
            self._changed.notify_all()

    def flush(self, timeout_s: float | None = FLUSH_TIMEOUT_S) -> bool:
        """Wait until every call submitted so far is committed; False if ``timeout_s`` passed
        first (the database keeps failing)."""
        if threading.get_ident() == self._thread.ident:
            return True
        with self._lock:
            target = self._submitted
            return self._changed.wait_for(lambda: self._committed >= target, timeout_s)

    def close(self) -> None:
        """Commit what is pending, stop the writer and remove the committed journal. Calls that
        could not be committed stay journaled for the next start."""
        with self._lock:
            self._closing = True
            self._changed.notify_all()
        self._thread.join()
        with _open_logs_lock:
            _open_logs[self._url].remove(self)
        with self._lock:
            for segment in self._segments:
                os.close(segment.fd)  # releases the flock: a later start replays what is left
                if segment.last_seq <= self._committed:
                    segment.path.unlink(missing_ok=True)
            self._segments.clear()
        if self._queue:
            logger.error(
                "call log closed with %d calls not committed; they stay journaled in %s and "
                "are replayed at the next start",
                len(self._queue),
                self.directory,
            )

    # --- the submitting side (holds the lock) --------------------------------------------

    def _segment_for(self, size: int) -> _Segment:
        current = self._segments[-1] if self._segments else None
        if current is None or current.closed or current.size + size > SEGMENT_BYTES:
            if current is not None:
                current.closed = True
            current = _open_segment(self.directory)
            self._segments.append(current)
        return current

    # --- the writer thread ---------------------------------------------------------------

    def _write_loop(self) -> None:
        # A writer never waits for another log's writes: two logs on one database would wait
        # for each other.
        with without_waiting_for_calls():
            self._write_batches()

    def _write_batches(self) -> None:
        wait_s = RETRY_MIN_S
        while True:
            with self._lock:
                self._changed.wait_for(lambda: bool(self._queue) or self._closing)
                if not self._queue:
                    return
                batch = [self._queue[i] for i in range(min(len(self._queue), MAX_BATCH))]
            try:
                # After a failure the batch may have committed all the same (a connection lost
                # on COMMIT): then calls already logged are skipped, not rejected as duplicates.
                self._commit([record for _, record in batch], retry=wait_s > RETRY_MIN_S)
            except Exception as error:
                # Transient database failures, and anything unexpected (e.g. the rejected file
                # cannot be written): the batch stays queued and journaled, and is tried again.
                if isinstance(error, _TRANSIENT):
                    logger.warning("committing %d calls failed, retrying: %s", len(batch), error)
                else:
                    logger.exception("committing %d calls failed, retrying", len(batch))
                with self._lock:
                    # Woken early only by close(); it retries once more before giving up.
                    closing = self._closing
                    self._changed.wait(wait_s)
                if closing:
                    return
                wait_s = min(wait_s * 2, RETRY_MAX_S)  # > RETRY_MIN_S: the next try is a retry
                continue
            wait_s = RETRY_MIN_S
            with self._lock:
                for _ in batch:
                    self._queue.popleft()
                self._committed = batch[-1][0]
                self._drop_committed_segments()
                self._changed.notify_all()

    def _commit(self, records: list[CallRecord], *, retry: bool) -> None:
        """Commit ``records`` (skipping calls already logged when ``retry``); one the database
        rejects goes to the rejected file, and the others are committed without it. Transient
        failures propagate (the caller retries)."""
        try:
            self.store.record_calls(records, skip_logged=retry)
        except _TRANSIENT:
            raise
        except Exception as error:
            if len(records) > 1:
                for record in records:
                    self._commit([record], retry=True)
                return
            self._reject(records[0], error)

    def _reject(self, record: CallRecord, error: Exception) -> None:
        logger.error(
            "call %s was rejected by the database, kept in %s: %s", record.id, REJECTED_FILE, error
        )
        keep_rejected(self.directory, encode_call(record), str(error))

    def _drop_committed_segments(self) -> None:
        for segment in [s for s in self._segments if s.closed and s.last_seq <= self._committed]:
            os.close(segment.fd)
            segment.path.unlink(missing_ok=True)
            self._segments.remove(segment)


def keep_rejected(directory: Path, line: bytes, reason: str) -> None:
    """Append a journal line that could not be committed to ``rejected.jsonl``, with why, for
    a person to look at (``{"error": ..., "journal_line": ...}``)."""
    entry = {"error": reason, "journal_line": line.rstrip(b"\n").decode(errors="replace")}
    with (directory / REJECTED_FILE).open("a") as handle:
        handle.write(json.dumps(entry) + "\n")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _open_segment(directory: Path) -> _Segment:
    path = directory / f"calls-{os.getpid()}-{secrets.token_hex(4)}.jsonl"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return _Segment(path, fd)


@contextlib.contextmanager
def _orphan(path: Path) -> Iterator[bool]:
    """Whether ``path`` is a segment no live process holds; held locked while in use."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def orphaned_segments(directory: Path) -> list[Path]:
    """Journal segments in ``directory`` that no live process holds (left by a killed one)."""
    found = []
    for path in sorted(directory.glob(_SEGMENT_GLOB)):
        with _orphan(path) as orphaned:
            if orphaned:
                found.append(path)
    return found


def replay_orphans(store: Store, directory: Path) -> int:
    """Commit the calls of journal segments left by killed processes, delete those segments, and
    return how many calls were new to the database."""
    replayed = 0
    task_of: dict[tuple[str, int], Task] = {}
    for path in sorted(directory.glob(_SEGMENT_GLOB)):
        with _orphan(path) as orphaned:
            if not orphaned:
                continue
            records = []
            for number, line in enumerate(path.read_bytes().splitlines(), start=1):
                try:
                    records.append(decode_call(line, task_of, store))
                except (ValueError, TypeError, UnknownTask) as error:
                    logger.error(
                        "journal %s line %d cannot be replayed, kept in %s: %s",
                        path.name,
                        number,
                        REJECTED_FILE,
                        error,
                    )
                    keep_rejected(directory, line, str(error))
            for start in range(0, len(records), MAX_BATCH):
                batch = records[start : start + MAX_BATCH]
                replayed += store.record_calls(batch, skip_logged=True)
            path.unlink()
    if replayed:
        logger.warning("replayed %d calls journaled by a process that was killed", replayed)
    return replayed

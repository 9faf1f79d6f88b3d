"""Importing existing logs, so a task can start from history instead of from zero.

``understudy import FILE.jsonl`` reads one JSON object per line, in either form:

- an OpenAI chat-completion pair ``{"request": {...}, "response": {...}}``: the task is detected
  from the request exactly as the gateway would, the labels come from the response;
- the simple form ``{"task": "sentiment", "text": "...", "label": "positive"}`` (``label`` may
  also be ``{"field": value, ...}`` for several heads). A task that does not exist yet is created
  with one enum head per field, whose labels are the values seen in the file.

Imported labels have source ``import``. Each line's call id is a hash of its content, so
importing the same file twice adds nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from understudy.errors import UnknownTask
from understudy.gateway.answers import usage_tokens
from understudy.store import CallKind, CallRecord, Store
from understudy.tasks import (
    LabelSource,
    Task,
    TaskSpec,
    answer_object,
    detect_task,
    heads_from_schema,
    parse_labels,
    user_text,
)

SIMPLE_LABEL_FIELD = "label"
"""The head name of a task created from simple rows whose ``label`` is a plain string."""


@dataclass
class ImportReport:
    """What an import did: counts, the tasks it touched and one message per rejected line."""

    imported: int = 0
    duplicates: int = 0
    errors: list[str] = field(default_factory=list)
    tasks: set[str] = field(default_factory=set)


def _call_id(line: str) -> str:
    return "imp-" + hashlib.sha256(line.encode()).hexdigest()[:32]


def _rows(lines: Iterable[str]) -> Iterator[tuple[int, str, Any]]:
    """``(line number, stripped line, parsed JSON or the decode error)`` per non-blank line."""
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped:
            continue
        try:
            yield number, stripped, json.loads(stripped)
        except json.JSONDecodeError as exc:
            yield number, stripped, exc


def _simple_labels(label: Any) -> dict[str, Any]:
    return dict(label) if isinstance(label, dict) else {SIMPLE_LABEL_FIELD: label}


def _schema_for(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """An object schema with one string-enum property per label field seen in ``rows``."""
    values: dict[str, dict[str, None]] = defaultdict(dict)
    for row in rows:
        for name, value in _simple_labels(row["label"]).items():
            values[name][str(value).lower() if isinstance(value, bool) else str(value)] = None
    properties = {name: {"type": "string", "enum": sorted(seen)} for name, seen in values.items()}
    return {
        "type": "object",
        "properties": properties,
        "required": sorted(properties),
        "additionalProperties": False,
    }


class Importer:
    """Imports JSONL rows into a store (see the module docstring for the formats)."""

    def __init__(self, store: Store, task_key: str | None = None) -> None:
        self.store = store
        self.task_key = task_key
        self.report = ImportReport()

    def run(self, lines: Iterable[str]) -> ImportReport:
        """Import every line; bad lines are reported, not fatal."""
        simple: list[tuple[int, str, dict[str, Any]]] = []
        for number, line, row in _rows(lines):
            if isinstance(row, json.JSONDecodeError):
                self.report.errors.append(f"line {number}: not JSON ({row.msg})")
            elif isinstance(row, dict) and isinstance(row.get("request"), dict):
                self._import_pair(number, line, row)
            elif (
                isinstance(row, dict)
                and {"text", "label"} <= set(row)
                and ("task" in row or self.task_key)
            ):
                simple.append((number, line, row))
            else:
                self.report.errors.append(
                    f"line {number}: expected {{request, response}} or {{task, text, label}}"
                )
        self._import_simple(simple)
        return self.report

    def _record(self, number: int, record: CallRecord) -> None:
        if not self.store.record_call(record):
            self.report.duplicates += 1
            return
        self.report.imported += 1
        if record.task is not None:
            self.report.tasks.add(record.task.key)

    def _import_pair(self, number: int, line: str, row: dict[str, Any]) -> None:
        request, response = row["request"], row.get("response")
        spec = detect_task(request, self.task_key)
        if spec is None:
            self.report.errors.append(f"line {number}: request is not a classification call")
            return
        if not isinstance(response, dict):
            self.report.errors.append(f"line {number}: response must be a chat completion object")
            return
        task = self.store.register_task(spec)
        labels = parse_labels(task.heads, answer_object(response))
        if not labels:
            self.report.errors.append(f"line {number}: response holds no valid label")
            return
        text = user_text(request.get("messages"))
        prompt_tokens, completion_tokens = usage_tokens(response)
        record = CallRecord(
            id=_call_id(line),
            kind=CallKind.CLASSIFICATION,
            request=request,
            response=response,
            status_code=200,
            task=task,
            user_text=text,
            input_text=text,
            labels=labels,
            label_source=LabelSource.IMPORT,
            answered_by="teacher",
            teacher_model=str(response.get("model") or request.get("model") or "") or None,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        )
        self._record(number, record)

    def _task_for(self, key: str, rows: list[dict[str, Any]]) -> Task:
        try:
            return self.store.get_task(key)
        except UnknownTask:
            schema = _schema_for(rows)
            heads, free, required_free = heads_from_schema(schema)
            spec = TaskSpec(key, schema, heads, free, required_free)
            return self.store.register_task(spec)

    def _import_simple(self, rows: list[tuple[int, str, dict[str, Any]]]) -> None:
        by_task: dict[str, list[tuple[int, str, dict[str, Any]]]] = defaultdict(list)
        for number, line, row in rows:
            by_task[str(self.task_key or row["task"])].append((number, line, row))
        for key, task_rows in by_task.items():
            task = self._task_for(key, [row for _, _, row in task_rows])
            for number, line, row in task_rows:
                given = _simple_labels(row["label"])
                if not isinstance(row["label"], dict) and len(task.heads) == 1:
                    given = {task.heads[0].name: row["label"]}
                labels = parse_labels(task.heads, given)
                if len(labels) != len(given) or not isinstance(row["text"], str):
                    self.report.errors.append(
                        f"line {number}: labels {given!r} do not fit task {key!r} "
                        f"(heads: {', '.join(h.name for h in task.heads)})"
                    )
                    continue
                record = CallRecord(
                    id=_call_id(line),
                    kind=CallKind.IMPORT,
                    request=None,
                    response=None,
                    status_code=None,
                    task=task,
                    user_text=row["text"],
                    input_text=row["text"],
                    labels=labels,
                    label_source=LabelSource.IMPORT,
                )
                self._record(number, record)


def import_jsonl(store: Store, path: Path, task_key: str | None = None) -> ImportReport:
    """Import a JSONL file into ``store``; ``task_key`` overrides every row's task."""
    with path.open(encoding="utf-8") as lines:
        return Importer(store, task_key).run(lines)

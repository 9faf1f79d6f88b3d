"""Labelled examples from a JSONL file, for training and evaluating without a gateway's store.

Each line is ``{"text": str, "labels": {head: label}}`` with optional ``"source"``
(teacher | human | import), ``"weight"`` and ``"soft_labels"``. Held-out rows are chosen by a hash
of the text, so a file always splits the same way and a text never lands on both sides.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from understudy.errors import InvalidRequest
from understudy.tasks import Example, Head, HeadKind, LabelSource, Task


def read_examples(path: Path) -> list[Example]:
    """Examples from a JSONL file; InvalidRequest naming the line for a malformed row."""
    examples = []
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            labels = {
                str(k): str(v).lower() if isinstance(v, bool) else str(v)
                for k, v in row["labels"].items()
            }
            examples.append(
                Example(
                    text=str(row["text"]),
                    labels=labels,
                    source=LabelSource(row.get("source", "import")),
                    weight=float(row.get("weight", 1.0)),
                    soft_labels=row.get("soft_labels"),
                )
            )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidRequest(f"{path}:{number}: not a labelled example ({exc!r})") from exc
    return examples


def task_from_examples(key: str, examples: list[Example]) -> Task:
    """A task whose heads are the label fields seen in ``examples``, labels sorted; a head whose
    labels are exactly {"false", "true"} is boolean."""
    labels: dict[str, set[str]] = {}
    for example in examples:
        for head, label in example.labels.items():
            labels.setdefault(head, set()).add(label)
    heads = tuple(
        Head(
            name,
            tuple(sorted(values)),
            HeadKind.BOOL if values == {"false", "true"} else HeadKind.ENUM,
        )
        for name, values in sorted(labels.items())
    )
    if not heads:
        raise InvalidRequest("the examples carry no labels")
    return Task(key=key, version=1, schema={}, heads=heads)


def is_heldout(text: str, fraction: float) -> bool:
    """Whether a text belongs to the held-out share ``fraction``, decided by its sha256."""
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def split_by_hash(examples: list[Example], fraction: float) -> tuple[list[Example], list[Example]]:
    """(train, heldout) with ``is_heldout`` deciding each example."""
    heldout = [e for e in examples if is_heldout(e.text, fraction)]
    train = [e for e in examples if not is_heldout(e.text, fraction)]
    return train, heldout

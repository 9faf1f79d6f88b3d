"""What a task is: a classification call's schema turned into label heads.

A *task* is a family of LLM calls that share one structured-output schema. Each enum or boolean
property of the schema becomes a *head* that a student learns; other properties are free text,
which a student cannot produce.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class HeadKind(StrEnum):
    """How a head's value appears in the JSON answer."""

    ENUM = "enum"
    BOOL = "bool"


@dataclass(frozen=True)
class Head:
    """One label field of a task: its name in the schema and its possible values.

    For boolean heads ``labels`` is ``["false", "true"]``; the rendered JSON value is a real
    boolean (see ``json_value``).
    """

    name: str
    labels: tuple[str, ...]
    kind: HeadKind = HeadKind.ENUM

    def json_value(self, label: str) -> Any:
        """The label as it appears in the task's JSON answer (a bool for boolean heads)."""
        if self.kind is HeadKind.BOOL:
            return label == "true"
        return label

    def label_of(self, value: Any) -> str | None:
        """The head's label for a JSON value from an answer, or None if it is not one."""
        if self.kind is HeadKind.BOOL:
            return ("true" if value else "false") if isinstance(value, bool) else None
        return value if isinstance(value, str) and value in self.labels else None


@dataclass(frozen=True)
class Task:
    """A registered task version: its key, schema and the heads a student learns."""

    key: str
    version: int
    schema: dict[str, Any]
    heads: tuple[Head, ...]
    free_text_fields: tuple[str, ...] = ()
    required_free_text_fields: tuple[str, ...] = ()

    @property
    def student_can_answer(self) -> bool:
        """False when the schema requires a free-text field, which a student cannot produce."""
        return not self.required_free_text_fields

    def head(self, name: str) -> Head:
        """The head called ``name``; KeyError if the task has none."""
        for head in self.heads:
            if head.name == name:
                return head
        raise KeyError(name)


class LabelSource(StrEnum):
    """Where a label came from; human labels override teacher labels for the same call."""

    TEACHER = "teacher"
    HUMAN = "human"
    IMPORT = "import"


@dataclass(frozen=True)
class Example:
    """One training or evaluation example for a task.

    ``labels`` maps head name to label. ``soft_labels`` (optional) maps head name to a probability
    distribution over that head's labels, from the teacher's logprobs.
    """

    text: str
    labels: dict[str, str]
    source: LabelSource = LabelSource.TEACHER
    weight: float = 1.0
    soft_labels: dict[str, dict[str, float]] | None = None
    call_id: str | None = None


@dataclass(frozen=True)
class Prediction:
    """A student's answer: a label per head with calibrated probabilities.

    ``confidence`` is the smallest top-label probability over heads, in [0, 1].
    """

    labels: dict[str, str]
    probs: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def confidence(self) -> float:
        """Minimum over heads of the chosen label's probability (1.0 with no heads)."""
        if not self.probs:
            return 1.0
        return min(self.probs[head][label] for head, label in self.labels.items())


# --- detection: which calls are classification calls, and what their heads are ---------------

TASK_HEADER = "x-understudy-task"
"""Request header that overrides the task key taken from the schema or function name."""


class AnswerVia(StrEnum):
    """Where the teacher puts a classification answer in its completion."""

    RESPONSE_FORMAT = "response_format"  # message content is the JSON object
    TOOL = "tool"  # the single forced tool call's arguments are the JSON object


@dataclass(frozen=True)
class TaskSpec:
    """A task as detected in one request, before the store assigns it a version."""

    key: str
    schema: dict[str, Any]
    heads: tuple[Head, ...]
    free_text_fields: tuple[str, ...]
    required_free_text_fields: tuple[str, ...]
    via: AnswerVia = AnswerVia.RESPONSE_FORMAT

    @property
    def fingerprint(self) -> str:
        """Stable hash of the schema: a changed schema means a new task version."""
        return schema_fingerprint(self.schema)


def schema_fingerprint(schema: dict[str, Any]) -> str:
    """SHA-256 (hex) of the schema's canonical JSON (sorted keys, no whitespace)."""
    canonical = json.dumps(schema, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _resolve_ref(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow local ``$ref`` pointers (``#/$defs/X``), as pydantic-generated schemas use."""
    seen = 0
    while "$ref" in node and isinstance(node["$ref"], str) and node["$ref"].startswith("#/"):
        target: Any = schema
        for part in node["$ref"][2:].split("/"):
            target = target.get(part) if isinstance(target, dict) else None
        if not isinstance(target, dict):
            return node
        node = target
        seen += 1
        if seen > 32:  # a cyclic reference; treat the field as free text
            return node
    # pydantic renders an enum field with a default as {"allOf": [{"$ref": ...}]}
    all_of = node.get("allOf")
    if isinstance(all_of, list) and len(all_of) == 1 and isinstance(all_of[0], dict):
        return _resolve_ref(schema, all_of[0])
    return node


def _head_of(name: str, node: dict[str, Any]) -> Head | None:
    """The head for one property, or None when the property is not a closed label set."""
    enum = node.get("enum")
    if isinstance(enum, list) and enum and all(isinstance(v, str) for v in enum):
        return Head(name=name, labels=tuple(dict.fromkeys(enum)), kind=HeadKind.ENUM)
    const = node.get("const")
    if isinstance(const, str):
        return Head(name=name, labels=(const,), kind=HeadKind.ENUM)
    if node.get("type") == "boolean":
        return Head(name=name, labels=("false", "true"), kind=HeadKind.BOOL)
    return None


def heads_from_schema(
    schema: dict[str, Any],
) -> tuple[tuple[Head, ...], tuple[str, ...], tuple[str, ...]]:
    """Split an object schema's top-level properties into heads and free-text fields.

    Returns ``(heads, free_text_fields, required_free_text_fields)``. A head is a property whose
    values form a closed set (a string enum, a string const, or a boolean); every other property
    is free text, which a student cannot produce.
    """
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return (), (), ()
    required = schema.get("required")
    # Only string names count; anything else in a malformed ``required`` is ignored (not a 500).
    required_names = (
        {name for name in required if isinstance(name, str)}
        if isinstance(required, list)
        else set()
    )
    heads: list[Head] = []
    free: list[str] = []
    for name, raw in properties.items():
        node = _resolve_ref(schema, raw) if isinstance(raw, dict) else {}
        head = _head_of(str(name), node)
        if head is None:
            free.append(str(name))
        else:
            heads.append(head)
    required_free = tuple(name for name in free if name in required_names)
    return tuple(heads), tuple(free), required_free


def _forced_function(request: dict[str, Any]) -> dict[str, Any] | None:
    """The function definition a request forces the model to call, if there is exactly one."""
    tools = request.get("tools")
    if not isinstance(tools, list) or not tools:
        return None
    functions: list[dict[str, Any]] = [
        t["function"]
        for t in tools
        if isinstance(t, dict)
        and t.get("type") == "function"
        and isinstance(t.get("function"), dict)
    ]
    choice = request.get("tool_choice")
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        wanted = choice["function"].get("name")
        matches = [f for f in functions if f.get("name") == wanted]
        return matches[0] if len(matches) == 1 else None
    if choice == "required" and len(functions) == 1:
        return functions[0]
    return None


def detect_task(request: dict[str, Any], task_header: str | None = None) -> TaskSpec | None:
    """The task a chat-completion request belongs to, or None if it is not a classification call.

    A classification call asks for a ``json_schema`` response format (or forces a single function
    call) whose object schema has at least one enum or boolean property. The task key is the
    schema's (or function's) ``name``; ``task_header`` (from ``x-understudy-task``) overrides it.
    """
    schema: Any = None
    name: Any = None
    via = AnswerVia.RESPONSE_FORMAT
    response_format = request.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        spec = response_format.get("json_schema")
        if isinstance(spec, dict):
            schema, name = spec.get("schema"), spec.get("name")
    else:
        function = _forced_function(request)
        if function is not None:
            schema, name, via = function.get("parameters"), function.get("name"), AnswerVia.TOOL
    if not isinstance(schema, dict):
        return None
    heads, free, required_free = heads_from_schema(schema)
    if not heads:
        return None
    key = task_header or (name if isinstance(name, str) and name else None)
    if key is None:
        key = f"schema-{schema_fingerprint(schema)[:12]}"
    return TaskSpec(
        key=key,
        schema=schema,
        heads=heads,
        free_text_fields=free,
        required_free_text_fields=required_free,
        via=via,
    )


# --- answers: the teacher's JSON object turned into labels ------------------------------------


def answer_object(response: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON object a chat completion answers with: the first choice's forced tool call's
    arguments if any, else its message content; None if there is no parseable object."""
    choices = response.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    message = choices[0].get("message")
    if not isinstance(message, dict):
        return None
    tool_calls = message.get("tool_calls")
    raw: Any = message.get("content")
    if isinstance(tool_calls, list) and tool_calls and isinstance(tool_calls[0], dict):
        function = tool_calls[0].get("function")
        if isinstance(function, dict):
            raw = function.get("arguments")
    if not isinstance(raw, str):
        return None
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def parse_labels(heads: tuple[Head, ...], answer: dict[str, Any] | None) -> dict[str, str]:
    """Labels per head from an answer object; heads with a missing or invalid value are left out."""
    if answer is None:
        return {}
    labels: dict[str, str] = {}
    for head in heads:
        label = head.label_of(answer.get(head.name))
        if label is not None:
            labels[head.name] = label
    return labels


# --- input extraction: what the student reads --------------------------------------------------


def user_text(messages: Any) -> str:
    """The text of all user messages, joined by a blank line (text parts of multi-part content)."""
    if not isinstance(messages, list):
        return ""
    parts: list[str] = []
    for message in messages:
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(
                str(p.get("text", ""))
                for p in content
                if isinstance(p, dict) and p.get("type") == "text"
            )
    return "\n\n".join(parts)


def extract_input(text: str, prefix: str | None, suffix: str | None) -> str:
    """The varying part of a user text: the task's learned template prefix/suffix stripped.

    A template part is only stripped when the text really carries it, so a call that deviates
    from the template keeps its full text.
    """
    if prefix and text.startswith(prefix):
        text = text[len(prefix) :]
    if suffix and text.endswith(suffix) and len(text) > len(suffix):
        text = text[: -len(suffix)]
    return text.strip()

"""Property tests of the parsers every request goes through: arbitrary JSON never makes them
raise, and what they return keeps its promises. Feedback validation accepts exactly the
schema's labels."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from understudy.errors import InvalidRequest, UnknownRequest
from understudy.settings import Settings
from understudy.store import CallKind, CallRecord, Store, open_store
from understudy.tasks import (
    HeadKind,
    detect_task,
    extract_input,
    heads_from_schema,
    user_text,
)

# Text with the awkward parts of Unicode: lone surrogates, NUL, combining marks, RTL, emoji.
awkward_text = st.text(
    st.characters(codec=None, categories=None, exclude_characters=()), max_size=40
) | st.sampled_from(["", "\x00", "\ud800", "e\u0301", "\u202eabc", "👍🏽", "\ufeff", " \n\t"])
json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | awkward_text
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(awkward_text, children, max_size=4)
    ),
    max_leaves=20,
)
# Schema-shaped values: the keys the parsers look at, with arbitrary contents.
schema_nodes = st.recursive(
    st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(["string", "boolean", "object", "number"]) | json_scalars,
            "enum": st.lists(awkward_text | json_scalars, max_size=4) | json_values,
            "const": json_scalars,
            "$ref": st.sampled_from(["#/$defs/A", "#/$defs/B", "#/", "#/nope/x"]) | json_scalars,
        },
    ),
    lambda children: st.fixed_dictionaries(
        {},
        optional={
            "properties": st.dictionaries(awkward_text, children, max_size=4) | json_values,
            "required": st.lists(awkward_text | json_values, max_size=3) | json_values,
            "allOf": st.lists(children, max_size=2),
            "$defs": st.dictionaries(st.sampled_from(["A", "B"]), children, max_size=2),
        },
    ),
    max_leaves=10,
)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "assistant"]) | json_scalars},
        optional={
            "content": awkward_text
            | json_values
            | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": json_scalars}))
        },
    )
    | json_values,
    max_size=4,
)
requests = st.fixed_dictionaries(
    {},
    optional={
        "messages": messages,
        "response_format": st.fixed_dictionaries(
            {"type": st.just("json_schema") | json_scalars},
            optional={
                "json_schema": st.fixed_dictionaries(
                    {}, optional={"name": json_scalars, "schema": schema_nodes | json_values}
                )
            },
        )
        | json_values,
        "tools": st.lists(
            st.fixed_dictionaries(
                {"type": st.just("function")},
                optional={
                    "function": st.fixed_dictionaries(
                        {}, optional={"name": json_scalars, "parameters": schema_nodes}
                    )
                },
            )
            | json_values,
            max_size=3,
        ),
        "tool_choice": st.just("required") | json_values,
    },
)
FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(requests, st.none() | awkward_text)
def test_detect_task_never_raises_and_finds_closed_label_sets(
    request: dict[str, Any], header: str | None
) -> None:
    spec = detect_task(request, header)
    if spec is None:
        return
    assert spec.heads and spec.key
    for head in spec.heads:
        assert head.labels and all(isinstance(label, str) for label in head.labels)
        assert len(set(head.labels)) == len(head.labels)
        if head.kind is HeadKind.BOOL:
            assert head.labels == ("false", "true")


@FAST
@given(schema_nodes | json_values)
def test_heads_and_free_text_fields_split_the_properties(schema: Any) -> None:
    if not isinstance(schema, dict):
        return
    heads, free, required_free = heads_from_schema(schema)
    properties = schema.get("properties")
    names = [str(name) for name in properties] if isinstance(properties, dict) else []
    assert sorted([h.name for h in heads] + list(free)) == sorted(names)
    assert set(required_free) <= set(free)


@FAST
@given(messages | json_values)
def test_user_text_is_the_user_messages_text(value: Any) -> None:
    text = user_text(value)
    assert isinstance(text, str)
    if isinstance(value, list) and all(
        isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str)
        for m in value
    ):
        assert text == "\n\n".join(m["content"] for m in value)


@FAST
@given(awkward_text, st.none() | awkward_text, st.none() | awkward_text)
def test_extract_input_only_strips_what_is_there(
    text: str, prefix: str | None, suffix: str | None
) -> None:
    extracted = extract_input(text, prefix, suffix)
    assert extracted in text
    assert extracted == extracted.strip()
    if not prefix and not suffix:
        assert extracted == text.strip()


@pytest.fixture(scope="module")
def labelled_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, str]]:
    store = open_store(Settings(data_dir=Path(tmp_path_factory.mktemp("labels"))))
    spec = detect_task(
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "mood",
                    "schema": {
                        "type": "object",
                        "properties": {
                            "mood": {"enum": ["happy", "sad"]},
                            "urgent": {"type": "boolean"},
                            "note": {"type": "string"},
                        },
                    },
                },
            }
        }
    )
    assert spec is not None
    task = store.register_task(spec)
    store.record_call(
        CallRecord(
            id="call-1",
            kind=CallKind.CLASSIFICATION,
            request={},
            response={},
            status_code=200,
            task=task,
        )
    )
    yield store, "call-1"
    store.close()


@FAST
@given(
    st.dictionaries(
        st.sampled_from(["mood", "urgent", "note", "other"]) | awkward_text,
        st.sampled_from(["happy", "sad", "true", "false", True, False]) | json_values,
        max_size=3,
    ),
    st.sampled_from(["call-1", "missing"]),
)
def test_feedback_stores_only_the_schemas_labels(
    labelled_store: tuple[Store, str], labels: dict[str, Any], request_id: str
) -> None:
    store, _ = labelled_store
    allowed = {"mood": {"happy", "sad"}, "urgent": {"true", "false"}}
    try:
        stored = store.add_labels(request_id, labels)
    except UnknownRequest:
        assert request_id == "missing"
        return
    except InvalidRequest:
        bad = [
            field
            for field, value in labels.items()
            if field not in allowed
            or not (
                (isinstance(value, bool) and field == "urgent")
                or (isinstance(value, str) and value in allowed[field])
            )
        ]
        assert bad or not labels
        return
    assert request_id == "call-1" and set(stored) == set(labels)
    for field, label in stored.items():
        assert label in allowed[field]

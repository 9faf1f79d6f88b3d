"""Task detection, label parsing, input extraction and template learning (pure functions)."""

from __future__ import annotations

from typing import Any

from understudy.tasks import (
    AnswerVia,
    Head,
    HeadKind,
    answer_object,
    detect_task,
    extract_input,
    heads_from_schema,
    parse_labels,
    user_text,
)
from understudy.templates import learn_template

SENTIMENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["negative", "positive"]},
        "sarcastic": {"type": "boolean"},
        "reason": {"type": "string"},
        "score": {"type": "integer"},
    },
    "required": ["sentiment", "sarcastic", "reason"],
    "additionalProperties": False,
}


def _request(schema: dict[str, Any], name: str = "sentiment") -> dict[str, Any]:
    return {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": name, "schema": schema}},
    }


def test_heads_from_schema_splits_heads_and_free_text() -> None:
    heads, free, required_free = heads_from_schema(SENTIMENT_SCHEMA)
    assert heads == (
        Head("sentiment", ("negative", "positive"), HeadKind.ENUM),
        Head("sarcastic", ("false", "true"), HeadKind.BOOL),
    )
    assert free == ("reason", "score")
    assert required_free == ("reason",)


def test_heads_follow_pydantic_refs() -> None:
    # The shape the openai SDK sends for `response_format=SomePydanticModel` with an Enum field.
    schema = {
        "$defs": {"Topic": {"enum": ["sport", "tech"], "title": "Topic", "type": "string"}},
        "properties": {"topic": {"$ref": "#/$defs/Topic"}, "urgent": {"type": "boolean"}},
        "required": ["topic", "urgent"],
        "type": "object",
    }
    heads, free, _ = heads_from_schema(schema)
    assert [h.name for h in heads] == ["topic", "urgent"]
    assert heads[0].labels == ("sport", "tech")
    assert free == ()


def test_detect_task_from_response_format_and_header_override() -> None:
    spec = detect_task(_request(SENTIMENT_SCHEMA))
    assert spec is not None
    assert spec.key == "sentiment"
    assert spec.via is AnswerVia.RESPONSE_FORMAT
    assert [h.name for h in spec.heads] == ["sentiment", "sarcastic"]
    overridden = detect_task(_request(SENTIMENT_SCHEMA), task_header="reviews-v2")
    assert overridden is not None and overridden.key == "reviews-v2"
    assert overridden.fingerprint == spec.fingerprint


def test_detect_task_ignores_free_text_only_schemas_and_plain_chat() -> None:
    free_only = {"type": "object", "properties": {"summary": {"type": "string"}}}
    assert detect_task(_request(free_only)) is None
    assert detect_task({"model": "m", "messages": []}) is None
    assert detect_task({"model": "m", "response_format": {"type": "json_object"}}) is None


def test_detect_task_from_forced_tool_call() -> None:
    tool = {
        "type": "function",
        "function": {"name": "route_ticket", "parameters": SENTIMENT_SCHEMA},
    }
    other = {"type": "function", "function": {"name": "other", "parameters": {}}}
    forced = {"type": "function", "function": {"name": "route_ticket"}}
    spec = detect_task({"tools": [tool, other], "tool_choice": forced})
    assert spec is not None and spec.key == "route_ticket" and spec.via is AnswerVia.TOOL
    assert detect_task({"tools": [tool], "tool_choice": "required"}) is not None
    # Not forced: the model may answer in prose, so this is no classification call.
    assert detect_task({"tools": [tool], "tool_choice": "auto"}) is None
    assert detect_task({"tools": [tool, other], "tool_choice": "required"}) is None


def test_schema_change_changes_fingerprint() -> None:
    changed = {**SENTIMENT_SCHEMA, "properties": dict(SENTIMENT_SCHEMA["properties"])}
    changed["properties"]["sentiment"] = {"type": "string", "enum": ["neg", "neu", "pos"]}
    a, b = detect_task(_request(SENTIMENT_SCHEMA)), detect_task(_request(changed))
    assert a is not None and b is not None and a.fingerprint != b.fingerprint


def test_parse_labels_from_content_and_tool_call() -> None:
    spec = detect_task(_request(SENTIMENT_SCHEMA))
    assert spec is not None
    content = {"choices": [{"message": {"content": '{"sentiment":"positive","sarcastic":true}'}}]}
    assert parse_labels(spec.heads, answer_object(content)) == {
        "sentiment": "positive",
        "sarcastic": "true",
    }
    tool = {
        "choices": [
            {
                "message": {
                    "content": None,
                    "tool_calls": [{"function": {"arguments": '{"sentiment":"meh"}'}}],
                }
            }
        ]
    }
    # "meh" is outside the enum and sarcastic is missing: neither becomes a label.
    assert parse_labels(spec.heads, answer_object(tool)) == {}
    assert answer_object({"choices": [{"message": {"content": "not json"}}]}) is None


def test_user_text_joins_user_messages_only() -> None:
    messages = [
        {"role": "system", "content": "You classify."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "second"}, {"type": "image_url"}]},
    ]
    assert user_text(messages) == "first\n\nsecond"


def test_learn_template_and_extract_input() -> None:
    reviews = ["Great film, loved it.", "Great cast but dull.", "Awful.", "A quiet triumph."]
    texts = [f"Classify the sentiment of this review:\n\n{r}\n\nAnswer in JSON." for r in reviews]
    prefix, suffix = learn_template(texts)
    assert prefix == "Classify the sentiment of this review:\n\n"
    assert suffix == "\n\nAnswer in JSON."
    assert [extract_input(t, prefix, suffix) for t in texts] == reviews
    # A call that does not follow the template keeps its whole text.
    assert extract_input("Something else entirely", prefix, suffix) == "Something else entirely"


def test_learn_template_never_cuts_inside_a_word() -> None:
    prefix, suffix = learn_template(["Great film overall", "Great cast overall"])
    assert prefix == ""  # "Great " is shorter than a template and belongs to the input
    assert suffix == ""
    assert learn_template(["same", "same"]) == ("", "")

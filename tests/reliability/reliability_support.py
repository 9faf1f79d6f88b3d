"""Shared pieces of the reliability tests: the fake teacher's rule and request helpers."""

from __future__ import annotations

from typing import Any

SENTIMENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"sentiment": {"type": "string", "enum": ["negative", "positive"]}},
    "required": ["sentiment"],
    "additionalProperties": False,
}


def label_fn(schema: dict[str, Any], text: str) -> dict[str, Any]:
    """The fake teacher's rule: "good" in the text means positive."""
    del schema
    return {"sentiment": "positive" if "good" in text else "negative"}


def sentiment_request(text: str, **extra: Any) -> dict[str, Any]:
    """A chat-completion body asking the sentiment task about ``text``."""
    return {
        "model": "gpt-x",
        "messages": [{"role": "user", "content": text}],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "sentiment", "schema": SENTIMENT_SCHEMA, "strict": True},
        },
        **extra,
    }

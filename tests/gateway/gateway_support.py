"""Shared test data for the gateway tests: a sentiment schema and the fake teacher's rule."""

from __future__ import annotations

from typing import Any

SENTIMENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["negative", "neutral", "positive"]},
        "sarcastic": {"type": "boolean"},
    },
    "required": ["sentiment", "sarcastic"],
    "additionalProperties": False,
}
MAX_BODY_BYTES = 20_000


def label_fn(schema: dict[str, Any], text: str) -> dict[str, Any]:
    """The fake teacher's rule: keywords decide sentiment, "!" means sarcasm, and any other
    string field gets a fixed summary."""
    sentiment = "positive" if "good" in text else "negative" if "bad" in text else "neutral"
    known: dict[str, Any] = {"sentiment": sentiment, "sarcastic": "!" in text}
    return {name: known.get(name, "n/a") for name in schema.get("properties", {})}


def sentiment_format(name: str = "sentiment", schema: dict[str, Any] | None = None) -> Any:
    """A ``response_format`` asking for the sentiment schema."""
    return {
        "type": "json_schema",
        "json_schema": {"name": name, "schema": schema or SENTIMENT_SCHEMA, "strict": True},
    }

"""Privacy: redaction of configured patterns before calls are stored, and retention of raw
request/response bodies.

Redaction (``redact``, ``redact_patterns``) rewrites what is *stored*: the request and response
JSON, the user text and the student input. The teacher still receives the original request, and
the student predicts on the original text; it trains on the redacted texts, so a pattern a
student needs to tell classes apart (say, an email domain) is lost to it.

Retention (``retention_days``) purges the raw bodies of old calls: their ``request`` and
``response`` JSON are cleared, and so are the texts of pass-through calls, which no student
trains on. Classification calls keep their user text, student input and labels, because those
are the training data: retraining, evaluation and the review queue keep working, but an old
call can no longer be replayed or exported with its original prompt and answer. Use redaction
as well when those texts themselves must not be kept.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from understudy.errors import ConfigurationError
from understudy.settings import Settings
from understudy.store import CallKind, CallRecord, Store
from understudy.store import tables as t

logger = logging.getLogger(__name__)

# Calls updated per transaction while purging, so the gateway's writes never wait long.
PURGE_BATCH = 500
# Seconds between the worker's retention passes: retention is counted in days, and each pass
# reads the index over every old call.
RETENTION_PASS_INTERVAL_S = 3600.0


class Redactor:
    """Replaces every match of each named pattern with ``[NAME]``."""

    def __init__(self, patterns: Mapping[str, str]) -> None:
        try:
            self.patterns = [(re.compile(regex), f"[{name}]") for name, regex in patterns.items()]
        except re.error as exc:
            raise ConfigurationError(
                f"redact_patterns holds an invalid regular expression: {exc}"
            ) from exc

    @classmethod
    def from_settings(cls, settings: Settings) -> Redactor | None:
        """The redactor the settings ask for, or None when redaction is off."""
        return cls(settings.redact_patterns) if settings.redact else None

    def text(self, text: str) -> str:
        """``text`` with every pattern's matches replaced."""
        for pattern, replacement in self.patterns:
            text = pattern.sub(replacement, text)
        return text

    def value(self, value: Any) -> Any:
        """A copy of a JSON value with every string (not the keys) redacted."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.value(item) for item in value]
        if isinstance(value, dict):
            return {key: self.value(item) for key, item in value.items()}
        return value

    def record(self, record: CallRecord) -> CallRecord:
        """The call record as it may be stored: request, response and texts redacted."""
        return replace(
            record,
            request=self.value(record.request),
            response=self.value(record.response),
            user_text=self.text(record.user_text) if record.user_text is not None else None,
            input_text=self.text(record.input_text) if record.input_text is not None else None,
        )


def for_storage(redactor: Redactor | None, record: CallRecord) -> CallRecord:
    """``record`` redacted when a redactor is configured, else unchanged."""
    return record if redactor is None else redactor.record(record)


@dataclass(frozen=True)
class PurgeReport:
    """What a purge did: calls whose raw bodies were cleared, and the cut-off (UTC)."""

    calls: int
    cutoff: datetime


def purge_raw_bodies(
    store: Store, older_than_days: float, now: datetime | None = None
) -> PurgeReport:
    """Clear the raw bodies of calls older than ``older_than_days`` (see the module docstring);
    labels and the texts of classification calls stay. Runs in short batches."""
    if older_than_days < 0:
        raise ConfigurationError("retention must be a non-negative number of days")
    cutoff = (now or t.utcnow()) - timedelta(days=older_than_days)
    calls = t.calls
    pending = sa.or_(
        calls.c.request.is_not(None),
        calls.c.response.is_not(None),
        sa.and_(calls.c.kind == CallKind.PASSTHROUGH.value, calls.c.user_text.is_not(None)),
    )
    purged = 0
    while True:
        with store.engine.begin() as conn:
            ids = (
                conn.execute(
                    sa.select(calls.c.id)
                    .where(calls.c.created_at < cutoff, pending)
                    .limit(PURGE_BATCH)
                )
                .scalars()
                .all()
            )
            if not ids:
                break
            conn.execute(
                calls.update()
                .where(calls.c.id.in_(ids))
                # sa.null(): a JSON column would otherwise store the JSON text 'null'.
                .values(request=sa.null(), response=sa.null())
            )
            conn.execute(
                calls.update()
                .where(calls.c.id.in_(ids), calls.c.kind == CallKind.PASSTHROUGH.value)
                .values(user_text=None, input_text=None)
            )
        purged += len(ids)
    if purged:
        logger.info("purged the raw bodies of %d calls older than %s", purged, cutoff.isoformat())
    return PurgeReport(purged, cutoff)

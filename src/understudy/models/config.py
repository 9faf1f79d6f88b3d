"""The encoder's hyper-parameters, read from and written to a Hugging Face ``config.json``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from understudy.errors import ConfigurationError

# Keys of a Hugging Face BERT config.json that describe the architecture; every other key
# (architectures, transformers_version, ...) is bookkeeping that the encoder does not need.
_HF_KEYS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
    "type_vocab_size",
    "layer_norm_eps",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
)
# Our own keys in config.json; transformers ignores unknown keys, so the file stays loadable there.
_LAYER_OPTIONS_KEY = "understudy_layer_options"


@dataclass(frozen=True)
class EncoderConfig:
    """Architecture of a BERT-family encoder.

    ``feedforward`` and ``token_mixer`` name entries of ``understudy.models.layers.FEEDFORWARDS``
    and ``TOKEN_MIXERS``; ``layer_options`` carries extra settings those layers read (e.g. the
    depth of a fast feed-forward tree). Dropout probabilities only matter in training mode.
    """

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    feedforward: str = "dense"
    token_mixer: str = "attention"
    layer_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ConfigurationError(
                f"hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}"
            )

    @property
    def head_size(self) -> int:
        """Width of one attention head (hidden_size / num_attention_heads)."""
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any]) -> EncoderConfig:
        """Read a Hugging Face BERT ``config.json`` dict; unknown keys are ignored."""
        if d.get("position_embedding_type", "absolute") != "absolute":
            raise ConfigurationError(
                f"position_embedding_type {d['position_embedding_type']!r} is not supported; "
                "only absolute position embeddings are"
            )
        known = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {k: d[k] for k in _HF_KEYS if k in d and k in known}
        for key in ("feedforward", "token_mixer"):
            if key in d:
                kwargs[key] = d[key]
        kwargs["layer_options"] = dict(d.get(_LAYER_OPTIONS_KEY, {}))
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise ConfigurationError(f"incomplete encoder config.json: {exc}") from exc

    def to_hf_dict(self) -> dict[str, Any]:
        """The config as a ``config.json`` dict that ``transformers.BertModel`` also loads."""
        d = asdict(self)
        d[_LAYER_OPTIONS_KEY] = d.pop("layer_options")
        d.update(
            model_type="bert",
            architectures=["BertModel"],
            position_embedding_type="absolute",
            pad_token_id=0,
        )
        return d

    def with_layers(self, num_hidden_layers: int) -> EncoderConfig:
        """A copy with a different depth (used to keep only the first k layers)."""
        d = asdict(self)
        d["num_hidden_layers"] = num_hidden_layers
        return EncoderConfig(**d)

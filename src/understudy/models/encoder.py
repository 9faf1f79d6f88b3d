"""A compact BERT encoder that loads and saves standard Hugging Face BERT checkpoints.

Embeddings (word + position + token type, LayerNorm) feed a stack of post-LayerNorm blocks; each
block is ``x = norm(x + mixer(x)); x = norm(x + feedforward(x))`` with the mixer and feed-forward
taken from the layer registries. Parameter names are our own; ``hf_to_own_key`` maps the names
``transformers.BertModel`` uses, so checkpoints load and save in the Hugging Face format.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from understudy.errors import ConfigurationError, ModelError
from understudy.models.config import EncoderConfig
from understudy.models.layers import FEEDFORWARDS, TOKEN_MIXERS

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INIT_STD = 0.02
"""Standard deviation of the normal initialisation of weights, as in BERT."""

# (Hugging Face name pattern, our name) for every parameter of the standard layers; applied to the
# key with its ".weight"/".bias" suffix removed. Keys of non-standard layers pass through as is.
_HF_NAMES: tuple[tuple[str, str], ...] = (
    (r"embeddings\.word_embeddings", "embeddings.word"),
    (r"embeddings\.position_embeddings", "embeddings.position"),
    (r"embeddings\.token_type_embeddings", "embeddings.token_type"),
    (r"embeddings\.LayerNorm", "embeddings.norm"),
    (r"encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)", r"blocks.\1.mixer.\2"),
    (r"encoder\.layer\.(\d+)\.attention\.output\.dense", r"blocks.\1.mixer.output"),
    (r"encoder\.layer\.(\d+)\.attention\.output\.LayerNorm", r"blocks.\1.mixer_norm"),
    (r"encoder\.layer\.(\d+)\.intermediate\.dense", r"blocks.\1.feedforward.up"),
    (r"encoder\.layer\.(\d+)\.output\.dense", r"blocks.\1.feedforward.down"),
    (r"encoder\.layer\.(\d+)\.output\.LayerNorm", r"blocks.\1.feedforward_norm"),
)
_OWN_NAMES: tuple[tuple[str, str], ...] = (
    (r"embeddings\.word", "embeddings.word_embeddings"),
    (r"embeddings\.position", "embeddings.position_embeddings"),
    (r"embeddings\.token_type", "embeddings.token_type_embeddings"),
    (r"embeddings\.norm", "embeddings.LayerNorm"),
    (r"blocks\.(\d+)\.mixer\.(query|key|value)", r"encoder.layer.\1.attention.self.\2"),
    (r"blocks\.(\d+)\.mixer\.output", r"encoder.layer.\1.attention.output.dense"),
    (r"blocks\.(\d+)\.mixer_norm", r"encoder.layer.\1.attention.output.LayerNorm"),
    (r"blocks\.(\d+)\.feedforward\.up", r"encoder.layer.\1.intermediate.dense"),
    (r"blocks\.(\d+)\.feedforward\.down", r"encoder.layer.\1.output.dense"),
    (r"blocks\.(\d+)\.feedforward_norm", r"encoder.layer.\1.output.LayerNorm"),
)
# Checkpoint entries a bare encoder does not use: the pooler, pre-training heads, and the
# position_ids buffer older transformers versions saved.
_IGNORED = re.compile(r"^(pooler\.|cls\.|embeddings\.position_ids$)")
# TensorFlow-era checkpoints name LayerNorm parameters gamma/beta.
_LEGACY_SUFFIX = {"gamma": "weight", "beta": "bias"}


def _rename(key: str, table: tuple[tuple[str, str], ...]) -> str:
    stem, _, suffix = key.rpartition(".")
    for pattern, replacement in table:
        if re.fullmatch(pattern, stem):
            return f"{re.sub(pattern, replacement, stem)}.{suffix}"
    return key


def hf_to_own_key(key: str) -> str | None:
    """Our parameter name for a Hugging Face checkpoint key, or None for entries we do not use."""
    key = key.removeprefix("bert.")
    if _IGNORED.match(key):
        return None
    stem, _, suffix = key.rpartition(".")
    key = f"{stem}.{_LEGACY_SUFFIX.get(suffix, suffix)}"
    return _rename(key, _HF_NAMES)


def own_to_hf_key(key: str) -> str:
    """The Hugging Face checkpoint key for one of our parameter names."""
    return _rename(key, _OWN_NAMES)


class Embeddings(nn.Module):
    """Token ids [B, T] -> LayerNorm(word + position + token type embedding) [B, T, H]."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.word = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor) -> Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        summed = (
            self.word(input_ids) + self.position(positions)[None] + self.token_type(token_type_ids)
        )
        return self.dropout(self.norm(summed))  # type: ignore[no-any-return]


class EncoderBlock(nn.Module):
    """One transformer layer: residual + LayerNorm around the token mixer, then the feed-forward."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        for kind, registry, name in (
            ("token_mixer", TOKEN_MIXERS, config.token_mixer),
            ("feedforward", FEEDFORWARDS, config.feedforward),
        ):
            if name not in registry:
                raise ConfigurationError(
                    f"unknown {kind} {name!r}; registered: {', '.join(sorted(registry))}"
                )
        self.mixer = TOKEN_MIXERS[config.token_mixer](config)
        self.mixer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.feedforward = FEEDFORWARDS[config.feedforward](config)
        self.feedforward_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: Tensor, attention_mask: Tensor) -> Tensor:
        hidden = self.mixer_norm(hidden + self.dropout(self.mixer(hidden, attention_mask)))
        return self.feedforward_norm(hidden + self.dropout(self.feedforward(hidden)))  # type: ignore[no-any-return]


def encoder_config(path: Path) -> EncoderConfig:
    """The configuration of the Hugging Face BERT directory ``path``; ``ModelError`` when it is
    not one (no config.json or model.safetensors)."""
    path = Path(path)
    config_path, weights_path = path / CONFIG_FILE, path / WEIGHTS_FILE
    if not config_path.is_file() or not weights_path.is_file():
        raise ModelError(f"{path} is not an encoder directory ({CONFIG_FILE}, {WEIGHTS_FILE})")
    return EncoderConfig.from_hf_dict(json.loads(config_path.read_text()))


class BertEncoder(nn.Module):
    """BERT encoder: ``forward(input_ids, attention_mask, token_type_ids=None)`` -> [B, T, H].

    ``input_ids`` and ``attention_mask`` (1 = token, 0 = padding) are [B, T] integer tensors; the
    result is the last hidden state, as ``transformers.BertModel(...).last_hidden_state``.
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.blocks = nn.ModuleList(EncoderBlock(config) for _ in range(config.num_hidden_layers))
        self.apply(init_weights)

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None
    ) -> Tensor:
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        hidden = self.embeddings(input_ids, token_type_ids)
        for block in self.blocks:
            hidden = block(hidden, attention_mask)
        return hidden  # type: ignore[no-any-return]

    @classmethod
    def from_pretrained(cls, path: Path, *, num_layers: int | None = None) -> BertEncoder:
        """Load a Hugging Face BERT directory (config.json + model.safetensors).

        Keys may carry a ``bert.`` prefix (as in task-model checkpoints); the pooler and
        pre-training heads are ignored. ``num_layers`` keeps only the first k layers (a truncated
        encoder, e.g. for faster serving). Raises ``ModelError`` when files or weights are missing.
        """
        path = Path(path)
        weights_path = path / WEIGHTS_FILE
        config = encoder_config(path)
        if num_layers is not None:
            if not 1 <= num_layers <= config.num_hidden_layers:
                raise ConfigurationError(
                    f"num_layers must be in 1..{config.num_hidden_layers}, got {num_layers}"
                )
            config = config.with_layers(num_layers)
        model = cls(config)
        state: dict[str, Tensor] = {}
        for key, tensor in load_file(str(weights_path)).items():
            own = hf_to_own_key(key)
            if own is None:
                continue
            layer = re.match(r"blocks\.(\d+)\.", own)
            if layer and int(layer.group(1)) >= config.num_hidden_layers:
                continue  # a layer beyond the kept depth of a truncated encoder
            state[own] = tensor
        result = model.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise ModelError(
                f"weights in {weights_path} do not fit the config: missing "
                f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}"
            )
        return model.eval()

    def save_pretrained(self, path: Path) -> Path:
        """Write config.json and model.safetensors with Hugging Face key names; returns ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / CONFIG_FILE).write_text(json.dumps(self.config.to_hf_dict(), indent=2) + "\n")
        # safetensors refuses shared or non-contiguous storage, so each tensor is copied out.
        state = {
            own_to_hf_key(k): v.detach().contiguous().clone() for k, v in self.state_dict().items()
        }
        save_file(state, str(path / WEIGHTS_FILE), metadata={"format": "pt"})
        return path


def init_weights(module: nn.Module) -> None:
    """BERT's initialisation: normal(0, 0.02) weights, zero biases, LayerNorm at identity."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=INIT_STD)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=INIT_STD)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)

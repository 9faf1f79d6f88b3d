"""The encoder reproduces transformers.BertModel and round-trips the Hugging Face format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from understudy.errors import ConfigurationError, ModelError
from understudy.models.config import EncoderConfig
from understudy.models.encoder import BertEncoder
from understudy.models.layers import FEEDFORWARDS, register_feedforward
from understudy.models.pretrained import default_encoder_dir
from understudy.models.tokenizer import encode_batch, load_tokenizer
from understudy.testing.tiny_models import random_sentences, write_tiny_encoder

PARITY_TOLERANCE = 1e-4


def _reference_hidden(path: Path, ids: torch.Tensor, mask: torch.Tensor, **kw: int) -> torch.Tensor:
    transformers = pytest.importorskip("transformers")
    reference = transformers.BertModel.from_pretrained(str(path), add_pooling_layer=False, **kw)
    with torch.no_grad():
        return reference.eval()(input_ids=ids, attention_mask=mask).last_hidden_state  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_encoder(tmp_path_factory.mktemp("tiny") / "encoder", seed=3, num_layers=3)


@pytest.fixture(scope="module")
def batch(tiny_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    # Sentences of different lengths, so the batch has padding the mask must hide.
    return encode_batch(load_tokenizer(tiny_dir, 64), random_sentences(8, seed=5))


def test_matches_transformers_bert_on_tiny_checkpoint(tiny_dir: Path, batch: tuple) -> None:
    ids, mask = batch
    assert (mask == 0).any(), "the batch should contain padding"
    with torch.no_grad():
        ours = BertEncoder.from_pretrained(tiny_dir)(ids, mask)
    reference = _reference_hidden(tiny_dir, ids, mask)
    assert ours.shape == reference.shape == (8, ids.shape[1], 32)
    assert (ours - reference).abs().max().item() <= PARITY_TOLERANCE


def test_truncated_encoder_matches_bert_with_fewer_layers(tiny_dir: Path, batch: tuple) -> None:
    ids, mask = batch
    with torch.no_grad():
        ours = BertEncoder.from_pretrained(tiny_dir, num_layers=1)(ids, mask)
    reference = _reference_hidden(tiny_dir, ids, mask, num_hidden_layers=1)
    assert (ours - reference).abs().max().item() <= PARITY_TOLERANCE
    with pytest.raises(ConfigurationError):
        BertEncoder.from_pretrained(tiny_dir, num_layers=4)


def test_save_load_round_trip_and_bert_prefix(tiny_dir: Path, batch: tuple, tmp_path: Path) -> None:
    ids, mask = batch
    encoder = BertEncoder.from_pretrained(tiny_dir)
    saved = encoder.save_pretrained(tmp_path / "copy")
    assert (
        load_file(str(saved / "model.safetensors")).keys()
        == load_file(str(tiny_dir / "model.safetensors")).keys()
    )
    # Task-model checkpoints prefix every key with "bert." and carry a pooler.
    prefixed = tmp_path / "prefixed"
    prefixed.mkdir()
    (prefixed / "config.json").write_text((tiny_dir / "config.json").read_text())
    state = {f"bert.{k}": v for k, v in load_file(str(tiny_dir / "model.safetensors")).items()}
    state["bert.pooler.dense.weight"] = torch.zeros(32, 32)
    save_file(state, str(prefixed / "model.safetensors"))
    with torch.no_grad():
        expected = encoder(ids, mask)
        assert torch.equal(BertEncoder.from_pretrained(saved)(ids, mask), expected)
        assert torch.equal(BertEncoder.from_pretrained(prefixed)(ids, mask), expected)


def test_missing_weights_raise_model_error(tiny_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((tiny_dir / "config.json").read_text())
    state = load_file(str(tiny_dir / "model.safetensors"))
    del state["encoder.layer.0.output.dense.weight"]
    save_file(state, str(broken / "model.safetensors"))
    with pytest.raises(ModelError, match="missing"):
        BertEncoder.from_pretrained(broken)
    with pytest.raises(ModelError):
        BertEncoder.from_pretrained(tmp_path / "nowhere")


def test_feedforward_registry_swaps_the_block_layer(tiny_dir: Path, batch: tuple) -> None:
    ids, mask = batch
    config = EncoderConfig.from_hf_dict(json.loads((tiny_dir / "config.json").read_text()))
    with pytest.raises(ConfigurationError, match="unknown feedforward"):
        BertEncoder(EncoderConfig(**{**config.__dict__, "feedforward": "no-such-layer"}))

    @register_feedforward("test-zero")
    class Zero(torch.nn.Module):
        def __init__(self, config: EncoderConfig) -> None:
            super().__init__()

        def forward(self, hidden: torch.Tensor) -> torch.Tensor:
            return torch.zeros_like(hidden)

    try:
        zero_ff = EncoderConfig(**{**config.__dict__, "feedforward": "test-zero"})
        encoder = BertEncoder(zero_ff)
        assert isinstance(encoder.blocks[0].feedforward, Zero)
        assert EncoderConfig.from_hf_dict(zero_ff.to_hf_dict()) == zero_ff
        with torch.no_grad():
            assert encoder(ids, mask).shape == (8, ids.shape[1], 32)
    finally:
        del FEEDFORWARDS["test-zero"]


@pytest.mark.slow
def test_matches_transformers_bert_on_packaged_minilm() -> None:
    folder = default_encoder_dir()
    ids, mask = encode_batch(load_tokenizer(folder, 128), random_sentences(16, seed=9))
    with torch.no_grad():
        ours = BertEncoder.from_pretrained(folder)(ids, mask)
    reference = _reference_hidden(folder, ids, mask)
    assert ours.shape[-1] == 384
    assert (ours - reference).abs().max().item() <= PARITY_TOLERANCE

"""Dense -> FFF conversion of a (tiny, random) pretrained encoder by layer-wise distillation."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from understudy.errors import ConfigurationError
from understudy.models.config import EncoderConfig
from understudy.models.convert_fff import (
    ConversionConfig,
    ConversionResult,
    collect_feedforward_inputs,
    convert_to_fff,
    feedforward_of,
    held_out_start,
    init_by_coactivation,
    init_from_dense,
)
from understudy.models.encoder import BertEncoder
from understudy.models.layers.feedforward import DenseFeedForward
from understudy.models.layers.fff import FastFeedForward
from understudy.models.tokenizer import encode_batch, load_tokenizer
from understudy.testing.tiny_models import WORDS, write_tiny_encoder

CONFIG = ConversionConfig(depth=2, leaf_width=8, steps=200, batch_tokens=256, learning_rate=3e-3)


def _texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) for _ in range(n)]


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_encoder(tmp_path_factory.mktemp("tiny"), hidden_size=32, intermediate_size=64)


@pytest.fixture(scope="module")
def converted(encoder_dir: Path) -> tuple[BertEncoder, ConversionResult]:
    """The tiny encoder and its conversion, shared: converting takes a few seconds."""
    torch.manual_seed(0)
    encoder = BertEncoder.from_pretrained(encoder_dir)
    tokenizer = load_tokenizer(encoder_dir, max_length=32)
    return encoder, convert_to_fff(encoder, tokenizer, _texts(150), CONFIG, show_progress=False)


def _relative_error(fff: FastFeedForward, dense: DenseFeedForward, x: torch.Tensor) -> float:
    with torch.no_grad():
        target = dense(x)
        return float((fff.eval()(x) - target).norm() / target.norm())


def test_conversion_replaces_feedforwards_and_keeps_everything_else(
    converted: tuple[BertEncoder, ConversionResult],
) -> None:
    encoder, result = converted
    assert result.encoder.config.feedforward == "fff"
    assert result.encoder.config.layer_options == {"fff_depth": 2, "fff_leaf_width": 8}
    assert all(isinstance(feedforward_of(b), FastFeedForward) for b in result.encoder.blocks)
    original, new = encoder.state_dict(), result.encoder.state_dict()
    for key, value in original.items():
        if ".feedforward." not in key:
            assert torch.equal(new[key], value), key
    assert [r.layer for r in result.layers] == [0, 1]
    assert all(0.0 < r.relative_error < 0.7 for r in result.layers)


def test_distillation_improves_on_the_dense_initialisation(
    encoder_dir: Path, converted: tuple[BertEncoder, ConversionResult]
) -> None:
    encoder, result = converted
    tokenizer = load_tokenizer(encoder_dir, max_length=32)
    inputs = collect_feedforward_inputs(
        encoder, tokenizer, _texts(150), max_tokens=5000, batch_size=32
    )
    for index, report in enumerate(result.layers):
        dense = feedforward_of(encoder.blocks[index])
        assert isinstance(dense, DenseFeedForward)
        split = held_out_start(len(inputs[index]))
        initial = FastFeedForward(32, 32, depth=2, leaf_width=8)
        init_by_coactivation(initial, dense, inputs[index][:split])
        held_out = inputs[index][split:]
        assert report.relative_error < 0.8 * _relative_error(initial, dense, held_out)


def _two_expert_block() -> tuple[DenseFeedForward, torch.Tensor]:
    """A ReLU block whose first 16 neurons fire only on tokens near +c, the other 16 near -c.

    Returns the block and 2,000 such tokens, half from each side, shuffled.
    """
    torch.manual_seed(0)
    config = EncoderConfig(
        vocab_size=10, hidden_size=16, num_hidden_layers=1, num_attention_heads=1,
        intermediate_size=32, hidden_act="relu",
    )  # fmt: skip
    dense = DenseFeedForward(config)
    centre = torch.nn.functional.normalize(torch.randn(16), dim=0) * 4
    with torch.no_grad():
        dense.up.weight.copy_(torch.randn(32, 16) * 0.1)
        dense.up.weight[:16] += centre / 4
        dense.up.weight[16:] -= centre / 4
        dense.up.bias.fill_(-1.0)
    sides = torch.randint(2, (2000, 1)) * 2 - 1
    tokens = sides * centre + torch.randn(2000, 16) * 0.3
    return dense, tokens


def test_coactivation_init_routes_each_token_to_the_neurons_that_fire_for_it() -> None:
    dense, tokens = _two_expert_block()
    held_out = tokens[held_out_start(len(tokens)) :]
    grouped = FastFeedForward(16, 16, depth=1, leaf_width=16, hidden_act="relu")
    init_by_coactivation(grouped, dense, tokens[: held_out_start(len(tokens))])
    scattered = FastFeedForward(16, 16, depth=1, leaf_width=16, hidden_act="relu")
    init_from_dense(scattered, dense, torch.Generator().manual_seed(0))
    assert _relative_error(grouped, dense, held_out) < 0.02
    assert _relative_error(scattered, dense, held_out) > 0.5


def test_coactivation_init_keeps_the_strongest_neurons_of_a_group_in_a_narrow_leaf() -> None:
    dense, tokens = _two_expert_block()
    with torch.no_grad():
        dense.down.weight[:, [3, 20]] *= 50  # one dominant neuron on each side
    narrow = FastFeedForward(16, 16, depth=1, leaf_width=1, hidden_act="relu")
    init_by_coactivation(narrow, dense, tokens)
    leaf_rows = narrow.weight_in[narrow.n_internal :]
    assert {int(torch.cdist(leaf_rows[i : i + 1], dense.up.weight).argmin()) for i in range(2)} == {
        3,
        20,
    }


def test_a_tree_deeper_than_the_block_is_wide_copies_every_dense_neuron_into_its_leaves() -> None:
    dense, tokens = _two_expert_block()
    deep = FastFeedForward(
        16, 16, depth=6, leaf_width=1, hidden_act="relu"
    )  # 64 leaves, 32 neurons
    init_by_coactivation(deep, dense, tokens)
    leaves = deep.weight_in[deep.n_internal :].detach()
    exact = "donot_use_mm_for_euclid_dist"
    nearest = torch.cdist(leaves, dense.up.weight.detach(), compute_mode=exact).min(dim=1)
    assert float(nearest.values.max()) < 1e-6  # each leaf is a copy of a dense neuron
    assert set(nearest.indices.tolist()) == set(range(32))  # and none is left out
    assert torch.isfinite(deep.eval()(tokens)).all()


def test_converted_encoder_round_trips_through_save_and_load(
    encoder_dir: Path, tmp_path: Path
) -> None:
    encoder = BertEncoder.from_pretrained(encoder_dir)
    tokenizer = load_tokenizer(encoder_dir, max_length=32)
    small = ConversionConfig(depth=1, leaf_width=4, steps=5, batch_tokens=64)
    converted = convert_to_fff(encoder, tokenizer, _texts(20), small, show_progress=False).encoder
    loaded = BertEncoder.from_pretrained(converted.save_pretrained(tmp_path / "fff"))
    input_ids, attention_mask = encode_batch(tokenizer, _texts(4, seed=1))
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(input_ids, attention_mask), converted(input_ids, attention_mask)
        )


def test_only_dense_encoders_with_texts_convert(encoder_dir: Path, tmp_path: Path) -> None:
    encoder = BertEncoder.from_pretrained(encoder_dir)
    tokenizer = load_tokenizer(encoder_dir, max_length=32)
    with pytest.raises(ConfigurationError):
        convert_to_fff(encoder, tokenizer, [], CONFIG, show_progress=False)
    fff_dir = write_tiny_encoder(tmp_path / "fff", feedforward="fff")
    with pytest.raises(ConfigurationError):
        convert_to_fff(BertEncoder.from_pretrained(fff_dir), tokenizer, _texts(5), CONFIG)

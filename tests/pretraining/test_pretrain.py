"""Crammed MLM pretraining: masking, packing, a short run that learns, and the CLI."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from understudy.cli import app
from understudy.models.encoder import BertEncoder
from understudy.models.layers.fff import FastFeedForward
from understudy.models.tokenizer import encode_batch, load_tokenizer
from understudy.pretraining import PretrainConfig, pretrain
from understudy.pretraining.mlm import IGNORE_INDEX, mask_tokens, pack_sequences
from understudy.pretraining.vocab import special_token_ids, train_wordpiece

SUBJECTS = ("the cat", "a dog", "my friend", "the teacher", "our team")
VERBS = ("likes", "hates", "watches", "reads", "finds")
OBJECTS = ("the movie", "a book", "the game", "this story", "the show")


def _corpus(n: int = 400) -> list[str]:
    """Five fixed sentences in random order: any masked word is predictable from the others,
    so a tiny model learns them in seconds."""
    rng = random.Random(0)
    sentences = [" ".join(parts) for parts in zip(SUBJECTS, VERBS, OBJECTS, strict=True)]
    return [rng.choice(sentences) for _ in range(n)]


TINY = PretrainConfig(
    hidden_size=32,
    num_layers=1,
    num_heads=2,
    intermediate_size=64,
    vocab_size=120,
    seq_len=8,
    batch_size=16,
    accumulation=2,
    steps=150,
    peak_learning_rate=5e-3,
    checkpoint_every=50,
    device="cpu",
)


def test_masking_follows_berts_80_10_10_rule_and_spares_special_tokens() -> None:
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, 1000, (200, 100))
    input_ids[:, 0] = 2  # [CLS]
    masked, labels = mask_tokens(
        input_ids,
        mask_id=4,
        vocab_size=1000,
        special_ids=[0, 1, 2, 3, 4],
        probability=0.15,
        generator=generator,
    )
    chosen = labels != IGNORE_INDEX
    assert not chosen[:, 0].any()
    assert torch.equal(labels[chosen], input_ids[chosen])
    assert torch.equal(masked[~chosen], input_ids[~chosen])
    assert chosen.float().mean().item() == pytest.approx(0.15 * 99 / 100, abs=0.01)
    became_mask = (masked[chosen] == 4).float().mean().item()
    kept = (masked[chosen] == input_ids[chosen]).float().mean().item()
    assert became_mask == pytest.approx(0.8, abs=0.02)
    assert kept == pytest.approx(0.1, abs=0.02)  # a random replacement rarely hits the original


def test_packing_joins_texts_into_full_cls_sep_rows() -> None:
    tokenizer = train_wordpiece(_corpus(50), vocab_size=120)
    ids = special_token_ids(tokenizer)
    rows = pack_sequences(
        tokenizer, _corpus(50), seq_len=12, cls_id=ids["[CLS]"], sep_id=ids["[SEP]"]
    )
    assert rows.shape[1] == 12
    assert (rows[:, 0] == ids["[CLS]"]).all() and (rows[:, -1] == ids["[SEP]"]).all()
    assert not (rows == ids["[PAD]"]).any()
    first = tokenizer.encode(_corpus(50)[0], add_special_tokens=False).ids
    assert rows[0, 1 : 1 + len(first)].tolist() == first


def test_pretraining_learns_and_writes_a_loadable_encoder(tmp_path: Path) -> None:
    result = pretrain(_corpus(), tmp_path / "enc", TINY, show_progress=False)
    report = json.loads((tmp_path / "enc" / "pretrain.json").read_text())
    first_losses = [h["loss"] for h in report["history"][:5]]
    assert result.final_train_loss < 0.6 * (sum(first_losses) / 5)
    assert result.heldout_accuracy > 0.5  # chance is under 1% with a 120-piece vocabulary
    assert (tmp_path / "enc" / "checkpoints" / "step-50" / "model.safetensors").is_file()

    encoder = BertEncoder.from_pretrained(tmp_path / "enc")
    tokenizer = load_tokenizer(tmp_path / "enc", max_length=8)
    input_ids, attention_mask = encode_batch(tokenizer, ["the cat likes the movie"])
    assert encoder(input_ids, attention_mask).shape == (1, input_ids.shape[1], 32)
    linear_biases = [
        m.bias for m in encoder.modules() if isinstance(m, torch.nn.Linear) and m.bias is not None
    ]
    assert linear_biases and all(float(b.detach().abs().sum()) == 0.0 for b in linear_biases)


def test_pretraining_an_fff_fourier_variant(tmp_path: Path) -> None:
    config = PretrainConfig(**{**vars(TINY), "steps": 5, "checkpoint_every": 0})
    config = PretrainConfig(
        **{**vars(config), "feedforward": "fff", "token_mixer": "fourier", "fff_depth": 2}
    )
    pretrain(_corpus(100), tmp_path / "fff", config, show_progress=False)
    encoder = BertEncoder.from_pretrained(tmp_path / "fff")
    assert encoder.config.token_mixer == "fourier"
    fff = encoder.blocks[0].feedforward
    assert isinstance(fff, FastFeedForward) and fff.depth == 2 and fff.bias_in is None


def test_cli_pretrains_from_a_text_file(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(_corpus(200)) + "\n", encoding="utf-8")
    out = tmp_path / "cli"
    args = ["pretrain", "--out", str(out), "--text-file", str(corpus), "--hidden-size", "32"]
    args += ["--layers", "1", "--intermediate-size", "64", "--vocab-size", "120", "--seq-len"]
    args += ["16", "--steps", "3", "--batch-size", "8", "--device", "cpu"]
    args += ["--checkpoint-every", "0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "held-out MLM loss" in result.output
    assert json.loads((out / "pretrain.json").read_text())["config"]["steps"] == 3
    assert BertEncoder.from_pretrained(out).config.hidden_size == 32


def test_cli_rejects_an_empty_corpus(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["pretrain", "--out", str(tmp_path / "x")])
    assert result.exit_code != 0
    assert "--dataset" in result.output

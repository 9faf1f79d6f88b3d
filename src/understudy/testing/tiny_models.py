"""Tiny randomly initialised BERT encoders in the Hugging Face format, for fast tests.

``write_tiny_encoder`` writes config.json, model.safetensors, vocab.txt and tokenizer.json. The
vocabulary holds BERT's special tokens, common English words, and single characters with their
``##`` continuations, so real sentences tokenize to words and word pieces rather than ``[UNK]``.
"""

from __future__ import annotations

import random
import string
from collections.abc import Sequence
from pathlib import Path

import torch

from understudy.models.classifier import HEADS_FILE, Pooling, StudentModel
from understudy.models.config import EncoderConfig
from understudy.models.encoder import BertEncoder
from understudy.models.tokenizer import (
    SPECIAL_TOKENS,
    TOKENIZER_FILE,
    VOCAB_FILE,
    encode_batch,
    load_tokenizer,
    wordpiece_tokenizer,
)
from understudy.serving.artifact import ENCODER_DIR, StudentManifest
from understudy.tasks import Head

_WORD_LIST = """
the a an and or but not no yes is are was were be been being have has had do does did will would
can could should may might must shall i you he she it we they me him her us them my your his its our
their this that these those what which who whom whose when where why how there here all any some
each every both few more most other such only own same so than too very just also now then once
again about above after before below between into through during under over up down in out on off
of to from by with without for at as if while because until against among per via
good great bad terrible awful excellent amazing wonderful boring love hate like enjoy fun funny
best worst better worse fine nice poor happy sad angry slow fast quick easy hard simple beautiful
ugly movie film story plot actor acting scene music book show series character characters ending
time year day week month today people man woman child world life thing way part place case point
order refund payment price money card account bill charge delivery shipping package item product
service support help problem issue error question answer request email phone call message number
city country name date location company team game sport news market stock business government
law police war president state party vote election school student teacher science computer
data software app website internet network email code bug feature update version release
get make go know take see come think look want give use find tell ask work seem feel try leave
put mean keep let begin show hear play run move live believe bring happen write sit stand lose
pay meet include continue set learn change lead understand watch follow stop create speak read
spend grow open walk win offer remember consider appear buy wait serve die send expect build stay
fall cut reach kill remain suggest raise pass sell require report decide pull cancel return
new old big small long short high low large little young early late right left next last first
second third one two three four five six seven eight nine ten hundred thousand million
really never always often sometimes still even well back much many lot please thanks thank hello
"""
WORDS: tuple[str, ...] = tuple(_WORD_LIST.split())
"""Common English words in the tiny vocabulary (a word not here splits into characters)."""


def tiny_vocab() -> list[str]:
    """The tiny vocabulary: special tokens, words, then characters and ``##`` characters."""
    characters = list(string.ascii_lowercase + string.digits + string.punctuation)
    tokens = [*SPECIAL_TOKENS, *dict.fromkeys(WORDS), *characters]
    tokens += [f"##{c}" for c in characters]
    return list(dict.fromkeys(tokens))


def write_tiny_encoder(
    path: Path,
    *,
    seed: int = 0,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 2,
    intermediate_size: int = 64,
    max_position_embeddings: int = 128,
    feedforward: str = "dense",
    token_mixer: str = "attention",
) -> Path:
    """Write a randomly initialised BERT (seeded, BERT's init) in Hugging Face format to ``path``.

    Returns ``path``, which then holds config.json, model.safetensors, vocab.txt and
    tokenizer.json and loads with ``BertEncoder.from_pretrained`` and ``transformers.BertModel``.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    vocab = tiny_vocab()
    (path / VOCAB_FILE).write_text("\n".join(vocab) + "\n", encoding="utf-8")
    wordpiece_tokenizer(path / VOCAB_FILE).save(str(path / TOKENIZER_FILE))
    config = EncoderConfig(
        vocab_size=len(vocab),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        feedforward=feedforward,
        token_mixer=token_mixer,
    )
    # fork_rng: seeding here must not change the random stream of the caller.
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        encoder = BertEncoder(config)
    return encoder.save_pretrained(path)


HEAD_INIT_STD = 1.0
"""Std of the tiny student's head weights: large, so random heads give spread-out predictions."""


def write_tiny_student(
    artifact_dir: Path,
    heads: Sequence[Head],
    *,
    task: str = "tiny-task",
    kind: str = "finetune",
    seed: int = 0,
    pooling: Pooling = "mean",
    max_length: int = 64,
    temperatures: dict[str, float] | None = None,
    hidden_size: int = 32,
    num_layers: int = 2,
) -> Path:
    """Write a complete, untrained encoder-student artifact (tiny random encoder and heads).

    The layout is what the trainers write (``encoder/``, ``heads.safetensors``, ``student.json``),
    so it loads with ``understudy.serving.loader.load_student`` and exports with ``export_onnx``.
    ``hidden_size`` and ``num_layers`` size the encoder. Returns ``artifact_dir``.
    """
    artifact_dir = Path(artifact_dir)
    encoder_dir = write_tiny_encoder(
        artifact_dir / ENCODER_DIR, seed=seed, hidden_size=hidden_size, num_layers=num_layers
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed + 1)
        model = StudentModel(BertEncoder.from_pretrained(encoder_dir), heads, pooling)
        for parameter in model.classifiers.parameters():
            torch.nn.init.normal_(parameter, std=HEAD_INIT_STD)
    _spread_heads(model, encoder_dir, max_length)
    model.save_heads(artifact_dir / HEADS_FILE)
    StudentManifest(
        kind=kind,
        task=task,
        task_version=1,
        heads=tuple(heads),
        max_length=max_length,
        pooling=pooling,
        temperatures=dict(temperatures or {}),
    ).write(artifact_dir)
    return artifact_dir


def _spread_heads(model: StudentModel, encoder_dir: Path, max_length: int) -> None:
    """Centre and scale each random head on sample sentences so that every label wins for some
    texts: a random encoder embeds all texts alike, so raw random heads pick one label always."""
    input_ids, attention_mask = encode_batch(
        load_tokenizer(encoder_dir, max_length), random_sentences(256, seed=12345)
    )
    with torch.no_grad():
        embedding = model.embed(input_ids, attention_mask)
        for layer in model.head_layers():
            spread = embedding - embedding.mean(dim=0)
            scale = (spread @ layer.weight.T).std(dim=0).clamp(min=1e-6)
            layer.weight.div_(scale[:, None])
            layer.bias.copy_(-(embedding.mean(dim=0) @ layer.weight.T))


def random_sentences(
    count: int, *, seed: int = 0, min_words: int = 3, max_words: int = 24
) -> list[str]:
    """``count`` seeded pseudo-sentences of common words (and a few out-of-vocabulary ones)."""
    rng = random.Random(seed)
    pool = [*WORDS, "unbelievable", "Zorblax", "refunded", "okay", "2024"]
    return [
        " ".join(rng.choice(pool) for _ in range(rng.randint(min_words, max_words))).capitalize()
        + rng.choice([".", "!", "?", ""])
        for _ in range(count)
    ]

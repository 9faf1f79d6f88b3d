"""Tokenizer loading, the pretrained encoder's location, and the multi-head student network."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from understudy.errors import ConfigurationError, ModelError
from understudy.models.classifier import StudentModel
from understudy.models.encoder import BertEncoder
from understudy.models.pretrained import resolve_encoder_dir
from understudy.models.tokenizer import encode_batch, load_tokenizer
from understudy.settings import Settings
from understudy.tasks import Head, HeadKind
from understudy.testing.tiny_models import write_tiny_encoder

HEADS = (
    Head("topic", ("sport", "news", "music")),
    Head("urgent", ("false", "true"), HeadKind.BOOL),
)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_encoder(tmp_path_factory.mktemp("tok") / "encoder", seed=1)


def test_tokenizer_truncates_and_pads_to_longest(tiny_dir: Path) -> None:
    tokenizer = load_tokenizer(tiny_dir, max_length=6)
    ids, mask = encode_batch(tokenizer, ["the movie was great fun today", "hello"])
    assert ids.dtype == mask.dtype == torch.long
    assert ids.shape == (2, 6)
    assert mask.tolist() == [[1] * 6, [1, 1, 1, 0, 0, 0]]
    vocab = tokenizer.get_vocab()
    assert ids[1, :3].tolist() == [vocab["[CLS]"], vocab["hello"], vocab["[SEP]"]]
    assert load_tokenizer(tiny_dir, 32).encode("Zorblax").tokens[1:-1] == [
        "z",
        "##o",
        "##r",
        "##b",
        "##l",
        "##a",
        "##x",
    ]


def test_vocab_txt_gives_the_same_ids_as_tokenizer_json(tiny_dir: Path, tmp_path: Path) -> None:
    vocab_only = tmp_path / "vocab-only"
    vocab_only.mkdir()
    (vocab_only / "vocab.txt").write_text((tiny_dir / "vocab.txt").read_text())
    texts = ["The refund was never paid, Bob!", "what a boring film"]
    a = encode_batch(load_tokenizer(tiny_dir, 32), texts)
    b = encode_batch(load_tokenizer(vocab_only, 32), texts)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ModelError):
        load_tokenizer(tmp_path / "empty", 32)
    assert encode_batch(load_tokenizer(tiny_dir, 32), [])[0].shape == (0, 0)


def test_resolve_encoder_dir_honours_the_setting(tiny_dir: Path, tmp_path: Path) -> None:
    assert resolve_encoder_dir(Settings(base_encoder=tiny_dir)) == tiny_dir
    with pytest.raises(ConfigurationError, match="not a BERT directory"):
        resolve_encoder_dir(Settings(base_encoder=tmp_path))


def test_student_model_heads_and_padding_invariant_mean_pooling(
    tiny_dir: Path, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    model = StudentModel(BertEncoder.from_pretrained(tiny_dir), HEADS, "mean").eval()
    tokenizer = load_tokenizer(tiny_dir, 32)
    ids, mask = encode_batch(tokenizer, ["hello", "the refund was never paid please help now"])
    alone = encode_batch(tokenizer, ["hello"])
    with torch.no_grad():
        logits = model(ids, mask)
        assert {k: tuple(v.shape) for k, v in logits.items()} == {"topic": (2, 3), "urgent": (2, 2)}
        # Padding must not change a text's embedding.
        assert torch.allclose(model.embed(ids, mask)[0], model.embed(*alone)[0], atol=1e-5)
        cls = StudentModel(model.encoder, HEADS, "cls").eval()
        assert torch.equal(cls.embed(ids, mask), model.encoder(ids, mask)[:, 0])

    model.save_heads(tmp_path / "heads.safetensors")
    copy = StudentModel(model.encoder, HEADS, "mean").eval()
    copy.load_heads(tmp_path / "heads.safetensors")
    with torch.no_grad():
        assert torch.equal(copy(ids, mask)["topic"], logits["topic"])
    with pytest.raises(ModelError, match="wrong shape"):
        StudentModel(model.encoder, (Head("topic", ("a", "b")),)).load_heads(
            tmp_path / "heads.safetensors"
        )
    with pytest.raises(ModelError, match="pooling"):
        StudentModel(model.encoder, HEADS, "max")  # type: ignore[arg-type]

"""BERT WordPiece tokenization with the ``tokenizers`` library: truncation and batch padding."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece
from torch import Tensor

from understudy.errors import ModelError

TOKENIZER_FILE = "tokenizer.json"
VOCAB_FILE = "vocab.txt"
PAD_TOKEN, UNK_TOKEN, CLS_TOKEN, SEP_TOKEN, MASK_TOKEN = (
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
)
SPECIAL_TOKENS = (PAD_TOKEN, UNK_TOKEN, CLS_TOKEN, SEP_TOKEN, MASK_TOKEN)


def wordpiece_tokenizer(vocab_path: Path, *, lowercase: bool = True) -> Tokenizer:
    """A BERT tokenizer built from a ``vocab.txt`` (one token per line, id = line number)."""
    vocab = {
        token: i
        for i, token in enumerate(Path(vocab_path).read_text(encoding="utf-8").splitlines())
    }
    missing = [t for t in (PAD_TOKEN, UNK_TOKEN, CLS_TOKEN, SEP_TOKEN) if t not in vocab]
    if missing:
        raise ModelError(f"{vocab_path} lacks the special tokens {missing}")
    tokenizer = Tokenizer(WordPiece(vocab, unk_token=UNK_TOKEN))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.BertProcessing(
        (SEP_TOKEN, vocab[SEP_TOKEN]), (CLS_TOKEN, vocab[CLS_TOKEN])
    )
    tokenizer.decoder = decoders.WordPiece()
    return tokenizer


def load_tokenizer(path: Path, max_length: int) -> Tokenizer:
    """The tokenizer of an encoder directory, truncating to ``max_length`` tokens and padding each
    batch to its longest sequence.

    Reads ``tokenizer.json`` when present, else builds a WordPiece tokenizer from ``vocab.txt``
    (lower-casing unless ``tokenizer_config.json`` says ``do_lower_case: false``).
    """
    path = Path(path)
    if (path / TOKENIZER_FILE).is_file():
        tokenizer = Tokenizer.from_file(str(path / TOKENIZER_FILE))
    elif (path / VOCAB_FILE).is_file():
        lowercase = True
        config_path = path / "tokenizer_config.json"
        if config_path.is_file():
            lowercase = bool(json.loads(config_path.read_text()).get("do_lower_case", True))
        tokenizer = wordpiece_tokenizer(path / VOCAB_FILE, lowercase=lowercase)
    else:
        raise ModelError(f"{path} has neither {TOKENIZER_FILE} nor {VOCAB_FILE}")
    pad_id = tokenizer.token_to_id(PAD_TOKEN)
    if pad_id is None:
        raise ModelError(f"the tokenizer in {path} has no {PAD_TOKEN} token")
    tokenizer.enable_truncation(max_length=max_length)
    # Packaged tokenizer.json files often pad to a fixed length; padding to the batch's longest
    # sequence instead keeps short inputs cheap.
    tokenizer.enable_padding(pad_id=pad_id, pad_token=PAD_TOKEN)
    return tokenizer


def encode_batch(tokenizer: Tokenizer, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
    """Token ids and attention mask (1 = token, 0 = padding) of ``texts``: LongTensors [B, T]."""
    encodings = tokenizer.encode_batch(list(texts))
    input_ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)
    attention_mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.long)
    if not encodings:
        input_ids, attention_mask = input_ids.view(0, 0), attention_mask.view(0, 0)
    return input_ids, attention_mask

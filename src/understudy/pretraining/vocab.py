"""A WordPiece vocabulary trained on the pretraining corpus, saved as tokenizer.json + vocab.txt.

Cramming trains its own vocabulary on its corpus; a small one (a few thousand pieces) keeps the
embedding matrix and the MLM softmax cheap for a tiny CPU-trained model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

from understudy.errors import ConfigurationError
from understudy.models.tokenizer import (
    CLS_TOKEN,
    SEP_TOKEN,
    SPECIAL_TOKENS,
    TOKENIZER_FILE,
    UNK_TOKEN,
    VOCAB_FILE,
)


def train_wordpiece(texts: Sequence[str], vocab_size: int) -> Tokenizer:
    """A lower-casing BERT WordPiece tokenizer with at most ``vocab_size`` pieces.

    Special tokens come first in ``SPECIAL_TOKENS`` order, so ``[PAD]`` is id 0 as BERT expects.
    """
    if not texts:
        raise ConfigurationError("cannot train a vocabulary on an empty corpus")
    tokenizer = Tokenizer(models.WordPiece(unk_token=UNK_TOKEN))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False
    )
    tokenizer.train_from_iterator(texts, trainer)
    ids = special_token_ids(tokenizer)
    tokenizer.post_processor = processors.BertProcessing(
        (SEP_TOKEN, ids[SEP_TOKEN]), (CLS_TOKEN, ids[CLS_TOKEN])
    )
    tokenizer.decoder = decoders.WordPiece()
    return tokenizer


def special_token_ids(tokenizer: Tokenizer) -> dict[str, int]:
    """Id of each of BERT's special tokens; ``ConfigurationError`` if the vocabulary lacks one."""
    ids = {token: tokenizer.token_to_id(token) for token in SPECIAL_TOKENS}
    missing = [token for token, i in ids.items() if i is None]
    if missing:
        raise ConfigurationError(f"the vocabulary lacks the special tokens {missing}")
    return {token: i for token, i in ids.items() if i is not None}


def save_vocabulary(tokenizer: Tokenizer, directory: Path) -> None:
    """Write ``tokenizer.json`` and ``vocab.txt`` (one piece per line, line number = id)."""
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(directory / TOKENIZER_FILE))
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    (directory / VOCAB_FILE).write_text(
        "".join(f"{token}\n" for token, _ in vocab), encoding="utf-8"
    )

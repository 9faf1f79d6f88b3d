"""Crammed masked-language-model pretraining of small BERT encoders on offline text.

``pretrain(texts, out_dir, PretrainConfig(...))`` trains a vocabulary and an encoder and writes a
Hugging Face-format directory that ``BertEncoder.from_pretrained`` loads; ``corpus`` gathers the
texts (offline datasets, a task's logged inputs).
"""

from understudy.pretraining.trainer import PretrainConfig, PretrainResult, pretrain

__all__ = ["PretrainConfig", "PretrainResult", "pretrain"]

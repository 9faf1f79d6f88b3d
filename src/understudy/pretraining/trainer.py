"""Crammed masked-language-model pretraining of a small BERT, scaled to a CPU.

The cramming recipe (Geiping & Goldstein, arXiv:2212.14034) kept where it fits this encoder: a
vocabulary trained on the corpus, short packed sequences, no biases in the linear layers (here:
the encoder's linear biases are zeroed and frozen, so the checkpoint stays a standard BERT that
``BertEncoder.from_pretrained`` and ``transformers`` load), no dropout, AdamW with a triangular
one-cycle learning rate, gradient accumulation and clipping, sparse MLM prediction. Not kept:
cramming's pre-LayerNorm blocks (this encoder is post-LN, as BERT and MiniLM are).

Output directory: ``config.json`` + ``model.safetensors`` (the encoder), ``tokenizer.json`` +
``vocab.txt``, ``pretrain.json`` (config, corpus size, loss curve, held-out MLM loss/accuracy,
wall time), and ``checkpoints/step-<n>/`` every ``checkpoint_every`` optimizer steps.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from understudy.errors import ConfigurationError
from understudy.models.config import EncoderConfig
from understudy.models.encoder import BertEncoder
from understudy.models.layers.fff import default_depth
from understudy.models.tokenizer import CLS_TOKEN, MASK_TOKEN, SEP_TOKEN
from understudy.pretraining.mlm import MaskedLanguageModel, mask_tokens, pack_sequences
from understudy.pretraining.vocab import save_vocabulary, special_token_ids, train_wordpiece

REPORT_FILE = "pretrain.json"
CHECKPOINTS_DIR = "checkpoints"
# Share of packed sequences held back to measure MLM loss/accuracy at the end.
_HELDOUT_FRACTION = 0.05


@dataclass(frozen=True)
class PretrainConfig:
    """Size of the model and the training budget; the defaults run in minutes on 2 CPU cores.

    ``steps`` are optimizer steps, each over ``batch_size * accumulation`` sequences of
    ``seq_len`` tokens. ``feedforward`` / ``token_mixer`` name registry entries (``"fff"``,
    ``"fourier"``); ``fff_depth`` None picks ``default_depth(intermediate_size)``. ``device``:
    ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
    """

    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 2
    intermediate_size: int = 512
    feedforward: str = "dense"
    token_mixer: str = "attention"
    fff_depth: int | None = None
    fff_leaf_width: int = 1
    vocab_size: int = 8192
    seq_len: int = 64
    batch_size: int = 32
    accumulation: int = 2
    steps: int = 300
    peak_learning_rate: float = 1e-3
    weight_decay: float = 0.01
    gradient_clip: float = 0.5
    mask_probability: float = 0.15
    checkpoint_every: int = 100
    seed: int = 0
    device: str = "auto"

    def encoder_config(self, vocab_size: int) -> EncoderConfig:
        """The encoder this pretraining builds (dropout off, as cramming pretrains)."""
        options: dict[str, Any] = {}
        if self.feedforward == "fff":
            depth = self.fff_depth
            options = {
                "fff_depth": default_depth(self.intermediate_size) if depth is None else depth,
                "fff_leaf_width": self.fff_leaf_width,
                "fff_bias": False,
            }
        return EncoderConfig(
            vocab_size=vocab_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            intermediate_size=self.intermediate_size,
            max_position_embeddings=self.seq_len,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            feedforward=self.feedforward,
            token_mixer=self.token_mixer,
            layer_options=options,
        )


@dataclass(frozen=True)
class PretrainResult:
    """Where the encoder went and how pretraining ended (MLM figures on held-out sequences)."""

    out_dir: Path
    steps: int
    train_tokens: int
    final_train_loss: float
    heldout_loss: float
    heldout_accuracy: float
    seconds: float


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available else CPU; anything else as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise ConfigurationError(f"device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def drop_linear_biases(model: nn.Module) -> None:
    """Zero and freeze the bias of every ``nn.Linear`` in ``model`` (cramming has none)."""
    for module in model.modules():
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
            module.bias.requires_grad_(False)


def _evaluate(
    model: MaskedLanguageModel,
    sequences: torch.Tensor,
    config: PretrainConfig,
    mask_kwargs: dict[str, Any],
) -> tuple[float, float]:
    """Mean MLM loss (nats) and accuracy over ``sequences`` with a fixed masking seed."""
    generator = torch.Generator().manual_seed(config.seed + 1)
    device = next(model.parameters()).device
    total_loss, total_correct, total_masked = 0.0, 0, 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(sequences), config.batch_size):
            batch = sequences[start : start + config.batch_size]
            inputs, labels = mask_tokens(batch, generator=generator, **mask_kwargs)
            masked = int((labels != -100).sum())
            if masked == 0:
                continue
            loss, correct = model(inputs.to(device), labels.to(device))
            total_loss += float(loss) * masked
            total_correct += int(correct)
            total_masked += masked
    model.train()
    if total_masked == 0:
        return math.nan, math.nan
    return total_loss / total_masked, total_correct / total_masked


def pretrain(
    texts: Sequence[str],
    out_dir: Path,
    config: PretrainConfig | None = None,
    *,
    show_progress: bool = True,
) -> PretrainResult:
    """MLM-pretrain a small BERT on ``texts`` and write it to ``out_dir`` (see the module doc)."""
    config = config or PretrainConfig()
    started = time.perf_counter()
    out_dir = Path(out_dir)
    torch.manual_seed(config.seed)
    tokenizer = train_wordpiece(texts, config.vocab_size)
    ids = special_token_ids(tokenizer)
    sequences = pack_sequences(
        tokenizer, texts, config.seq_len, cls_id=ids[CLS_TOKEN], sep_id=ids[SEP_TOKEN]
    )
    order = torch.randperm(len(sequences), generator=torch.Generator().manual_seed(config.seed))
    sequences = sequences[order]
    heldout_rows = max(1, int(len(sequences) * _HELDOUT_FRACTION)) if len(sequences) > 1 else 0
    heldout, train = sequences[:heldout_rows], sequences[heldout_rows:]

    device = resolve_device(config.device)
    encoder = BertEncoder(config.encoder_config(tokenizer.get_vocab_size()))
    drop_linear_biases(encoder)
    model = MaskedLanguageModel(encoder).to(device).train()
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.peak_learning_rate,
    )
    # Cramming's one-cycle: linear warm-up to the peak at mid-training, linear decay to ~0.
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=config.peak_learning_rate,
        total_steps=config.steps,
        pct_start=0.5,
        anneal_strategy="linear",
        cycle_momentum=False,
    )
    mask_kwargs: dict[str, Any] = {
        "mask_id": ids[MASK_TOKEN],
        "vocab_size": tokenizer.get_vocab_size(),
        "special_ids": list(ids.values()),
        "probability": config.mask_probability,
    }
    generator = torch.Generator().manual_seed(config.seed)
    history: list[dict[str, float]] = []
    loss_value = math.nan
    columns = (
        TextColumn("[bold]pretraining"),
        BarColumn(),
        TextColumn("step {task.completed}/{task.total} loss {task.fields[loss]:.3f}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, disable=not show_progress) as progress:
        bar = progress.add_task("pretrain", total=config.steps, loss=math.nan)
        for step in range(config.steps):
            losses = []
            for _ in range(config.accumulation):
                rows = torch.randint(len(train), (config.batch_size,), generator=generator)
                inputs, labels = mask_tokens(train[rows], generator=generator, **mask_kwargs)
                loss, _ = model(inputs.to(device), labels.to(device))
                (loss / config.accumulation).backward()
                losses.append(float(loss.detach()))
            nn.utils.clip_grad_norm_(model.parameters(), config.gradient_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            schedule.step()
            loss_value = sum(losses) / len(losses)
            history.append(
                {"step": step + 1, "loss": loss_value, "lr": float(schedule.get_last_lr()[0])}
            )
            progress.update(bar, advance=1, loss=loss_value)
            if config.checkpoint_every and (step + 1) % config.checkpoint_every == 0:
                checkpoint = out_dir / CHECKPOINTS_DIR / f"step-{step + 1}"
                encoder.save_pretrained(checkpoint)
                save_vocabulary(tokenizer, checkpoint)

    heldout_loss, heldout_accuracy = _evaluate(model, heldout, config, mask_kwargs)
    encoder.cpu().save_pretrained(out_dir)
    save_vocabulary(tokenizer, out_dir)
    seconds = time.perf_counter() - started
    result = PretrainResult(
        out_dir=out_dir,
        steps=config.steps,
        train_tokens=config.steps * config.accumulation * config.batch_size * config.seq_len,
        final_train_loss=loss_value,
        heldout_loss=heldout_loss,
        heldout_accuracy=heldout_accuracy,
        seconds=seconds,
    )
    report = {
        "config": dataclasses.asdict(config),
        "device": str(device),
        "corpus_texts": len(texts),
        "packed_sequences": {"train": len(train), "heldout": len(heldout)},
        "result": {k: str(v) if isinstance(v, Path) else v for k, v in vars(result).items()},
        "history": history,
    }
    (out_dir / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return result

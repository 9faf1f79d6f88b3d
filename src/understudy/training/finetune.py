"""The fine-tuned student: encoder + one linear head per task head, trained end to end.

The loop reads top to bottom (nanoGPT style): build the model, choose which parameters train and at
what rate, then epochs of AdamW steps with linear warmup/decay, evaluating on the holdout after
each epoch and keeping the best weights (early stopping); with few examples, a fresh model then
trains on all of them, holdout included, for the epochs early stopping kept (``refit``). Targets
are probability distributions per head, so the distillation trainer overrides only where training
starts (``starting_encoder``, ``kept_layers``) and what it learns (``targets``,
``example_weights``, ``loss``).
"""

from __future__ import annotations

import copy
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import Tensor, nn

from understudy.errors import ConfigurationError
from understudy.models.classifier import StudentModel
from understudy.models.encoder import BertEncoder, init_weights
from understudy.models.pretrained import resolve_encoder_dir
from understudy.models.tokenizer import TOKENIZER_FILE, VOCAB_FILE, encode_batch, load_tokenizer
from understudy.serving.artifact import ENCODER_DIR, HEADS_FILE, StudentManifest
from understudy.settings import Settings
from understudy.tasks import Example, Task
from understudy.training.artifact import TrainResult, write_run_record
from understudy.training.calibration import HeadCalibration, calibrate
from understudy.training.config import FinetuneConfig
from understudy.training.data import check_examples, data_hash, label_counts, split_holdout
from understudy.training.embeddings import embed_texts
from understudy.training.lora import add_lora, merge_lora
from understudy.training.probe import chosen_strengths, fit_heads
from understudy.training.progress import progress_bar

# Tokenizer files copied next to the saved encoder so that the artifact is self-contained.
_TOKENIZER_FILES = (TOKENIZER_FILE, VOCAB_FILE, "tokenizer_config.json", "special_tokens_map.json")


@dataclass
class Batch:
    """Tokenized texts with, per head, target distributions [B, C], a has-label mask [B] and
    example weights [B]."""

    input_ids: Tensor
    attention_mask: Tensor
    targets: dict[str, Tensor]
    masks: dict[str, Tensor]
    weights: Tensor


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so that a run is reproducible on the same machine."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def linear_schedule(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Learning-rate multiplier per step: linear warmup to 1 over ``warmup_steps``, then linear
    decay to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


def supervised_contrastive_loss(embedding: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """Supervised contrastive loss (Khosla et al., 2020) of embeddings [B, H] with labels [B]:
    for each example that has another of its label in the batch, minus the mean log-probability,
    under a softmax over cosine similarities / ``temperature`` to the other examples, of those
    same-label ones. Zero when no example has a partner."""
    unit = nn.functional.normalize(embedding, dim=-1)
    itself = torch.eye(len(labels), dtype=torch.bool)
    similarity = (unit @ unit.T / temperature).masked_fill(itself, float("-inf"))
    log_prob = similarity - torch.logsumexp(similarity, dim=1, keepdim=True)
    positive = (labels[:, None] == labels[None, :]) & ~itself
    partners = positive.sum(dim=1)
    anchored = partners > 0
    if not anchored.any():
        return torch.zeros(())
    summed = log_prob.masked_fill(~positive, 0.0).sum(dim=1)
    return -(summed[anchored] / partners[anchored]).mean()


class FinetuneTrainer:
    """Trains the fine-tuned student; ``train`` writes a complete encoder artifact."""

    kind = "finetune"

    def __init__(self, config: FinetuneConfig | None = None) -> None:
        self.config = config or FinetuneConfig()

    # --- what the distillation trainer overrides -------------------------------------------

    def starting_encoder(self) -> Path:
        """The encoder directory training starts from (weights and tokenizer): the configured
        one, else the settings' base encoder."""
        return self.config.encoder_dir or resolve_encoder_dir(Settings())

    def kept_layers(self, encoder_dir: Path) -> int | None:
        """How many of the starting encoder's layers the student keeps (None: all)."""
        return self.config.num_layers

    def targets(self, task: Task, examples: Sequence[Example]) -> dict[str, Tensor]:
        """Per head, the target distribution [N, C] of each example: one-hot of its label (rows
        of examples without that head's label are zero and masked out of the loss)."""
        out = {}
        for head in task.heads:
            target = torch.zeros(len(examples), len(head.labels))
            for row, example in enumerate(examples):
                if head.name in example.labels:
                    target[row, head.labels.index(example.labels[head.name])] = 1.0
            out[head.name] = target
        return out

    def example_weights(self, examples: Sequence[Example]) -> Tensor:
        """Weight [N] of each example in the loss: ``Example.weight``."""
        return torch.tensor([e.weight for e in examples], dtype=torch.float32)

    def loss(self, logits: Tensor, targets: Tensor, weights: Tensor, head: str) -> Tensor:
        """Weighted mean cross-entropy of ``logits`` [B, C] against target distributions [B, C]."""
        per_example = -(targets * torch.log_softmax(logits, dim=-1)).sum(dim=-1)
        return (weights * per_example).sum() / weights.sum().clamp(min=1e-8)

    # --- building blocks -------------------------------------------------------------------

    def build_model(self, task: Task, encoder_dir: Path) -> StudentModel:
        """The pretrained encoder with fresh heads; the top ``reinit_top`` layers re-initialised."""
        config = self.config
        encoder = BertEncoder.from_pretrained(encoder_dir, num_layers=self.kept_layers(encoder_dir))
        layers = len(encoder.blocks)
        if config.freeze_bottom + config.reinit_top > layers:
            raise ConfigurationError(
                f"freeze_bottom ({config.freeze_bottom}) + reinit_top ({config.reinit_top}) "
                f"exceeds the encoder's {layers} layers"
            )
        for block in list(encoder.blocks)[layers - config.reinit_top :]:
            block.apply(init_weights)
        return StudentModel(encoder, task.heads, config.pooling)

    def fit_probe_heads(
        self, model: StudentModel, task: Task, train: list[Example], tokenizer: Tokenizer
    ) -> None:
        """Set each head to the logistic regression that the probe student would fit on the
        model's frozen embeddings of ``train`` (the LP of LP-FT)."""
        features = embed_texts(
            model.encoder,
            tokenizer,
            [e.text for e in train],
            pooling=model.pooling,
            batch_size=2 * self.config.batch_size,
        )
        seed = self.config.seed
        heads = fit_heads(
            task, train, features, chosen_strengths(task, train, features, seed), seed
        )
        state: dict[str, Tensor] = {}
        for name, (weight, bias) in heads.items():
            state[f"{name}.weight"] = torch.from_numpy(weight).float()
            state[f"{name}.bias"] = torch.from_numpy(bias).float()
        model.load_head_state(state)

    def fresh_model(
        self, task: Task, encoder_dir: Path, train: list[Example], tokenizer: Tokenizer
    ) -> StudentModel:
        """The model training starts from, seeded: random heads, or probe-fitted on ``train``."""
        seed_everything(self.config.seed)
        model = self.build_model(task, encoder_dir)
        if self.config.head_init == "probe":
            self.fit_probe_heads(model, task, train, tokenizer)
        return model

    def optimiser(
        self, model: StudentModel, n_train: int
    ) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR, int, int]:
        """AdamW over ``parameter_groups`` with linear warmup then decay over the whole run,
        and the run's shape: (optimizer, scheduler, steps per epoch, epochs). With few
        examples the epoch count is raised until the run takes ``min_steps`` steps."""
        config = self.config
        optimizer = torch.optim.AdamW(self.parameter_groups(model))
        steps_per_epoch = math.ceil(n_train / config.batch_size)
        epochs = max(config.epochs, math.ceil(config.min_steps / steps_per_epoch))
        total_steps = steps_per_epoch * epochs
        warmup = max(1, round(config.warmup_fraction * total_steps))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, linear_schedule(warmup, total_steps)
        )
        return optimizer, scheduler, steps_per_epoch, epochs

    def train_epoch(
        self,
        model: StudentModel,
        batches: list[Batch],
        optimizer: torch.optim.AdamW,
        scheduler: torch.optim.lr_scheduler.LambdaLR,
        advance: Callable[[int], None],
        temperature: float,
    ) -> float:
        """One AdamW step per batch (train mode, gradients clipped) with the contrastive loss at
        ``temperature``; the mean training loss."""
        model.train()
        trainable = [p for group in optimizer.param_groups for p in group["params"]]
        total = 0.0
        for batch in batches:
            loss = self.batch_loss(model, batch, temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            nn.utils.clip_grad_norm_(trainable, self.config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            total += float(loss.detach())
            advance(1)
        return total / len(batches)

    def refit(
        self,
        task: Task,
        encoder_dir: Path,
        examples: list[Example],
        tokenizer: Tokenizer,
        generator: random.Random,
        epochs: int,
    ) -> StudentModel:
        """A fresh model trained on every example, holdout included, for the ``epochs`` that
        early stopping chose (fewer if the run on all examples is shorter), on that run's
        schedule."""
        model = self.fresh_model(task, encoder_dir, examples, tokenizer)
        optimizer, scheduler, steps_per_epoch, run_epochs = self.optimiser(model, len(examples))
        temperature = self.contrastive_temperature(len(examples))
        epochs = min(epochs, run_epochs)
        enabled = self.config.progress
        with progress_bar(
            "refitting on all examples", steps_per_epoch * epochs, enabled
        ) as advance:
            for _ in range(epochs):
                batches = self.batches(task, examples, tokenizer, shuffle=True, generator=generator)
                self.train_epoch(model, batches, optimizer, scheduler, advance, temperature)
        return model

    def parameter_groups(self, model: StudentModel) -> list[dict[str, object]]:
        """AdamW groups: heads at ``head_learning_rate``; encoder layer i of L at
        ``learning_rate * layer_lr_decay**(L - 1 - i)``, embeddings one step further down; frozen
        layers left out; no weight decay on biases and LayerNorm weights. With LoRA, pretrained
        weights are frozen and only the adapters (and re-initialised layers) train."""
        config = self.config
        blocks = list(model.encoder.blocks)
        layers = len(blocks)
        trainable_from = config.freeze_bottom
        reinit_from = layers - config.reinit_top
        model.encoder.embeddings.requires_grad_(False)
        for block in blocks[:trainable_from]:
            block.requires_grad_(False)
        adapted: list[nn.Module] = []
        if config.lora_rank > 0:
            for block in blocks[trainable_from:reinit_from]:
                block.requires_grad_(False)
            adapted = blocks[trainable_from:reinit_from]
            add_lora(adapted, config.lora_rank, config.lora_alpha, config.lora_dropout)
        groups: list[dict[str, object]] = []

        def add(module: nn.Module, lr: float) -> None:
            decay = [p for n, p in module.named_parameters() if p.requires_grad and p.ndim >= 2]
            plain = [p for n, p in module.named_parameters() if p.requires_grad and p.ndim < 2]
            if decay:
                groups.append({"params": decay, "lr": lr, "weight_decay": config.weight_decay})
            if plain:
                groups.append({"params": plain, "lr": lr, "weight_decay": 0.0})

        if config.freeze_bottom == 0 and config.lora_rank == 0:
            model.encoder.embeddings.requires_grad_(True)
            add(model.encoder.embeddings, config.learning_rate * config.layer_lr_decay**layers)
        for index in range(trainable_from, layers):
            lr = config.learning_rate * config.layer_lr_decay ** (layers - 1 - index)
            add(blocks[index], lr)
        add(model.classifiers, config.head_learning_rate)
        return groups

    def batches(
        self,
        task: Task,
        examples: Sequence[Example],
        tokenizer: Tokenizer,
        *,
        shuffle: bool,
        generator: random.Random,
    ) -> list[Batch]:
        """Examples cut into tokenized batches of ``batch_size`` (shuffled when training)."""
        order = list(range(len(examples)))
        if shuffle:
            generator.shuffle(order)
        targets = self.targets(task, examples)
        weights = self.example_weights(examples)
        batches = []
        for start in range(0, len(order), self.config.batch_size):
            rows = order[start : start + self.config.batch_size]
            input_ids, attention_mask = encode_batch(tokenizer, [examples[i].text for i in rows])
            index = torch.tensor(rows)
            batches.append(
                Batch(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    targets={name: t[index] for name, t in targets.items()},
                    masks={name: t[index].sum(dim=-1) > 0 for name, t in targets.items()},
                    weights=weights[index],
                )
            )
        return batches

    def contrastive_temperature(self, n_examples: int) -> float:
        """The contrastive loss's temperature in a run on ``n_examples`` labelled examples:
        sharper below ``sharp_contrastive_below``."""
        config = self.config
        if n_examples < config.sharp_contrastive_below:
            return config.sharp_contrastive_temperature
        return config.contrastive_temperature

    def batch_loss(self, model: StudentModel, batch: Batch, temperature: float) -> Tensor:
        """Sum over heads of each head's loss on the examples that carry its label (mixed with
        the supervised contrastive loss at ``temperature`` when ``contrastive_weight`` > 0)."""
        embedding = model.embed(batch.input_ids, batch.attention_mask)
        logits = model.classify(embedding)
        share = self.config.contrastive_weight
        total = torch.zeros(())
        for name, head_logits in logits.items():
            mask = batch.masks[name]
            if not mask.any():
                continue
            targets = batch.targets[name][mask]
            loss = self.loss(head_logits[mask], targets, batch.weights[mask], name)
            if share > 0:
                # The likeliest label of each target (the distillation trainer's targets carry
                # an extra flag column after the labels' ones).
                labels = targets[:, : head_logits.shape[-1]].argmax(dim=-1)
                contrastive = supervised_contrastive_loss(embedding[mask], labels, temperature)
                loss = (1 - share) * loss + share * contrastive
            total = total + loss
        return total

    @torch.inference_mode()
    def holdout_logits(
        self, model: StudentModel, task: Task, batches: list[Batch]
    ) -> dict[str, Tensor]:
        """Logits per head [N, C] over the holdout batches, in batch order (eval mode)."""
        model.eval()
        parts: dict[str, list[Tensor]] = {head.name: [] for head in task.heads}
        for batch in batches:
            for name, logits in model(batch.input_ids, batch.attention_mask).items():
                parts[name].append(logits)
        return {name: torch.cat(chunks) for name, chunks in parts.items()}

    @staticmethod
    def _hard_targets(task: Task, holdout: Sequence[Example]) -> dict[str, np.ndarray]:
        """Label index per holdout example and head, -1 where the example has no label."""
        return {
            head.name: np.array(
                [
                    head.labels.index(e.labels[head.name]) if head.name in e.labels else -1
                    for e in holdout
                ],
                dtype=np.int64,
            )
            for head in task.heads
        }

    @staticmethod
    def _score(logits: dict[str, Tensor], hard: dict[str, np.ndarray]) -> tuple[float, float]:
        """(mean accuracy over heads, minus mean NLL over heads) on the holdout: higher is
        better; accuracy decides and NLL breaks ties (it moves when accuracy on a small holdout
        does not)."""
        accuracies, losses = [], []
        for name, head_logits in logits.items():
            labelled = hard[name] >= 0
            target = torch.from_numpy(hard[name][labelled])
            chosen = head_logits[torch.from_numpy(labelled)]
            accuracies.append(float((chosen.argmax(dim=-1) == target).float().mean()))
            losses.append(float(nn.functional.cross_entropy(chosen, target)))
        return float(np.mean(accuracies)), -float(np.mean(losses))

    # --- the loop --------------------------------------------------------------------------

    def train(self, task: Task, examples: list[Example], out_dir: Path) -> TrainResult:
        """Fine-tune on ``examples`` minus a holdout, early-stop and calibrate on the holdout,
        refit on every example when there are fewer than ``refit_below``, write the artifact to
        ``out_dir``.

        Raises InsufficientData when a head has too few labels, ConfigurationError for
        inconsistent options or a missing encoder.
        """
        config = self.config
        check_examples(task, examples)
        encoder_dir = self.starting_encoder()
        generator = random.Random(config.seed)
        started = time.perf_counter()

        train, holdout = split_holdout(examples, task, config.holdout_fraction, config.seed)
        tokenizer = load_tokenizer(encoder_dir, config.max_length)
        model = self.fresh_model(task, encoder_dir, train, tokenizer)
        optimizer, scheduler, steps_per_epoch, epochs = self.optimiser(model, len(train))
        holdout_batches = self.batches(task, holdout, tokenizer, shuffle=False, generator=generator)
        hard = self._hard_targets(task, holdout)
        temperature = self.contrastive_temperature(len(examples))

        start_score = self._score(self.holdout_logits(model, task, holdout_batches), hard)
        best_score = start_score
        best_state = copy.deepcopy(model.state_dict())
        best_epoch, stale, history = 0, 0, []
        total_steps = steps_per_epoch * epochs
        with progress_bar(f"fine-tuning ({self.kind})", total_steps, config.progress) as advance:
            for epoch in range(1, epochs + 1):
                batches = self.batches(task, train, tokenizer, shuffle=True, generator=generator)
                train_loss = self.train_epoch(
                    model, batches, optimizer, scheduler, advance, temperature
                )
                score = self._score(self.holdout_logits(model, task, holdout_batches), hard)
                history.append(
                    {
                        "epoch": epoch,
                        "train_loss": train_loss,
                        "holdout_accuracy": score[0],
                        "holdout_nll": -score[1],
                    }
                )
                if score > best_score:
                    best_score, best_epoch, stale = score, epoch, 0
                    best_state = copy.deepcopy(model.state_dict())
                else:
                    stale += 1
                    if stale >= config.patience and epoch * steps_per_epoch >= config.min_steps:
                        advance(steps_per_epoch * (epochs - epoch))
                        break
        model.load_state_dict(best_state)
        trained = time.perf_counter()

        logits = self.holdout_logits(model, task, holdout_batches)
        calibration: dict[str, HeadCalibration] = {}
        for head in task.heads:
            labelled = hard[head.name] >= 0
            calibration[head.name] = calibrate(
                logits[head.name].numpy().astype(np.float64)[labelled], hard[head.name][labelled]
            )
        calibrated = time.perf_counter()
        refitted = len(examples) < config.refit_below and best_epoch > 0
        if refitted:
            model = self.refit(task, encoder_dir, examples, tokenizer, generator, best_epoch)
        refit_done = time.perf_counter()
        merge_lora(model)
        self.save(model, task, encoder_dir, out_dir, calibration)
        finished = time.perf_counter()

        result = TrainResult(
            kind=self.kind,
            out_dir=out_dir,
            n_train=len(examples) if refitted else len(train),
            n_holdout=len(holdout),
            data_hash=data_hash(examples),
            calibration=calibration,
            timings_s={
                "train": trained - started,
                "refit": refit_done - calibrated,
                "calibrate_and_save": (calibrated - trained) + (finished - refit_done),
                "total": finished - started,
            },
            extra={
                "epochs": epochs,
                "best_epoch": best_epoch,
                "refitted_on_all": refitted,
                "contrastive_temperature": temperature,
                "start": {"holdout_accuracy": start_score[0], "holdout_nll": -start_score[1]},
                "history": history,
                "base_encoder": str(encoder_dir),
            },
        )
        counts = label_counts(task, examples)
        write_run_record(out_dir, result=result, task=task, config=config, label_counts=counts)
        return result

    def save(
        self,
        model: StudentModel,
        task: Task,
        encoder_dir: Path,
        out_dir: Path,
        calibration: dict[str, HeadCalibration],
    ) -> None:
        """Write ``encoder/`` (weights, tokenizer), ``heads.safetensors`` and ``student.json``."""
        out_dir.mkdir(parents=True, exist_ok=True)
        saved = model.encoder.save_pretrained(out_dir / ENCODER_DIR)
        for name in _TOKENIZER_FILES:
            if (Path(encoder_dir) / name).is_file():
                shutil.copyfile(Path(encoder_dir) / name, saved / name)
        model.save_heads(out_dir / HEADS_FILE)
        StudentManifest(
            kind=self.kind,
            task=task.key,
            task_version=task.version,
            heads=task.heads,
            max_length=self.config.max_length,
            pooling=self.config.pooling,
            temperatures={name: c.temperature for name, c in calibration.items()},
            base_encoder=str(Path(encoder_dir).resolve()),
        ).write(out_dir)

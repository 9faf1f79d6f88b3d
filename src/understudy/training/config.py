"""Arguments of each trainer, one frozen dataclass per student kind (as setfit's TrainingArguments).

Defaults work on a 2-core laptop. ``holdout_fraction`` is the share of the examples carved off
(stratified) to fit the calibration temperature (and, for fine-tuning, to early-stop on); it is
never trained on by encoder students.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Pooling = Literal["mean", "cls"]
HeadInit = Literal["probe", "random"]


@dataclass(frozen=True)
class NgramConfig:
    """TF-IDF word and character n-grams + logistic regression per head.

    The regression is fitted by SGD on the log loss with L2 penalty ``alpha`` (per example): on
    10k texts x 100k+ sparse features it converges in a fraction of a second, where lbfgs took
    tens of seconds for the same held-out accuracy on rt-sentiment and trec6.
    ``refit_on_all``: after fitting the temperature on the holdout, refit the classifier on every
    example (it takes well under a second and helps most at small label budgets); the temperature
    is kept.
    """

    seed: int = 0
    holdout_fraction: float = 0.15
    word_ngrams: tuple[int, int] = (1, 2)
    char_ngrams: tuple[int, int] = (2, 5)
    max_features: int = 100_000
    alpha: float = 1e-5
    epochs: int = 50
    refit_on_all: bool = True


@dataclass(frozen=True)
class ProbeConfig:
    """Frozen encoder embeddings + logistic regression per head.

    ``encoder_dir``: a local HF BERT directory (None: the configured / packaged base encoder).
    ``cache_dir``: where pooled embeddings are cached per text across runs (None: memory only).
    ``max_length`` in tokens; ``batch_size`` in texts per encoder forward pass. ``c``: the
    regression's inverse regularisation strength; None picks it per head by cross-validation.
    """

    seed: int = 0
    holdout_fraction: float = 0.15
    encoder_dir: Path | None = None
    max_length: int = 128
    pooling: Pooling = "mean"
    batch_size: int = 64
    c: float | None = None
    cache_dir: Path | None = None
    refit_on_all: bool = True
    progress: bool = True


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning the encoder with heads, with the small-data options from the literature.

    The defaults are the recipe bench/students.py measures (4 epochs at learning rate 1e-4 on 64
    tokens), which the worker and ``understudy train`` use as well: at 1,000 labels the worker's
    former 2 epochs at 5e-5 scored 1.8 points lower on trec6 and 0.6 on rt-sentiment
    (bench/README.md, "One fine-tuning recipe").

    ``freeze_bottom``: embeddings and the lowest k layers get no updates. ``reinit_top``: the top k
    layers are re-initialised before training (Zhang et al., 2021, "Revisiting few-sample BERT
    fine-tuning"). ``layer_lr_decay``: layer i from the top trains at ``learning_rate *
    layer_lr_decay**i`` (ULMFiT / ELECTRA). ``lora_rank`` > 0 trains low-rank adapters on the
    attention projections instead of the encoder weights (Hu et al., 2021), merged into the saved
    weights. Early stopping: evaluate every epoch on the holdout, keep the best weights, stop after
    ``patience`` epochs without improvement. Learning rates per step; the schedule is linear warmup
    over ``warmup_fraction`` of the steps then linear decay to zero. ``num_layers`` keeps only the
    encoder's first k layers (a shallower, faster student; None keeps all). ``min_steps``: with few
    labels an epoch is a handful of steps, so the epoch count is raised until at least this many
    optimizer steps are taken, and early stopping only starts after them (Mosbach et al., 2021:
    few-sample fine-tuning fails from too few updates more than from overfitting).
    ``head_init``: ``"probe"`` starts each head as the probe student would fit it (logistic
    regression on the starting encoder's frozen embeddings of the training examples, C by
    cross-validation) before fine-tuning the whole model (LP-FT, Kumar et al., 2022);
    ``"random"`` starts from small random weights. ``contrastive_weight`` > 0 adds, per head, a
    supervised contrastive loss on the batch's normalised sentence embeddings at
    ``contrastive_temperature`` (Gunel et al., 2021): the loss becomes ``(1 - w) * CE + w * SCL``,
    pulling same-label texts together as SetFit's pair training does, at no extra forward pass.
    One-seed runs on 1,000 test texts (bench/README.md): the contrastive loss added 2.2 and 2.5
    points on rt-sentiment at 64 and 256 labels and tied on trec6 at 64; probe heads added
    0.3-1.1 more on rt-sentiment but cost 25 points on trec6 at 64 labels (its probe is poor
    there, and early stopping settles near it), so they are opt-in. ``refit_below``: with fewer
    examples than this, once early stopping has chosen the epoch count and the holdout has
    fitted the temperature, a fresh model trains on every example, holdout included, for that
    many epochs (the temperature is kept; 0 turns it off). Small budgets are where the holdout's
    share of the data counts most: on the full test sets (bench/README.md) it added 3.4 and 1.1
    points to the fine-tuned student on rt-sentiment at 64 and 256 labels and 1.7 and 0.0 on
    trec6 (distilled: 3.4, 1.2, 5.8, 1.7), for 0-90% more training time.
    ``sharp_contrastive_below``: with fewer examples than this, the contrastive loss runs at
    ``sharp_contrastive_temperature`` instead (Khosla et al.'s 0.1). Three splits each
    (bench/README.md): on rt-sentiment it added 2.5 and 0.7 points to the fine-tuned student at
    64 and 256 labels and on trec6 +0.0 and -0.3; at 1,000 labels it cost 0.6 and 1.2 points.
    The distilled student turns it off (``DistillConfig``).
    """

    seed: int = 0
    holdout_fraction: float = 0.15
    encoder_dir: Path | None = None
    num_layers: int | None = None
    max_length: int = 64
    pooling: Pooling = "mean"
    epochs: int = 4
    min_steps: int = 150
    batch_size: int = 16
    learning_rate: float = 1e-4
    head_learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    layer_lr_decay: float = 0.9
    freeze_bottom: int = 0
    reinit_top: int = 0
    lora_rank: int = 0
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    patience: int = 2
    max_grad_norm: float = 1.0
    head_init: HeadInit = "random"
    contrastive_weight: float = 0.5
    contrastive_temperature: float = 0.3
    sharp_contrastive_below: int = 1000
    sharp_contrastive_temperature: float = 0.1
    refit_below: int = 1000
    progress: bool = True


@dataclass(frozen=True)
class DistillConfig(FinetuneConfig):
    """Fine-tuning a shallower student on soft labels: the fast student the cascade serves.

    ``num_layers``: the student keeps the first k layers of the encoder it starts from (all of
    them when it has fewer). ``assistant_dir``: a fine-tuned student artifact of the same task
    (a *teacher assistant*, Mirzadeh et al., 2020). With it, the student starts from the
    assistant's fine-tuned layers instead of the base encoder's ("shrink and fine-tune", Shleifer
    & Rush, 2020), and examples without the teacher's soft labels learn the assistant's
    calibrated probabilities. Measured here (``bench/students.py``, bench/README.md): 4 of
    fine-tuned MiniLM-L6's layers stayed within 0.4 accuracy points of it at 0.55-0.7 of its
    serving time, where the base encoder's first 3 layers lost 1.9-3.5 points.
    ``temperature``: soft targets are the teacher distribution sharpened/softened as
    ``p**(1/T)`` (renormalised) and matched by ``softmax(logits / T)``, loss scaled by ``T**2``
    (Hinton et al., 2015). Examples without soft labels use hard labels with ``label_smoothing``.
    ``human_weight`` multiplies the weight of human/import-labelled examples, which are more
    trustworthy than the teacher's; they always learn their hard label.
    ``sharp_contrastive_below`` is 0: the distilled student's contrastive loss stays at
    ``contrastive_temperature`` at every label count. At 0.1 it moved rt-sentiment by -3.1 to
    +2.4 points split to split (bench/README.md), and on the tests' synthetic task a 1-layer
    student shrunk from its assistant lost up to 32 points of agreement.
    """

    num_layers: int | None = 4
    assistant_dir: Path | None = None
    temperature: float = 2.0
    label_smoothing: float = 0.1
    human_weight: float = 3.0
    sharp_contrastive_below: int = 0

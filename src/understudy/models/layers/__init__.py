"""Swappable encoder layers behind small registries (see ``registry``).

Importing this package registers the built-in layers: feed-forward ``"dense"`` and token mixer
``"attention"``. Modules that add variants register themselves on import and are imported here.
"""

from understudy.models.layers import attention, feedforward, fff, fourier
from understudy.models.layers.registry import (
    FEEDFORWARDS,
    TOKEN_MIXERS,
    LayerFactory,
    register_feedforward,
    register_token_mixer,
)

__all__ = [
    "FEEDFORWARDS",
    "TOKEN_MIXERS",
    "LayerFactory",
    "attention",
    "feedforward",
    "fff",
    "fourier",
    "register_feedforward",
    "register_token_mixer",
]

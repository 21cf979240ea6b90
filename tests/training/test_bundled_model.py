"""The bundled model on real Omniglot: images_evaluation alphabets it never saw in training.

Thresholds: the model card reports >= 98% (5-way 1-shot) and >= 94% (20-way 1-shot) over 1000
episodes. 100 episodes give a 95% interval of about ±0.6 / ±0.8 points, so 96% and 91% leave
room for sampling noise while any real regression (wrong preprocessing, inverted input, a
broken checkpoint: all land near 70% / 45%) fails loudly.
"""

import pytest

from protonet.checkpoint import load_checkpoint

from .evaluate_cli import evaluate_json


def evaluate_bundled(capsys, bundled_model, omniglot_dir, *args: str) -> dict:
    """Evaluate the bundled model on images_evaluation (alphabets it never saw)."""
    common = ["--checkpoint", str(bundled_model), "--data", str(omniglot_dir)]
    return evaluate_json(capsys, *common, "--split", "evaluation", *args)


@pytest.mark.parametrize("way,threshold", [(5, 0.96), (20, 0.91)])
def test_bundled_model_on_100_real_episodes(bundled_model, omniglot_dir, way, threshold, capsys):
    summary = evaluate_bundled(
        capsys,
        bundled_model,
        omniglot_dir,
        "--way",
        str(way),
        "--shot",
        "1",
        "--episodes",
        "100",
        "--seed",
        "123",
    )
    assert summary["accuracy"] >= threshold, summary


def test_bundled_model_was_trained_on_background_only(bundled_model):
    checkpoint = load_checkpoint(bundled_model)
    assert checkpoint.training_config["split"] == "lake"
    assert checkpoint.metadata["validation_classes"] > 0
    assert checkpoint.input_spec.image_size == 28 and checkpoint.input_spec.invert


def test_table_reports_four_settings_with_within_alphabet(bundled_model, omniglot_dir, capsys):
    summary = evaluate_bundled(
        capsys, bundled_model, omniglot_dir, "--table", "--within-alphabet", "--episodes", "20"
    )
    results = summary["results"]
    settings = {(r["way"], r["shot"], r["within_alphabet"]) for r in results}
    assert settings == {(w, s, a) for w in (5, 20) for s in (1, 5) for a in (False, True)}

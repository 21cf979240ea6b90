"""The bundled model on real Omniglot: images_evaluation alphabets it never saw in training.

Thresholds: the model card reports >= 98% (5-way 1-shot) and >= 94% (20-way 1-shot) over 1000
episodes. 100 episodes give a 95% interval of about ±0.6 / ±0.8 points, so 96% and 91% leave
room for sampling noise while any real regression (wrong preprocessing, inverted input, a
broken checkpoint: all land near 70% / 45%) fails loudly.
"""

from protonet.checkpoint import load_checkpoint

from .evaluate_cli import evaluate_json


def evaluate_bundled(capsys, bundled_model, omniglot_dir, *args: str) -> dict:
    """Evaluate the bundled model on images_evaluation (alphabets it never saw)."""
    common = ["--checkpoint", str(bundled_model), "--data", str(omniglot_dir)]
    return evaluate_json(capsys, *common, "--split", "evaluation", *args)


def test_bundled_model_on_100_real_episodes_per_setting(bundled_model, omniglot_dir, capsys):
    """One embedding of images_evaluation (the slow part) for the whole table: the four
    settings, random and within-alphabet, 100 episodes each."""
    summary = evaluate_bundled(
        capsys,
        bundled_model,
        omniglot_dir,
        "--table",
        "--within-alphabet",
        "--episodes",
        "100",
        "--seed",
        "123",
    )
    results = {(r["way"], r["shot"], r["within_alphabet"]): r for r in summary["results"]}
    assert set(results) == {(w, s, a) for w in (5, 20) for s in (1, 5) for a in (False, True)}
    for way, threshold in ((5, 0.96), (20, 0.91)):
        assert results[way, 1, False]["accuracy"] >= threshold, results[way, 1, False]
        assert results[way, 1, False]["episodes"] == 100


def test_bundled_model_was_trained_on_background_only(bundled_model):
    checkpoint = load_checkpoint(bundled_model)
    assert checkpoint.training_config["split"] == "lake"
    assert checkpoint.metadata["validation_classes"] > 0
    assert checkpoint.input_spec.image_size == 28 and checkpoint.input_spec.invert

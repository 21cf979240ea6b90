"""Full request and response examples for the OpenAPI document (Swagger UI's "Example Value"
and "Try it out"). Each request example is a valid request (tests/service/api/test_openapi.py
validates every one against its model), drawn from docs/service.md's quickstart: two drawings
of "ring" and one of "fork" (examples/images), then a third ring as the query; the query
example also asks for the default rejection of unknowns, which accepts the ring and rejects a
tiny 3x3 doodle that is neither.
"""

from __future__ import annotations

from typing import Any

# examples/images/ring3.png, base64 (496 characters).
RING_PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAGkAAABpCAAAAAAc6VLmAAABOUlEQVR42u2YwQ7DMAhDY7T//2V2naa2GGJVlere"
    "plW8GggBkOumJ5ZJJplkkkkmvZn0ab2N3x/N2xo5gUxgLAmn/6Q0TsDkGwaacPz1aMkiSLgwBx5VkwpjNCs4UGaR"
    "ENgmofziTEnugbGV+zUCk1ow0SQF1Rkhm0WiitEtt4Z2tCrixNWZzZMLsaoH3O5qSQ/QhPu8d2uWu7PUdpY71cJx"
    "MklOImvxm7yXUz9u9HvNJ0few1PjdJ2EcekFpShBLU/uXMVSiar60FC2EeMsX9kQVc4Ll70ReP9tzrl8qIihLpYC"
    "xYzDIfAMqJkumLOCXc/xJxfnhmQ7liw8yC+OmF3YubXGgqq1dfsz2Vu6sTtL7Bct8n4qd2EyTcfCWjUY3YqNEWZC"
    "cl9ukkkmmWSSSSaZZJJJJj2K9AXEA0zBb64IKwAAAABJRU5ErkJggg=="
)
PIXELS = [[1.0, 0.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 1.0]]


def example(value: dict[str, Any]) -> dict[str, Any]:
    """A model's json_schema_extra: one full example."""
    return {"examples": [value]}


CREATE_COLLECTION = example(
    {"name": "symbols", "index": "auto", "rejection": "none", "model": "omniglot"}
)
UPDATE_COLLECTION = example({"rejection": {"acceptance": 0.99}})
ACCEPTANCE_TARGET = example({"acceptance": 0.99})
SUPPORT = example(
    {
        "examples": [
            {"label": "ring", "image": RING_PNG},
            {"label": "ring", "pixels": PIXELS},
            {"label": "fork", "pixels": [[1.0, 0.0, 1.0], [1.0, 0.0, 1.0], [1.0, 0.0, 1.0]]},
        ]
    }
)
QUERY = example(
    {"queries": [{"image": RING_PNG}, {"pixels": PIXELS}], "top_k": 2, "rejection": "default"}
)
FEEDBACK = example({"input_id": 5734150276186003, "label": "ring"})
EMBED = example({"inputs": [{"image": RING_PNG}], "model": "omniglot"})

HEALTH = example({"status": "ok"})
READY = example({"status": "ready", "detail": "ready", "database": "up"})
INPUT_SPEC = example(
    {"image_size": 28, "channels": 1, "invert": True, "fit": "stretch", "mean": [], "std": []}
)
CALIBRATION = {
    "method": "nearest_distance",
    "shots": [1, 2, 3, 5, 10],
    "acceptances": [0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999],
    "default_acceptance": 0.95,
}
REJECTION_CALIBRATION = example(CALIBRATION)
TEXT_SPEC_VALUES = {
    "base_encoder": "sentence-transformers/all-MiniLM-L6-v2",
    "base_weights_sha256": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "max_chars": 1000,
    "max_tokens": 256,
    "base_dim": 384,
}
TEXT_SPEC = example(TEXT_SPEC_VALUES)
IMAGE_MODEL_SUMMARY = {
    "name": "omniglot",
    "modality": "image",
    "default": True,
    "version": "ef95c1dd85fc74b8",
    "embedding_dim": 64,
    "input": {"image_size": 28, "channels": 1, "invert": True},
    "text": None,
    "rejection": CALIBRATION,
}
TEXT_MODEL_SUMMARY = {
    "name": "intents",
    "modality": "text",
    "default": False,
    "version": "3f6c0e2a9b1d4c57",
    "embedding_dim": 384,
    "input": None,
    "text": TEXT_SPEC_VALUES,
    "rejection": None,
}
MODEL_SUMMARY = example(IMAGE_MODEL_SUMMARY)
MODEL_LIST = example({"models": [IMAGE_MODEL_SUMMARY, TEXT_MODEL_SUMMARY]})
MODEL = example(
    {
        **IMAGE_MODEL_SUMMARY,
        "metric": "squared_euclidean",
        "card": {
            "encoder": {"architecture": "conv4", "in_channels": 1, "hidden_channels": 64},
            "training": {"split": "lake", "way": 60, "shot": 1, "episodes": 12000},
            "evaluation": {"evaluation": [{"way": 5, "shot": 1, "accuracy": 0.982}]},
            "metadata": {"seed": 0},
            "data_fingerprint": "…",
        },
        "rejection": CALIBRATION,
    }
)
COLLECTION = {
    "name": "symbols",
    "n_classes": 2,
    "n_examples": 3,
    "revision": 2,
    "index": "auto",
    "index_in_use": "exact",
    "rejection": {"mode": "none"},
    "model": "omniglot",
}
COLLECTION_SUMMARY = example(COLLECTION)
COLLECTION_LIST = example({"collections": [COLLECTION]})
CLASS_COUNT = example({"label": "ring", "n_examples": 2})
COLLECTION_DETAIL = example(
    {
        **COLLECTION,
        "classes": [{"label": "ring", "n_examples": 2}, {"label": "fork", "n_examples": 1}],
        "next_cursor": None,
    }
)
CLASS_PAGE = example(
    {
        "classes": [{"label": "ring", "n_examples": 2}, {"label": "fork", "n_examples": 1}],
        "next_cursor": "Y2xhc3NlczoxOjI",
        "revision": 2,
    }
)
SUPPORT_ANSWER = example(
    {
        "n_added": 3,
        "classes": [{"label": "ring", "n_examples": 2}, {"label": "fork", "n_examples": 1}],
        "revision": 2,
    }
)
RING = {"label": "ring", "probability": 0.99999999999659, "distance": 0.926}
FORK = {"label": "fork", "probability": 3.4e-12, "distance": 27.33}
PREDICTION = example(RING)
QUERY_RESULT = example({**RING, "top_k": [RING, FORK]})
QUERY_ANSWER = example(
    {
        "model_version": "ef95c1dd85fc74b8",
        "revision": 2,
        "index": "exact",
        "results": [
            {**RING, "top_k": [RING, FORK], "known": True, "score": 0.926, "threshold": 10.188},
            {
                "label": None,
                "probability": None,
                "distance": None,
                "top_k": [
                    {"label": "fork", "probability": 0.99994, "distance": 25.75},
                    {"label": "ring", "probability": 0.00006, "distance": 35.47},
                ],
                "known": False,
                "score": 25.75,
                "threshold": 13.676,
            },
        ],
        "rejection": {"mode": "calibrated", "acceptance": 0.95, "threshold_source": "checkpoint"},
    }
)
EMBEDDINGS = example(
    {"model_version": "ef95c1dd85fc74b8", "embeddings": [[0.795, 0.873, 0.869, 1.261, 0.619]]}
)
CLASS_DIAGNOSIS = {
    "label": "ring",
    "n_examples": 3,
    "loo_accuracy": 0.6667,
    "nearest_class": "fork",
    "nearest_class_distance": 21.4,
}
CONFUSABLE_PAIR = {"labels": ["ring", "fork"], "distance": 21.4}
SUSPECTED_EXAMPLE = {
    "example_id": 3,
    "label": "ring",
    "closer_to": "fork",
    "distance_own": 30.2,
    "distance_other": 12.9,
}
CLASS_DIAGNOSIS_EXAMPLE = example(CLASS_DIAGNOSIS)
CONFUSABLE_PAIR_EXAMPLE = example(CONFUSABLE_PAIR)
SUSPECTED_EXAMPLE_EXAMPLE = example(SUSPECTED_EXAMPLE)
DIAGNOSTICS = example(
    {
        "model_version": "ef95c1dd85fc74b8",
        "revision": 3,
        "n_classes": 2,
        "n_examples": 4,
        "expected_accuracy": 0.6667,
        "classes": [
            CLASS_DIAGNOSIS,
            {
                "label": "fork",
                "n_examples": 1,
                "loo_accuracy": None,
                "nearest_class": "ring",
                "nearest_class_distance": 21.4,
            },
        ],
        "confusable_pairs": [CONFUSABLE_PAIR],
        "suspected_mislabelled": [SUSPECTED_EXAMPLE],
    }
)
STORED_EXAMPLE = example({"id": 1, "label": "ring"})
EXAMPLE_LIST = example(
    {
        "examples": [
            {"id": 1, "label": "ring"},
            {"id": 2, "label": "ring"},
            {"id": 3, "label": "fork"},
        ],
        "next_cursor": "ZXhhbXBsZXM6MToz",
    }
)

ADAPTER_SUMMARY_VALUES = {"version": 4, "trained_revision": 7, "stale": False}
ADAPTER_SUMMARY = example(ADAPTER_SUMMARY_VALUES)
HELD_OUT_VALUES = {
    "examples": 100,
    "folds": 5,
    "unadapted_accuracy": 0.62,
    "adapted_accuracy": 0.71,
    "margin": 0.01,
    "min_gain": 2,
    "seconds": 4.2,
}
HELD_OUT = example(HELD_OUT_VALUES)
PROGRESS_VALUES = {"fraction": 1.0, "examples_per_second": 14250.0}
PROGRESS = example(PROGRESS_VALUES)
ADAPTATION_VALUES = {
    "id": 4,
    "collection": "symbols",
    "status": "completed",
    "decision": "adopted",
    "progress": PROGRESS_VALUES,
    "model_version": "ef95c1dd85fc74b8",
    "trained_revision": 7,
    "n_examples": 100,
    "n_classes": 20,
    "held_out": HELD_OUT_VALUES,
    "adapter_version": 4,
    "revision": 8,
    "error": None,
    "created_at": "2026-12-07T10:00:00Z",
    "finished_at": "2026-12-07T10:00:04Z",
}
ADAPTATION = example(ADAPTATION_VALUES)
ADAPTATION_LIST = example({"adaptations": [ADAPTATION_VALUES]})
ADAPTER = example(
    {
        **ADAPTER_SUMMARY_VALUES,
        "model_version": "ef95c1dd85fc74b8",
        "held_out": HELD_OUT_VALUES,
        "created_at": "2026-12-07T10:00:04Z",
    }
)

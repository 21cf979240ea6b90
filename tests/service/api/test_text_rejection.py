"""Rejection of out-of-scope texts over HTTP with the bundled text model, calibrated on its
validation intents: a request of no registered intent is answered "unknown" as an image of no
registered class is, by the collection's setting or the query's, through the client too, and
with thresholds adapted to a collection of Banking77 intents with enough examples."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

from protonet.text import TextSpec
from service.client import text
from service.settings import Settings
from tests.conftest import REPO_ROOT, SHARED_DATA, require_path
from tests.service.helpers import serve

pytestmark = pytest.mark.anyio

SUPPORT = {
    "card_arrival": [
        "My card has not arrived yet",
        "When will my new card be delivered?",
        "I am still waiting for my card to come",
    ],
    "exchange_rate": [
        "What exchange rate do you use?",
        "How much is one euro in dollars today?",
        "Which rate do you apply when converting currencies?",
    ],
}
IN_SCOPE = "my new card still hasn't come"
OUT_OF_SCOPE = ["play some relaxing jazz music", "what is the capital of France?"]


@pytest.fixture
def intents(tmp_path: Path, text_spec: TextSpec) -> Settings:
    """The bundled text model alone, as make run serves it under the name "intents"."""
    model = require_path(REPO_ROOT / "models" / "banking77-minilm.pt", "bundled text model")
    return Settings(models=f"intents={model}", data_dir=tmp_path / "data", torch_threads=1)


def examples(support: dict[str, list[str]]) -> list[dict[str, str]]:
    return [{"label": label, "text": t} for label, texts in support.items() for t in texts]


async def ask(running: Any, name: str, queries: list[str], **body: Any) -> dict[str, Any]:
    response = await running.http.post(
        f"/v1/collections/{name}/query", json={"queries": [{"text": q} for q in queries], **body}
    )
    assert response.status_code == 200, response.text
    return response.json()


async def test_the_bundled_text_model_is_calibrated(intents):
    async with serve(intents) as running:
        [model] = (await running.http.get("/v1/models")).json()["models"]
        assert model["modality"] == "text"
        rejection = model["rejection"]
        assert rejection["method"] == "nearest_distance" and rejection["default_acceptance"] == 0.95
        assert rejection["shots"] == [1, 2, 3, 5, 8, 10]  # 8: the intents' usual examples


async def test_an_out_of_scope_text_is_unknown_and_an_intents_text_is_known(intents):
    async with serve(intents) as running:
        created = await running.http.post(
            "/v1/collections", json={"name": "faq", "rejection": "default"}
        )
        assert created.status_code == 201, created.text
        assert created.json()["rejection"] == {"mode": "calibrated", "acceptance": 0.95}
        added = await running.http.post(
            "/v1/collections/faq/support", json={"examples": examples(SUPPORT)}
        )
        assert added.status_code == 200, added.text
        answer = await ask(running, "faq", [IN_SCOPE, *OUT_OF_SCOPE], top_k=1)
        assert answer["rejection"] == {
            "mode": "calibrated",
            "acceptance": 0.95,
            "threshold_source": "checkpoint",  # 4 held-out scores: too few to adapt
        }
        known, *unknown = answer["results"]
        assert known["known"] is True and known["label"] == "card_arrival"
        assert known["score"] <= known["threshold"]
        for result in unknown:
            assert result["known"] is False and result["label"] is None
            assert result["score"] > result["threshold"]
            assert len(result["top_k"]) == 1  # its nearest intent is still listed
        # A query overrides the collection: without rejection, the nearest intent answers.
        plain = await ask(running, "faq", OUT_OF_SCOPE[:1], rejection="none")
        assert plain["results"][0]["label"] in SUPPORT and "known" not in plain["results"][0]


async def test_the_client_asks_for_text_rejection(intents):
    async with serve(intents) as running:
        client = running.client
        await client.create_collection("faq")  # no rejection by default
        await client.add_support(
            "faq", [(label, text(t)) for label, texts in SUPPORT.items() for t in texts]
        )
        answer = await client.query(
            "faq", [text(IN_SCOPE), text(OUT_OF_SCOPE[0])], rejection="default"
        )
        assert [r["known"] for r in answer["results"]] == [True, False]
        await client.set_rejection("faq", 0.99)
        summary = await client.get_collection("faq")
        assert summary["rejection"] == {"mode": "calibrated", "acceptance": 0.99}


def banking77_support(intents: int, shots: int) -> dict[str, list[str]]:
    """The first ``shots`` train texts of the first ``intents`` Banking77 intents in the file."""
    data = require_path(SHARED_DATA / "banking77", "Banking77 data")
    by_intent: dict[str, list[str]] = {}
    with open(data / "train.csv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            by_intent.setdefault(row["category"], []).append(row["text"])
    return {label: texts[:shots] for label, texts in list(by_intent.items())[:intents]}


async def test_thresholds_adapt_to_a_collection_of_eight_examples_per_intent(intents):
    support = banking77_support(intents=6, shots=8)  # 48 held-out scores >= 30
    assert [len(texts) for texts in support.values()] == [8] * 6
    async with serve(intents) as running:
        await running.client.create_collection("bank", rejection="default")
        await running.client.add_support(
            "bank", [(label, text(t)) for label, texts in support.items() for t in texts]
        )
        answer = await ask(running, "bank", OUT_OF_SCOPE)
        assert answer["rejection"]["threshold_source"] == "collection"
        assert [r["known"] for r in answer["results"]] == [False, False]

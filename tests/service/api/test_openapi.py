"""The OpenAPI document: every operation has full examples that are valid requests, and the
interactive docs work offline (every asset served by the service itself, no CDN)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from pydantic import BaseModel

from service.api import schemas
from tests.service.helpers import make_settings, serve

pytestmark = pytest.mark.anyio
KEY = "a-write-key-of-tenant-a-0123456789:a:write"
BINARY = {"schema": {"type": "string", "format": "binary"}}

REQUEST_MODELS: dict[str, type[BaseModel]] = {
    "CreateCollectionRequest": schemas.CreateCollectionRequest,
    "UpdateCollectionRequest": schemas.UpdateCollectionRequest,
    "SupportRequest": schemas.SupportRequest,
    "QueryRequest": schemas.QueryRequest,
    "EmbedRequest": schemas.EmbedRequest,
    "FeedbackRequest": schemas.FeedbackRequest,
}


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    name = schema["$ref"].rsplit("/", 1)[-1]
    return name, document["components"]["schemas"][name]


def operations(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{method.upper()} {path}", operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


async def test_every_request_and_response_body_has_a_full_example(settings):
    async with serve(settings) as running:
        document = (await running.http.get("/openapi.json")).json()
    checked = set()
    for name, operation in operations(document):
        if (body := operation.get("requestBody")) and name.endswith("/snapshot"):
            # A snapshot file, not JSON (docs/service.md describes its lines).
            assert body["content"] == {"application/octet-stream": BINARY}, name
        elif body:
            model, schema = resolve(document, body["content"]["application/json"]["schema"])
            [example] = schema["examples"]
            REQUEST_MODELS[model].model_validate_json(json.dumps(example))  # a valid request
            checked.add(model)
        for status, response in operation["responses"].items():
            content = response.get("content", {}).get("application/json")
            if content is None or "$ref" not in content["schema"]:
                continue
            model, schema = resolve(document, content["schema"])
            assert schema.get("examples"), f"{name} {status}: {model} has no example"
            assert set(schema["examples"][0]) >= set(schema.get("required", [])), model
    assert checked == set(REQUEST_MODELS)


async def test_swagger_ui_and_redoc_load_every_asset_from_the_service(tmp_path, checkpoint_a):
    """No CDN: each page names only the service's own paths, and each of them answers, with
    auth on and no key (the docs are public, like /openapi.json)."""
    secured = make_settings(tmp_path, checkpoint_a, auth_enabled=True, api_keys=KEY)
    async with serve(secured) as running:
        for page in ("/docs", "/redoc"):
            html = (await running.http.get(page)).text
            assert not re.search(r"https?://", html), f"{page} loads something from outside"
            assets = re.findall(r'(?:src|href)="([^"]+)"', html)
            assert any(asset.endswith(".js") for asset in assets), page
            for asset in assets:
                answer = await running.http.get(asset)
                assert answer.status_code == 200 and len(answer.content) > 1000, asset

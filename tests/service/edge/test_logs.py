"""Structured logs: JSON lines with request ids (echoed as ``X-Request-ID``), and neither API
keys nor image data in them, whatever the request."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

from service.app import create_app
from service.edge.logs import (
    MAX_MESSAGE,
    JsonFormatter,
    RequestIdFilter,
    TextFormatter,
    request_id_of,
    truncated,
)
from service.launcher import local_server
from service.state import ServiceState
from tests.service.helpers import PATIENCE, Drawings, make_settings, serve

KEY = "log-test-secret-key-0123456789abcdef"
WRONG_KEY = "log-test-wrong-key-0123456789abcdef"


def image_requests(png: bytes) -> list[tuple[str, str, dict]]:
    """Requests that carry the image: accepted, and rejected in several ways."""
    image = base64.b64encode(png).decode()
    broken = image[: len(image) // 2]  # a truncated PNG: undecodable
    return [
        ("POST", "/v1/collections/c/support", {"examples": [{"label": "a", "image": image}]}),
        ("POST", "/v1/collections/c/query", {"queries": [{"image": image}]}),
        ("POST", "/v1/embed", {"inputs": [{"image": broken}]}),
        ("POST", "/v1/embed", {"inputs": [{"image": image, "pixels": [[0.5]]}]}),
        ("POST", "/v1/collections/c/support", {"examples": [{"label": "a\n", "image": image}]}),
        ("POST", "/v1/embed", {"inputs": [{"image": image}], "extra": image}),
    ]


def secrets_of(png: bytes) -> list[str]:
    """What must never be logged: the keys, and any stretch of the image's base64."""
    image = base64.b64encode(png).decode()
    return [KEY, WRONG_KEY, image[40:80], image[-60:-20]]


@pytest.mark.anyio
async def test_no_key_and_no_image_in_the_logs(tmp_path, checkpoint_a, caplog):
    caplog.set_level(logging.DEBUG)  # everything any logger writes
    png = Drawings(1).png(0)
    settings = make_settings(tmp_path, checkpoint_a, auth_enabled=True, api_keys=f"{KEY}:t:write")
    async with serve(settings) as running:
        headers = {"Authorization": f"Bearer {KEY}"}
        await running.http.post("/v1/collections", json={"name": "c"}, headers=headers)
        for method, path, body in image_requests(png):
            await running.http.request(method, path, json=body, headers=headers)
            await running.http.request(method, path, json=body, headers={"X-API-Key": WRONG_KEY})
    formatted = "\n".join(
        f"{JsonFormatter().format(r)} {r.args!r} {vars(r)!r}" for r in caplog.records
    )
    assert "service.access" in formatted  # the requests were logged...
    for secret in secrets_of(png):
        assert secret not in formatted  # ...without what they carried


def test_request_ids_from_clients_are_used_only_when_well_formed():
    def scope(value: bytes) -> dict:
        return {"headers": [(b"x-request-id", value)]}

    assert request_id_of(scope(b"trace-42.a:b_c")) == "trace-42.a:b_c"
    for bad in (b"", b"has space", b"x" * 200, b"-leading-dash", b"new\nline", "é".encode()):
        generated = request_id_of(scope(bad))
        assert generated != bad.decode("latin-1") and len(generated) == 32
    assert request_id_of({"headers": []}) != request_id_of({"headers": []})


def test_long_messages_are_cut():
    text = "x" * 10_000
    assert len(truncated(text)) < 2100 and truncated("short") == "short"
    record = logging.makeLogRecord({"msg": "%s", "args": (text,), "levelname": "ERROR"})
    record.request_id = None
    assert len(JsonFormatter().format(record)) < 2300
    assert len(TextFormatter().format(record)) < 2300


def test_real_server_writes_json_lines_with_request_ids(tmp_path: Path, checkpoint_a: Path):
    png = Drawings(1).png(0)
    log_file = tmp_path / "server.log"
    env = {
        "PROTONET_CHECKPOINT": str(checkpoint_a),
        "PROTONET_DATA_DIR": str(tmp_path / "data"),
        "PROTONET_TORCH_THREADS": "1",
        "PROTONET_LOG_LEVEL": "debug",
        "PROTONET_LOG_FORMAT": "json",
        "PROTONET_AUTH_ENABLED": "true",
        "PROTONET_API_KEYS": f"{KEY}:t:write",
    }
    with (
        local_server(env, cwd=tmp_path, ready_timeout=PATIENCE, log_file=log_file) as server,
        httpx.Client(base_url=server.url, headers={"X-API-Key": KEY}, timeout=30) as http,
    ):
        created = http.post("/v1/collections", json={"name": "c"})
        ids = {created.headers["x-request-id"]}
        for method, path, body in image_requests(png):
            response = http.request(method, path, json=body, headers={"X-Request-ID": "mine-1"})
            assert response.headers["x-request-id"] == "mine-1"
            http.request(method, path, json=body, headers={"X-API-Key": WRONG_KEY})
        http.post("/v1/embed", json={"inputs": [{"pixels": np.ones((3, 3)).tolist()}]})
    text = log_file.read_text()
    entries = [json.loads(line) for line in text.splitlines() if line.strip()]
    access = [e for e in entries if e["logger"] == "service.access"]
    assert {e["request_id"] for e in access} >= ids | {"mine-1"}
    keyed = [e for e in access if e["request_id"] == "mine-1"]
    assert all(e["key_id"] and e["tenant"] == "t" for e in keyed)
    assert any(e["status"] == 401 and e["key_id"] is None for e in access)
    for secret in secrets_of(png):
        assert secret not in text


@pytest.mark.anyio
async def test_an_unexpected_error_is_a_500_with_its_request_id_logged(settings, caplog):
    caplog.set_level(logging.INFO)
    caplog.handler.addFilter(RequestIdFilter())  # stamps records as our handler does
    app = create_app(settings)

    @app.get("/v1/boom")
    async def boom() -> None:
        raise RuntimeError("disk on fire")

    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as http:
        response = await http.get("/v1/boom", headers={"X-Request-ID": "boom-1"})
    assert response.status_code == 500
    assert response.json() == {
        "error": "internal_error",
        "detail": "internal server error",
        "errors": [],
    }
    assert response.headers["x-request-id"] == "boom-1"
    logged = [r for r in caplog.records if r.name == "service.edge.error_responses"]
    assert logged and logged[0].exc_info is not None
    assert logged[0].request_id == "boom-1"  # type: ignore[attr-defined]
    access = [r for r in caplog.records if r.name == "service.access"]
    assert [r.status for r in access] == [500]  # type: ignore[attr-defined]


def test_a_cut_message_keeps_its_end_where_a_traceback_names_its_exception():
    traceback = "Traceback (most recent call last):\n" + '  File "x.py", line 1\n' * 500
    text = traceback + "ValueError: what went wrong"
    cut = truncated(text)
    assert cut.startswith("Traceback") and cut.endswith("ValueError: what went wrong")
    assert f"[{len(text) - MAX_MESSAGE} characters cut]" in cut and len(cut) < 2100


async def startup_failure_message(app: FastAPI) -> str:
    """Drive the app's ASGI lifespan as uvicorn does; the message its failed start sends."""
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "lifespan.startup"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    with pytest.raises(Exception):  # noqa: B017 (re-raised for uvicorn, whatever it is)
        await app(scope, receive, send)
    [failed] = sent
    assert failed["type"] == "lifespan.startup.failed"
    return failed["message"]


@pytest.mark.anyio
async def test_a_start_that_fails_on_purpose_is_one_line(tmp_path):
    missing = tmp_path / "nope.pt"
    message = await startup_failure_message(create_app(make_settings(tmp_path, missing)))
    assert message == (
        f"startup failed: model 'default' ({missing}): checkpoint not found: {missing}"
    )


@pytest.mark.anyio
async def test_a_start_that_fails_on_a_bug_keeps_its_traceback(settings, monkeypatch):
    def broken(*_args: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(ServiceState, "open", broken)
    message = await startup_failure_message(create_app(settings))
    assert message.startswith("Traceback") and message.endswith("RuntimeError: disk on fire\n")

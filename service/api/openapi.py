"""The OpenAPI document, completed with what the middleware adds to every operation.

Routes declare their own errors (``error_responses``); the admission middleware and the request
context apply to all of them, so their parts of the contract are added here, path by path, as
the running configuration makes them: ``X-Request-ID`` on every response, 429 and the
overload 503 (with ``Retry-After``) where requests are limited, and 401/403 plus the security
schemes only when auth is on. Fuzzers (tests/service/test_fuzz.py) check responses against it.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from service.edge.admission import PROBE_PATHS, requires_key
from service.edge.error_responses import ERROR_DESCRIPTIONS

ERROR_SCHEMA = {"$ref": "#/components/schemas/ErrorResponse"}
REQUEST_ID = {
    "description": "The request's id: the client's X-Request-ID if well-formed, else a new one.",
    "schema": {"type": "string"},
}
RETRY_AFTER = {"description": "Seconds to wait before retrying.", "schema": {"type": "string"}}
SECURITY_SCHEMES = {
    "BearerAuth": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer"},
    "ApiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}
METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


def error_entry(code: int, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "description": ERROR_DESCRIPTIONS[code],
        "content": {"application/json": {"schema": ERROR_SCHEMA}},
    }
    if headers:
        entry["headers"] = headers
    return entry


def complete_operation(operation: dict[str, Any], limited: bool, needs_key: bool) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    if limited:
        responses["429"] = error_entry(429, {"Retry-After": RETRY_AFTER})
        overloaded = responses.setdefault("503", error_entry(503))
        overloaded["description"] = ERROR_DESCRIPTIONS[503]
        overloaded.setdefault("headers", {})["Retry-After"] = RETRY_AFTER
    if needs_key:
        responses["401"] = error_entry(401)
        responses["403"] = error_entry(403)
        operation["security"] = [{"BearerAuth": []}, {"ApiKeyHeader": []}]
    for response in responses.values():
        response.setdefault("headers", {})["X-Request-ID"] = REQUEST_ID


def complete_schema(schema: dict[str, Any], auth_enabled: bool, protect_metrics: bool) -> None:
    for path, item in schema.get("paths", {}).items():
        needs_key = auth_enabled and requires_key(path, protect_metrics)
        for method, operation in item.items():
            if method in METHODS:
                complete_operation(operation, path not in PROBE_PATHS, needs_key)
    if auth_enabled:
        schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES


def install_openapi(app: FastAPI, auth_enabled: bool, protect_metrics: bool) -> None:
    """Make ``app.openapi()`` return the completed document (built once, on first use)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            complete_schema(generate(), auth_enabled, protect_metrics)
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

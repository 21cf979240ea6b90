"""The one place where errors become HTTP responses (installed by ``create_app``).

Errors raised on purpose (``service.errors`` and the core's ``protonet.errors``) map to a status
code and an error kind by class, with the headers that say what to do next (``Retry-After``,
``WWW-Authenticate``); request validation errors become 422 (400 for malformed JSON) with each
offending item named, e.g. ``examples[3].label``. Every error body is an
:class:`ErrorResponse`, here too, as the middleware answers with it as well as the routes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from protonet.errors import CheckpointError, InvalidInputError, ProtonetError
from service.errors import (
    AcceptanceOutOfRangeError,
    AdaptationBusyError,
    CollectionTooLargeError,
    ConflictError,
    DiagnosticsBusyError,
    ForbiddenError,
    ForgottenInputError,
    IdempotencyKeyReusedError,
    InvalidSnapshotError,
    LimitExceededError,
    MalformedJSONError,
    ModelMismatchError,
    NotFoundError,
    NotReadyError,
    OverloadedError,
    RateLimitedError,
    RejectionUnavailableError,
    RememberLimitError,
    RevisionNotReachedError,
    StorageUnavailableError,
    UnauthenticatedError,
    UnknownModelError,
)

logger = logging.getLogger(__name__)


EMPTY_IMAGE: JsonDict = {"location": "examples[0].image", "message": "empty image"}


class FieldError(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [EMPTY_IMAGE]})

    location: str = Field(description="The offending item, e.g. 'examples[3].image'.")
    message: str = Field(description="What is wrong with it.")


class ErrorResponse(BaseModel):
    """Every error response has this shape."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": "invalid_input",
                    "detail": "examples[0].image: empty image",
                    "errors": [EMPTY_IMAGE],
                }
            ]
        }
    )

    error: str = Field(description="Machine-readable kind, e.g. 'not_found', 'invalid_input'.")
    detail: str = Field(description="Human-readable message naming the offending item.")
    errors: list[FieldError] = Field(
        default_factory=list, description="Per-field validation errors (422), if any."
    )


# Most specific first: the first matching class decides.
DOMAIN_ERRORS: list[tuple[type[ProtonetError], int, str]] = [
    (UnauthenticatedError, 401, "unauthenticated"),
    (ForbiddenError, 403, "forbidden"),
    (DiagnosticsBusyError, 429, "diagnostics_busy"),  # a RateLimitedError: first
    (RememberLimitError, 429, "remember_limit"),  # a RateLimitedError: first
    (AdaptationBusyError, 429, "adaptation_busy"),  # likewise
    (RateLimitedError, 429, "rate_limited"),
    (OverloadedError, 503, "overloaded"),
    (RevisionNotReachedError, 503, "revision_not_reached"),
    (StorageUnavailableError, 503, "database_unavailable"),
    (NotFoundError, 404, "not_found"),
    (ForgottenInputError, 404, "not_found"),
    (ConflictError, 409, "conflict"),
    (MalformedJSONError, 400, "malformed_json"),
    (LimitExceededError, 413, "too_large"),
    (CollectionTooLargeError, 422, "collection_too_large"),
    (ModelMismatchError, 422, "wrong_modality"),  # an InvalidInputError: first
    (InvalidSnapshotError, 422, "invalid_snapshot"),  # an InvalidInputError: first
    (InvalidInputError, 422, "invalid_input"),
    (IdempotencyKeyReusedError, 422, "idempotency_key_reused"),
    (UnknownModelError, 422, "unknown_model"),
    (RejectionUnavailableError, 422, "rejection_unavailable"),
    (AcceptanceOutOfRangeError, 422, "acceptance_out_of_range"),
    (NotReadyError, 503, "not_ready"),
    (CheckpointError, 500, "checkpoint_error"),
    (ProtonetError, 400, "bad_request"),
]

ERROR_DESCRIPTIONS = {
    400: "Malformed JSON body.",
    401: "Missing or invalid API key (when PROTONET_AUTH_ENABLED is true).",
    403: "The API key's role does not allow this operation, or a non-admin key named another "
    "tenant.",
    404: "Unknown collection or class (or a feedback's input_id not remembered).",
    409: "Conflict: the collection exists already, or has no classes to query.",
    413: "Body larger than PROTONET_MAX_BODY_BYTES, more items than "
    "PROTONET_MAX_ITEMS_PER_REQUEST, or an object of more than 64 keys.",
    422: "Invalid input; the message names the offending item (e.g. examples[3].image). "
    "rejection_unavailable: calibrated rejection asked of a model without a calibration; "
    "acceptance_out_of_range: a rejection acceptance outside the model's calibrated range; "
    "unknown_model: a model that is not served (GET /v1/models); wrong_modality: an image "
    "for a text model or text for an image model (the item is named); "
    "idempotency_key_reused: an Idempotency-Key sent again with another body; "
    "invalid_snapshot: a snapshot file damaged, cut short or not a snapshot (nothing kept).",
    429: "Too many requests from this API key (or client address); diagnostics_busy: as many "
    "diagnostics as PROTONET_DIAGNOSTICS_MAX_CONCURRENT(_PER_TENANT) allow are running; "
    "remember_limit: the tenant's remembered inputs are at PROTONET_REMEMBER_MAX_INPUTS or "
    "PROTONET_REMEMBER_MAX_BYTES; adaptation_busy: as many adaptations as "
    "PROTONET_ADAPT_MAX_CONCURRENT allows are running; see Retry-After.",
    503: "Not ready: loading the model or embedding stored examples for it; overloaded (too "
    "many requests in flight); the database is unreachable; or this replica has not reached "
    "the min_revision asked for in time. Retry after Retry-After seconds.",
}


def error_responses(
    *codes: int, descriptions: Mapping[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries for the given status codes; ``descriptions`` replace
    the common descriptions of some codes for one route."""
    own = descriptions or {}
    return {
        code: {"model": ErrorResponse, "description": own.get(code, ERROR_DESCRIPTIONS[code])}
        for code in codes
    }


def error_response(status_code: int, error: str, detail: str, **extra: Any) -> JSONResponse:
    body = ErrorResponse(error=error, detail=detail, **extra)
    return JSONResponse(body.model_dump(mode="json"), status_code=status_code)


def headers_of(error: ProtonetError) -> dict[str, str]:
    """Headers that tell the client what to do next: how to authenticate, when to retry."""
    if isinstance(error, UnauthenticatedError):
        return {"WWW-Authenticate": 'Bearer realm="protonet"'}
    if isinstance(
        error,
        RateLimitedError | OverloadedError | RevisionNotReachedError | StorageUnavailableError,
    ):
        return {"Retry-After": str(error.retry_after)}
    return {}


def domain_error_response(error: ProtonetError) -> JSONResponse:
    """The response of a domain error (also used by middleware, outside the handlers)."""
    status_code, kind = status_of(error)
    if status_code >= 500 and not isinstance(
        error, OverloadedError | RevisionNotReachedError | NotReadyError
    ):  # expected while starting or under load: no log floods
        logger.error("%s: %s", type(error).__name__, error)
    response = error_response(status_code, kind, str(error))
    response.headers.update(headers_of(error))
    return response


def status_of(error: ProtonetError) -> tuple[int, str]:
    """``(HTTP status, error kind)`` of a domain error."""
    for error_class, status_code, kind in DOMAIN_ERRORS:
        if isinstance(error, error_class):
            return status_code, kind
    return 400, "bad_request"  # unreachable: ProtonetError is the last entry


def format_location(location: Sequence[int | str]) -> str:
    """``("body", "examples", 3, "image")`` -> ``"examples[3].image"``."""
    parts = list(location[1:] if location and location[0] == "body" else location)
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "body"


# Errors whose message names the limit but not the value: the value sent is added, in full
# (``repr``: 0.9999999999999999 is not "1").
BOUND_ERRORS = frozenset({"greater_than", "greater_than_equal", "less_than", "less_than_equal"})


def validation_message(error: Any) -> str:
    """pydantic's message, with the value sent where the message gives only the bound."""
    if error["type"] not in BOUND_ERRORS:
        return str(error["msg"])
    sent = error.get("input")
    return f"{error['msg']} (got {sent if isinstance(sent, str) else repr(sent)})"


def describe_validation_errors(errors: Sequence[Any], shown: int) -> list[FieldError]:
    """The first ``shown`` errors, each with its location in request terms."""
    return [
        FieldError(location=format_location(error["loc"]), message=validation_message(error))
        for error in errors[:shown]
    ]


def _not_a_json_object(error: Any) -> bool:
    """The whole body failed to validate as an object: usually a missing JSON content type."""
    return tuple(error["loc"]) == ("body",) and isinstance(error.get("input"), bytes | str)


async def handle_domain_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ProtonetError)
    return domain_error_response(error)


async def handle_validation_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    errors = list(error.errors())
    first: dict[str, Any] = dict(errors[0]) if errors else {"type": "", "loc": ()}
    if first["type"] == "json_invalid":
        reason = first.get("ctx", {}).get("error", "invalid JSON")
        detail = f"malformed JSON body at character {first['loc'][-1]}: {reason}"
        return error_response(400, "malformed_json", detail)
    if _not_a_json_object(first):
        detail = "the body must be a JSON object sent with Content-Type: application/json"
        return error_response(422, "validation_error", detail)
    fields = describe_validation_errors(errors, shown=20)
    detail = "; ".join(f"{f.location}: {f.message}" for f in fields[:5])
    if len(errors) > 5:
        detail += f" (and {len(errors) - 5} more)"
    return error_response(422, "validation_error", detail, errors=fields)


def flat_routes(routes: Iterable[Any]) -> Iterator[Any]:
    """Routes, with those of included routers in place of the routers (recent FastAPI keeps an
    included router as one wrapper route; its routes carry their full paths, as ours are
    included without an extra prefix)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from flat_routes(included.routes)
        else:
            yield route


def allowed_methods(request: Request) -> str:
    """Every method some route serves at the request's path, for a 405's ``Allow`` header.

    Starlette's own ``Allow`` names only the first route matching the path, so a path served by
    two routes (``GET`` and ``POST /v1/collections``) would advertise one method.
    """
    methods: set[str] = set()
    for route in flat_routes(request.app.router.routes):
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    return ", ".join(sorted(methods))


async def handle_http_exception(request: Request, error: Exception) -> JSONResponse:
    """Routing errors (unknown path: 404, wrong method: 405) in the common error shape."""
    assert isinstance(error, StarletteHTTPException)
    kind = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
    detail = str(error.detail)
    if error.status_code in (404, 405):
        detail = f"{detail}: {request.method} {request.url.path}"
    response = error_response(error.status_code, kind, detail)
    response.headers.update(error.headers or {})
    if error.status_code == 405:
        response.headers["Allow"] = allowed_methods(request) or response.headers.get("Allow", "")
    return response


async def handle_database_error(_request: Request, error: Exception) -> JSONResponse:
    """The database is unreachable or refused the connection: 503, never a 500. Nothing was
    written (every write is one transaction, and a failure after its commit is not reported:
    the registry answers the committed write). Only a connection lost during the COMMIT itself
    leaves the outcome unknown: a retry with the same Idempotency-Key is then safe."""
    logger.error("database unavailable: %s", error)
    return domain_error_response(
        StorageUnavailableError("the database is unavailable right now; retry shortly")
    )


async def handle_unexpected_error(_request: Request, error: Exception) -> JSONResponse:
    logger.exception("unhandled error", exc_info=error)
    return error_response(500, "internal_error", "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ProtonetError, handle_domain_error)
    app.add_exception_handler(OperationalError, handle_database_error)
    app.add_exception_handler(RequestValidationError, handle_validation_error)
    app.add_exception_handler(StarletteHTTPException, handle_http_exception)
    app.add_exception_handler(Exception, handle_unexpected_error)

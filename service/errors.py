"""Every error the service raises on purpose, each a :class:`~protonet.errors.ProtonetError`.

The core's own errors stay in :mod:`protonet.errors` (``CheckpointError``,
``InvalidInputError``); these are the service's. Each maps to one HTTP status and error kind
in one place, service/edge/error_responses.py; raising code never deals in status codes.
"""

from __future__ import annotations

from protonet.errors import InvalidInputError, ProtonetError


class NotFoundError(ProtonetError):
    """A named resource (collection, class) does not exist."""


class ConflictError(ProtonetError):
    """A resource with that name already exists."""


class LimitExceededError(ProtonetError):
    """A request is larger than a configured limit (items, pixels, bytes)."""


class CollectionTooLargeError(ProtonetError):
    """A collection has more examples than an operation over all of them allows (diagnostics:
    PROTONET_DIAGNOSTICS_MAX_EXAMPLES)."""


class MalformedJSONError(ProtonetError):
    """The body is not valid JSON (syntax, encoding, or absurd nesting)."""


class NotReadyError(ProtonetError):
    """The service is still starting (loading, re-embedding) or failed to start."""


class UnauthenticatedError(ProtonetError):
    """No API key, or one that matches no configured key."""


class ForbiddenError(ProtonetError):
    """A valid API key whose role does not allow the operation."""


class RateLimitedError(ProtonetError):
    """A client sent more requests than its rate allows; ``retry_after`` is in seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DiagnosticsBusyError(RateLimitedError):
    """As many diagnostics as allowed (per process, or per tenant) are running already."""


class RememberLimitError(RateLimitedError):
    """A query asked to remember more inputs than its tenant may keep at once
    (PROTONET_REMEMBER_MAX_INPUTS, PROTONET_REMEMBER_MAX_BYTES); ``retry_after``: until the
    oldest expire."""


class ForgottenInputError(ProtonetError):
    """Feedback on an input that is not remembered for that collection (never was, expired,
    or used for feedback already). Not a :class:`NotFoundError`: the collection exists."""


class AdaptationBusyError(RateLimitedError):
    """As many adaptation jobs as PROTONET_ADAPT_MAX_CONCURRENT allows run in this process."""


class IdempotencyKeyReusedError(ProtonetError):
    """An ``Idempotency-Key`` sent again with another request (body or target) than the one
    it first came with."""


class OverloadedError(ProtonetError):
    """The server is at its limit of concurrent requests; ``retry_after`` is in seconds."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RevisionNotReachedError(ProtonetError):
    """This process has not applied the collection's changes up to the requested revision
    within the wait allowed (a read asked for ``min_revision``); retry after ``retry_after``."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StorageUnavailableError(ProtonetError):
    """The database cannot be reached right now; retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RejectionUnavailableError(ProtonetError):
    """Calibrated rejection of unknowns was asked of a model that carries no usable calibration."""


class UnknownModelError(ProtonetError):
    """A request named a model this service does not serve (PROTONET_MODELS), or a collection
    is bound to one."""


class ModelMismatchError(InvalidInputError):
    """An input of the wrong modality for the model: an image for a text collection, or text
    for an image one."""


class InvalidSnapshotError(InvalidInputError):
    """A snapshot file that is not one this service wrote, or was damaged or cut short on the
    way (its checksum, counts or a line do not hold): nothing of it was kept."""


class AcceptanceOutOfRangeError(ProtonetError):
    """A rejection's known-acceptance target lies outside the model's calibrated range."""

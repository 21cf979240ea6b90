"""Admission of every HTTP request, as a pure-ASGI middleware in front of the app.

In order: authenticate (any path but the probes, the docs and, unless PROTONET_PROTECT_METRICS,
``/metrics``), take a token from the caller's rate bucket, take a slot of the concurrency cap.
The principal goes into ``scope["state"]`` for the route dependencies, which check roles and
tenants (403). Working on paths rather than on routes means a route added later (``/metrics``,
or one mounted as a sub-app) is covered without declaring anything.

A failed authentication still takes a token, from the client address's bucket: guessing keys
is rate limited like anything else, and is answered 429 once the bucket is empty.
"""

from __future__ import annotations

from protonet.errors import ProtonetError, UnauthenticatedError
from service.auth import Authenticator, Principal
from service.errors import domain_error_response
from service.limits import ASGIApp, Receive, Scope, Send
from service.ratelimit import ConcurrencyLimit, RateLimiter

PROBE_PATHS = frozenset({"/healthz", "/readyz"})  # never limited: kubelet must always get in
DOC_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
METRICS_PATH = "/metrics"


def requires_key(path: str, protect_metrics: bool) -> bool:
    """Whether a request to ``path`` needs an API key (when auth is on)."""
    if path in DOC_PATHS or path in PROBE_PATHS:
        return False
    is_metrics = path == METRICS_PATH or path.startswith(METRICS_PATH + "/")
    return protect_metrics or not is_metrics


def principal_of(scope: Scope) -> Principal | None:
    """The principal the middleware admitted the request as (``None`` on open paths)."""
    principal: Principal | None = scope.get("state", {}).get("principal")
    return principal


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return f"client:{client[0]}" if client else "client:unknown"


class AccessMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        authenticator: Authenticator,
        limiter: RateLimiter,
        concurrency: ConcurrencyLimit,
        protect_metrics: bool,
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.limiter = limiter
        self.concurrency = concurrency
        self.protect_metrics = protect_metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PROBE_PATHS:
            await self.app(scope, receive, send)
            return
        try:
            principal = self.admit(scope)
            self.concurrency.acquire()
        except ProtonetError as error:
            await domain_error_response(error)(scope, receive, send)
            return
        try:
            scope.setdefault("state", {})["principal"] = principal
            await self.app(scope, receive, send)
        finally:
            self.concurrency.release()

    def admit(self, scope: Scope) -> Principal | None:
        """Authenticate, then rate-limit by key (or by address without a valid key)."""
        principal, failure = None, None
        if requires_key(scope["path"], self.protect_metrics):
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            try:
                principal = self.authenticator.authenticate(headers)
            except UnauthenticatedError as error:
                failure = error
        bucket = client_address(scope) if principal is None else f"key:{principal.key_id}"
        if principal is not None and not self.authenticator.enabled:
            bucket = client_address(scope)  # everyone is "anonymous": limit by address
        self.limiter.check(bucket)
        if failure is not None:
            raise failure
        return principal

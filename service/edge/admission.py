"""Admission of every HTTP request, as a pure-ASGI middleware in front of the app.

In order: authenticate (any path but the probes, the docs, the web page's files and, unless
PROTONET_PROTECT_METRICS, ``/metrics``), take a token from the caller's rate bucket, take a slot
of the concurrency cap. The principal goes into ``scope["state"]`` for the route dependencies,
which check roles and tenants (403). Working on paths rather than on routes means a route added
later (``/metrics``, or one mounted as a sub-app) is covered without declaring anything.

Which bucket a request takes its token from:

- a valid API key (auth on): that key's bucket (PROTONET_RATE_LIMIT_*);
- anything else (every request with auth off; open paths and failed authentications with auth
  on): the client address's bucket (PROTONET_ADDRESS_RATE_LIMIT_*, off by default: with auth
  off any caller may do anything anyway, and behind a proxy all callers share one address);
- a failed authentication also takes one from its address's failure bucket
  (PROTONET_AUTH_FAILURE_RATE_LIMIT_*, on by default): guessing keys is answered 429 once it
  is empty, while valid keys from the same address keep their own buckets.

The client address is the connection's peer, or, where the peer is one of
PROTONET_TRUSTED_PROXIES, what uvicorn's ProxyHeadersMiddleware (installed in front of this one)
read from X-Forwarded-For.
"""

from __future__ import annotations

from protonet.errors import ProtonetError
from service.edge.asgi import ASGIApp, Receive, Scope, Send
from service.edge.auth import Authenticator, Principal
from service.edge.error_responses import domain_error_response
from service.edge.rate_limits import ConcurrencyLimit, RateLimiter
from service.errors import UnauthenticatedError

PROBE_PATHS = frozenset({"/healthz", "/readyz"})  # never limited: kubelet must always get in
DOC_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
# Swagger UI's and ReDoc's scripts and styles, served from the fastapi-offline package (app.py).
DOC_ASSETS_PATH = "/docs/assets"
METRICS_PATH = "/metrics"
# The web page (service/api/ui.py) and its static files: public like the docs, as they hold
# no data; the page asks for a key and sends it with its API calls, which need one.
UI_PATH = "/ui"
UI_ASSETS_PATH = "/ui/assets"
UI_PATHS = frozenset({"/", UI_PATH})
OPEN_PREFIXES = (DOC_ASSETS_PATH + "/", UI_ASSETS_PATH + "/")


def requires_key(path: str, protect_metrics: bool) -> bool:
    """Whether a request to ``path`` needs an API key (when auth is on)."""
    if path in DOC_PATHS or path in PROBE_PATHS or path in UI_PATHS:
        return False
    if path.startswith(OPEN_PREFIXES):
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


class AdmissionMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        authenticator: Authenticator,
        key_limiter: RateLimiter,
        address_limiter: RateLimiter,
        auth_failure_limiter: RateLimiter,
        concurrency: ConcurrencyLimit,
        protect_metrics: bool,
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.key_limiter = key_limiter
        self.address_limiter = address_limiter
        self.auth_failure_limiter = auth_failure_limiter
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
        if principal is not None and self.authenticator.enabled:
            self.key_limiter.check(f"key:{principal.key_id}")
            return principal
        # No valid key: auth is off (everyone is "anonymous"), an open path, or a failure.
        address = client_address(scope)
        self.address_limiter.check(address)
        if failure is not None:
            self.auth_failure_limiter.check(address)
            raise failure
        return principal

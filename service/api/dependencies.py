"""FastAPI dependencies, as ``Annotated`` aliases the routers declare parameters with.

They are ``async`` although they never await: FastAPI runs plain ``def`` dependencies in its
thread pool, two thread hand-offs per request that cost more than a whole health check.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Header, Request

from service.collections.models import ModelSet
from service.collections.registry import CollectionRegistry
from service.edge.admission import principal_of
from service.edge.auth import TENANT_HEADER, TENANT_PATTERN, Role, authorize
from service.errors import NotReadyError, UnauthenticatedError
from service.state import ServiceState


async def get_state(request: Request) -> ServiceState:
    """The app's state, set by the lifespan."""
    state: ServiceState | None = getattr(request.app.state, "service", None)
    if state is None:
        raise NotReadyError("service not started (the app's lifespan has not run)")
    return state


StateDep = Annotated[ServiceState, Depends(get_state)]


async def get_registry(state: StateDep) -> CollectionRegistry:
    """The collections; 503 until stored examples are re-embedded and indexes are built."""
    return state.require_registry()


async def get_models(state: StateDep) -> ModelSet:
    return state.models


RegistryDep = Annotated[CollectionRegistry, Depends(get_registry)]
ModelsDep = Annotated[ModelSet, Depends(get_models)]


TenantHeader = Annotated[
    str | None,
    Header(
        alias=TENANT_HEADER,
        pattern=TENANT_PATTERN,
        description="Admin keys only: act in this tenant instead of the key's own.",
    ),
]


def tenant_for(required: Role) -> Callable[[Request, str | None], Awaitable[str]]:
    """A dependency: the tenant the request acts in, once its key's role allows ``required``
    (403 otherwise). With auth off the middleware admits everyone as an admin of ``default``."""

    async def dependency(request: Request, tenant: TenantHeader = None) -> str:
        principal = principal_of(request.scope)
        if principal is None:  # fail closed if the admission middleware did not run
            raise UnauthenticatedError("request was not authenticated")
        return authorize(principal, required, tenant)

    return dependency


ReadTenant = Annotated[str, Depends(tenant_for(Role.READ))]
WriteTenant = Annotated[str, Depends(tenant_for(Role.WRITE))]

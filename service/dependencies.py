"""FastAPI dependencies, as ``Annotated`` aliases the routers declare parameters with.

They are ``async`` although they never await: FastAPI runs plain ``def`` dependencies in its
thread pool, two thread hand-offs per request that cost more than a whole health check.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from protonet.errors import NotReadyError
from service.encoder import Encoder
from service.registry import CollectionRegistry
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


async def get_encoder(state: StateDep) -> Encoder:
    return state.encoder


RegistryDep = Annotated[CollectionRegistry, Depends(get_registry)]
EncoderDep = Annotated[Encoder, Depends(get_encoder)]

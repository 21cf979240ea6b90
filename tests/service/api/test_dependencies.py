"""Every route runs on the event loop: FastAPI runs a plain ``def`` endpoint or dependency in
its thread pool, two thread hand-offs per request (service/api/dependencies.py)."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from service.app import create_app
from service.edge.error_responses import flat_routes


def calls_of(dependant: Dependant, where: str) -> Iterator[tuple[str, Any]]:
    """The endpoint and every dependency below it, however deep."""
    yield where, dependant.call
    for dependency in dependant.dependencies:
        name = getattr(dependency.call, "__qualname__", repr(dependency.call))
        yield from calls_of(dependency, f"{where} -> {name}")


def test_every_endpoint_and_dependency_is_async(settings):
    routes = [r for r in flat_routes(create_app(settings).router.routes) if isinstance(r, APIRoute)]
    assert routes
    calls = [call for route in routes for call in calls_of(route.dependant, route.path)]
    assert any(" -> " in where for where, _ in calls)  # the walk reaches the dependencies
    sync = [where for where, call in calls if not inspect.iscoroutinefunction(call)]
    assert sync == [], f"run in FastAPI's thread pool: {sync}"

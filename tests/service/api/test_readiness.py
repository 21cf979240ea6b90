"""Readiness while the database is away: still ready (queries are answered from memory), with
``"database": "down"`` in ``/readyz``, 503 for a probe that asks ``?require=database``, and
``protonet_database_up 0`` in the metrics."""

from __future__ import annotations

import anyio
import pytest
from sqlalchemy.exc import OperationalError

from tests.service.helpers import Drawings, serve

pytestmark = pytest.mark.anyio


async def database_state(running) -> tuple[dict, int, str]:
    """``/readyz``'s body, ``/readyz?require=database``'s status and the gauge's line."""
    ready = await running.http.get("/readyz")
    assert ready.status_code == 200, ready.text  # ready whatever the database does
    strict = await running.http.get("/readyz", params={"require": "database"})
    metrics = (await running.http.get("/metrics")).text
    gauge = next(line for line in metrics.splitlines() if line.startswith("protonet_database_up"))
    return ready.json(), strict.status_code, gauge


async def test_readiness_and_the_gauge_say_when_the_database_is_down(settings, monkeypatch):
    drawings = Drawings(1)
    async with serve(settings) as running:
        await running.client.create_collection("c")
        await running.client.add_support("c", [("a", drawings.png(0))])
        probe = running.state.database
        assert await anyio.to_thread.run_sync(probe.check_now)
        assert await database_state(running) == (
            {"status": "ready", "detail": "ready", "database": "up"},
            200,
            "protonet_database_up 1.0",
        )

        def unreachable() -> None:
            raise OperationalError("SELECT 1", {}, Exception("connection refused"))

        monkeypatch.setattr(running.state.storage, "ping", unreachable)
        assert not await anyio.to_thread.run_sync(probe.check_now)
        body, strict, gauge = await database_state(running)
        assert (body["status"], body["database"], strict, gauge) == (
            "ready",
            "down",
            503,
            "protonet_database_up 0.0",
        )
        monkeypatch.undo()
        assert await anyio.to_thread.run_sync(probe.check_now)
        assert (await database_state(running))[1:] == (200, "protonet_database_up 1.0")


async def test_an_overdue_round_trip_counts_as_down(settings, monkeypatch):
    """A database behind a partition does not refuse, it hangs: a ping in flight for longer
    than the probe's timeout reads as down, without waiting for it."""
    async with serve(settings) as running:
        probe = running.state.database
        monkeypatch.setattr(probe, "_pinging_since", 0.0)  # in flight since long ago
        body = (await running.http.get("/readyz")).json()
        assert body["database"] == "down"

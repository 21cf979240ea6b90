"""API keys, roles and tenants: 401 without a valid key, 403 for the wrong role, and tenants
that cannot see, touch or detect each other's collections."""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import asynccontextmanager

import numpy as np
import pytest

from service.app import create_app
from service.client import AsyncProtonetClient, ProtonetAPIError
from service.edge.auth import Authenticator, KeyConfigError, load_keys
from service.launcher import REPO_ROOT
from tests.service.helpers import Drawings, make_settings, pixels_item, serve

pytestmark = pytest.mark.anyio

READ_A = "read-key-of-tenant-a-0123456789"
WRITE_A = "write-key-of-tenant-a-0123456789"
WRITE_B = "write-key-of-tenant-b-0123456789"
ADMIN = "admin-key-of-the-ops-team-012345"
KEYS = f"{READ_A}:a:read,{WRITE_A}:a:write,{WRITE_B}:b:write,{ADMIN}:ops:admin"
PIXELS = pixels_item(np.ones((10, 10)))


def keyed_settings(tmp_path, checkpoint, **overrides):
    return make_settings(tmp_path, checkpoint, auth_enabled=True, api_keys=KEYS, **overrides)


@asynccontextmanager
async def clients(tmp_path, checkpoint, **overrides):
    """The running app and one client per key (by name), plus one without a key."""
    async with serve(keyed_settings(tmp_path, checkpoint, **overrides)) as running:
        keys = {"read_a": READ_A, "write_a": WRITE_A, "write_b": WRITE_B, "admin": ADMIN}
        by_name = {n: AsyncProtonetClient(http=running.http, api_key=k) for n, k in keys.items()}
        yield running, by_name


async def status_of(call) -> int:
    try:
        await call
    except ProtonetAPIError as error:
        return error.status_code
    return 200


async def test_missing_or_wrong_key_is_401_and_probes_stay_open(tmp_path, checkpoint_a):
    async with clients(tmp_path, checkpoint_a) as (running, _):
        http = running.http
        missing = await http.get("/v1/collections")
        assert missing.status_code == 401 and missing.json()["error"] == "unauthenticated"
        assert "missing API key" in missing.json()["detail"]
        assert missing.headers["www-authenticate"].startswith("Bearer")
        for headers in (
            {"Authorization": "Bearer not-a-configured-key-at-all"},
            {"X-API-Key": "not-a-configured-key-at-all"},
            {"Authorization": f"Basic {READ_A}"},
            {"Authorization": f"Bearer {READ_A}", "X-API-Key": WRITE_A},
        ):
            response = await http.get("/v1/collections", headers=headers)
            assert response.status_code == 401, headers
        assert (await http.get("/v1/nothing")).status_code == 401  # no route probing either
        for path in ("/healthz", "/readyz", "/openapi.json", "/docs"):
            assert (await http.get(path)).status_code == 200, path
        for headers in ({"Authorization": f"Bearer {READ_A}"}, {"X-API-Key": READ_A}):
            assert (await http.get("/v1/collections", headers=headers)).status_code == 200


async def test_read_keys_read_and_write_keys_write(tmp_path, checkpoint_a):
    drawings = Drawings(2)
    async with clients(tmp_path, checkpoint_a) as (_, c):
        await c["write_a"].create_collection("letters")
        await c["write_a"].add_support("letters", [("x", drawings.png(0)), ("y", drawings.png(1))])
        reader = c["read_a"]
        assert [x["name"] for x in await reader.list_collections()] == ["letters"]
        assert (await reader.get_collection("letters"))["n_examples"] == 2
        assert (await reader.query("letters", [drawings.png(0)]))["results"][0]["label"] == "x"
        assert len((await reader.embed([drawings.png(0)]))["embeddings"]) == 1
        assert (await reader.model())["embedding_dim"] == 64
        writes = [
            reader.create_collection("mine"),
            reader.add_support("letters", [("z", drawings.png(0))]),
            reader.delete_class("letters", "x"),
            reader.set_rejection("letters", "none"),
            reader.delete_collection("letters"),
        ]
        for write in writes:
            with pytest.raises(ProtonetAPIError) as refused:
                await write
            assert refused.value.status_code == 403 and refused.value.error == "forbidden"
            assert "'read' role" in refused.value.detail
        assert (await c["write_a"].get_collection("letters"))["n_examples"] == 2


async def test_tenants_cannot_see_touch_or_detect_each_other(tmp_path, checkpoint_a):
    drawings = Drawings(1)
    async with clients(tmp_path, checkpoint_a) as (running, c):
        a, b = c["write_a"], c["write_b"]
        await a.create_collection("secret")
        await a.add_support("secret", [("x", drawings.png(0))])
        assert await b.list_collections() == []

        async def answer(path: str, method: str = "GET", body=None):
            response = await running.http.request(
                method, path, json=body, headers={"X-API-Key": WRITE_B}
            )
            return response.status_code, response.json()

        for name in ("secret", "never-created"):  # existing elsewhere == missing
            got = [
                await answer(f"/v1/collections/{name}"),
                await answer(f"/v1/collections/{name}/query", "POST", {"queries": [PIXELS]}),
                await answer(f"/v1/collections/{name}/diagnostics"),
                await answer(
                    f"/v1/collections/{name}/support",
                    "POST",
                    {"examples": [{"label": "y", **PIXELS}]},
                ),
                await answer(f"/v1/collections/{name}/classes/x", "DELETE"),
                await answer(f"/v1/collections/{name}", "DELETE"),
            ]
            for status, body in got:
                assert status == 404
                assert body == {
                    "error": "not_found",
                    "detail": f"collection {name!r} does not exist",
                    "errors": [],
                }
        await b.create_collection("secret")  # a name taken in another tenant is free here
        await b.add_support("secret", [("y", drawings.png(0))])
        assert [x["label"] for x in (await a.list_classes("secret"))] == ["x"]
        assert [x["label"] for x in (await b.list_classes("secret"))] == ["y"]


async def test_admin_acts_in_any_tenant_and_others_only_in_their_own(tmp_path, checkpoint_a):
    async with clients(tmp_path, checkpoint_a) as (running, c):
        await c["write_a"].create_collection("in-a")
        assert await c["admin"].list_collections() == []  # its own tenant, "ops"
        admin_in_a = AsyncProtonetClient(http=running.http, api_key=ADMIN, tenant="a")
        assert [x["name"] for x in await admin_in_a.list_collections()] == ["in-a"]
        await admin_in_a.delete_collection("in-a")
        assert await c["write_a"].list_collections() == []

        b_in_a = AsyncProtonetClient(http=running.http, api_key=WRITE_B, tenant="a")
        with pytest.raises(ProtonetAPIError) as refused:
            await b_in_a.list_collections()
        assert refused.value.status_code == 403 and "only admin keys" in refused.value.detail
        b_in_b = AsyncProtonetClient(http=running.http, api_key=WRITE_B, tenant="b")
        assert await b_in_b.list_collections() == []
        bad = await running.http.get(
            "/v1/collections", headers={"X-API-Key": ADMIN, "X-Protonet-Tenant": "a b"}
        )
        assert bad.status_code == 422


async def test_without_auth_everyone_is_admin_of_the_default_tenant(settings):
    async with serve(settings) as running:
        await running.client.create_collection("open")
        other = AsyncProtonetClient(http=running.http, tenant="elsewhere")
        assert await other.list_collections() == []
        assert [x["name"] for x in await running.client.list_collections()] == ["open"]
        stored = running.state.storage.list_collections()
        assert [(s.tenant, s.name) for s in stored] == [("default", "open")]


@pytest.mark.parametrize("protect", [True, False])
async def test_metrics_path_is_protected_when_asked(tmp_path, checkpoint_a, protect):
    """Any route at /metrics (the app's, or one added later) follows PROTONET_PROTECT_METRICS."""
    app = create_app(keyed_settings(tmp_path, checkpoint_a, protect_metrics=protect))

    @app.get("/metrics")
    async def metrics() -> dict[str, str]:
        return {"metrics": "here"}

    import httpx

    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as http:
        anonymous = await http.get("/metrics")
        keyed = await http.get("/metrics", headers={"X-API-Key": READ_A})
    assert anonymous.status_code == (401 if protect else 200)
    assert keyed.status_code == 200


async def test_openapi_declares_the_security_schemes_and_auth_errors(tmp_path, checkpoint_a):
    async with clients(tmp_path, checkpoint_a) as (running, _):
        spec = (await running.http.get("/openapi.json")).json()
    assert set(spec["components"]["securitySchemes"]) == {"BearerAuth", "ApiKeyHeader"}
    support = spec["paths"]["/v1/collections/{name}/support"]["post"]
    assert {"401", "403", "429"} <= set(support["responses"])
    assert support["security"]
    assert "security" not in spec["paths"]["/healthz"]["get"]
    assert "401" not in spec["paths"]["/readyz"]["get"]["responses"]


def test_keys_file_lines_and_json(tmp_path):
    lines = tmp_path / "keys.txt"
    lines.write_text(f"# ops keys\n{WRITE_A}:a:write\n\n{ADMIN}:ops:admin  # on-call\n")
    listed = tmp_path / "keys.json"
    listed.write_text(
        json.dumps([{"key": "k:with:colons-0123456789", "tenant": "t", "role": "read"}])
    )
    keys = load_keys(f"{READ_A}:a:read", lines) + load_keys(None, listed)
    principals = [(k.principal.tenant, str(k.principal.role)) for k in keys]
    assert principals == [("a", "read"), ("a", "write"), ("ops", "admin"), ("t", "read")]
    authenticator = Authenticator(keys, enabled=True)
    principal = authenticator.authenticate({"x-api-key": "k:with:colons-0123456789"})
    assert principal.tenant == "t"
    # Only hashes are kept: the keys appear nowhere in the authenticator.
    assert READ_A not in repr(vars(authenticator)) and ADMIN not in repr(keys)


@pytest.mark.parametrize(
    ("inline", "message"),
    [
        ("short:a:read", "shorter than 16"),
        (f"{READ_A}:a:owner", "role 'owner'"),
        (f"{READ_A}:a b:read", "tenant 'a b'"),
        (f"{READ_A}:read", "expected 'key:tenant:role'"),
        (f"{READ_A}:a:read,{READ_A}:b:write", "configured twice"),
    ],
)
def test_bad_key_configuration_fails_at_startup(tmp_path, checkpoint_a, inline, message):
    with pytest.raises(KeyConfigError, match=message) as error:
        create_app(make_settings(tmp_path, checkpoint_a, auth_enabled=True, api_keys=inline))
    assert READ_A not in str(error.value)  # never quoted back


def test_auth_without_keys_or_with_a_missing_file_fails_at_startup(tmp_path, checkpoint_a):
    with pytest.raises(KeyConfigError, match="no keys are configured"):
        create_app(make_settings(tmp_path, checkpoint_a, auth_enabled=True))
    missing = tmp_path / "nope.txt"
    with pytest.raises(KeyConfigError, match=r"nope\.txt"):
        create_app(make_settings(tmp_path, checkpoint_a, auth_enabled=True, api_keys_file=missing))


def test_settings_never_show_the_inline_keys_and_the_app_drops_them(tmp_path, checkpoint_a):
    settings = keyed_settings(tmp_path, checkpoint_a)
    assert READ_A not in repr(settings) and READ_A not in str(settings.model_dump())
    app = create_app(settings)
    assert app.state.settings.api_keys is None and app.state.settings.auth_enabled


def test_auth_loads_no_database_code():
    """Checking keys and roles needs no SQLAlchemy (the default tenant is auth's own)."""
    code = "import sys, service.edge.auth; assert 'sqlalchemy' not in sys.modules, 'loaded'"
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)

"""Revisions per tenant in storage: each tenant numbers its own writes 1, 2, 3..., in the
order of the change ids (global, internal to the change feed), also under concurrent writers
on SQLite and PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from service.storage.repository import Storage

WRITES_PER_TENANT = 12


def check_revisions_per_tenant(url: str) -> None:
    """Two tenants write at once from several threads (as several processes would): each
    tenant's changes, in change id order, are its revisions 1, 2, 3... without a gap, and a
    write returns its own revision."""
    storage = Storage(url)
    try:
        collections = {t: storage.create_collection("c", t) for t in ("a", "b")}
        embeddings = np.ones((1, 4), np.float32)

        def write(tenant: str) -> int:
            collection = collections[tenant]
            pixels = np.zeros((1, 28, 28), np.uint8)
            return storage.add_examples(collection.id, ["x"], pixels, embeddings, "v").revision

        tenants = ["a", "b"] * WRITES_PER_TENANT
        with ThreadPoolExecutor(4) as pool:
            returned = list(pool.map(write, tenants))
        changes = storage.changes_after(0)
        for tenant in ("a", "b"):
            mine = [c for c in changes if c.tenant == tenant]
            assert [c.revision for c in mine] == list(range(1, WRITES_PER_TENANT + 2))
            got = sorted(r for t, r in zip(tenants, returned, strict=True) if t == tenant)
            assert got == list(range(2, WRITES_PER_TENANT + 2))  # 1: the creation
            assert storage.tenant_revision(tenant) == WRITES_PER_TENANT + 1
            stored = storage.find_collection(tenant, "c")
            assert stored is not None and stored.revision == WRITES_PER_TENANT + 1
            assert stored.change_id == mine[-1].id
        assert storage.tenant_revision("nobody") == 0
    finally:
        storage.close()


def test_each_tenant_numbers_its_writes_on_sqlite(tmp_path):
    check_revisions_per_tenant(f"sqlite:///{tmp_path / 'protonet.sqlite3'}")


def test_each_tenant_numbers_its_writes_on_postgresql(postgres_url):
    check_revisions_per_tenant(postgres_url)

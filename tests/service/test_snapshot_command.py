"""``protonet snapshot export|import`` against a database, no service running: a backup that a
service on another database restores from and answers with as the original did; the same file
as the HTTP routes; refusals in one line with exit status 2, and nothing written."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from service.__main__ import main
from service.storage.repository import Storage
from tests.service.helpers import Drawings, make_settings, serve

pytestmark = pytest.mark.anyio


def command(monkeypatch, data_dir, checkpoint, *args: str) -> int:
    """``python -m service snapshot ...`` on the SQLite database in ``data_dir``."""
    monkeypatch.setenv("PROTONET_DATA_DIR", str(data_dir))
    monkeypatch.setenv("PROTONET_CHECKPOINT", str(checkpoint))
    return main(["snapshot", *args])


async def test_export_and_import_against_databases_round_trip(
    tmp_path, checkpoint_a, monkeypatch, capsys
):
    drawings = Drawings(3)
    queries = [drawings.png(c) for c in range(3)]
    async with serve(make_settings(tmp_path / "a", checkpoint_a)) as running:
        await running.client.create_collection("shapes", rejection="none")
        await running.client.add_support(
            "shapes", [(f"c{c}", drawings.png(c)) for c in (2, 0, 1, 2)]
        )
        before = await running.client.query("shapes", queries, top_k=3)
        served = (await running.http.get("/v1/collections/shapes/snapshot")).content
    backup = tmp_path / "shapes.jsonl"
    assert (
        command(
            monkeypatch,
            tmp_path / "a",
            checkpoint_a,
            "export",
            "--collection",
            "shapes",
            "--out",
            str(backup),
        )
        == 0
    )
    assert backup.read_bytes() == served  # the HTTP route's file, byte for byte
    assert "exported collection 'shapes' of tenant 'default'" in capsys.readouterr().err
    assert (
        command(
            monkeypatch,
            tmp_path / "b",
            checkpoint_a,
            "import",
            str(backup),
            "--collection",
            "restored",
            "--tenant",
            "team",
        )
        == 0
    )
    assert "restored collection 'restored' of tenant 'team': 3 classes, 4 examples" in (
        capsys.readouterr().err
    )
    team = make_settings(tmp_path / "b", checkpoint_a)
    async with serve(team) as running:
        client = running.client
        client.headers["X-Protonet-Tenant"] = "team"  # auth off: an admin of every tenant
        after = await client.query("restored", queries, top_k=3)
        assert [r["top_k"] for r in after["results"]] == [r["top_k"] for r in before["results"]]
        assert [c["label"] for c in await client.list_classes("restored")] == ["c0", "c1", "c2"]


def test_refusals_are_one_line_with_status_2_and_write_nothing(
    tmp_path, checkpoint_a, monkeypatch, capsys
):
    database = f"sqlite:///{tmp_path / 'db' / 'protonet.sqlite3'}"
    Storage(database).close()  # an empty database, migrated
    backup = tmp_path / "cut.jsonl"
    backup.write_bytes(b'{"format": "protonet-snapshot", "version": 1}\n')
    cases = [
        (
            ["export", "--collection", "none"],
            "collection 'none' of tenant 'default' does not exist",
        ),
        (["import", str(backup), "--collection", "x"], "invalid snapshot: line 1"),
        (["import", str(tmp_path / "missing"), "--collection", "x"], "cannot read"),
    ]
    for args, message in cases:
        assert command(monkeypatch, tmp_path / "db", checkpoint_a, *args) == 2
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert error.startswith("error: ") and message in error, error
    good = tmp_path / "good.jsonl"
    good.write_bytes(
        b'{"format":"protonet-snapshot","version":1,"collection":{"name":"a","index":"auto",'
        b'"rejection":"none","model":"omniglot"},"model_versions":[],"revision":1}\n'
    )
    assert (
        command(
            monkeypatch, tmp_path / "db", checkpoint_a, "import", str(good), "--collection", "x"
        )
        == 2
    )
    assert "model 'omniglot' (the snapshot's, or --model) is not served" in capsys.readouterr().err
    assert (
        command(
            monkeypatch,
            tmp_path / "db",
            checkpoint_a,
            "import",
            str(good),
            "--collection",
            "x",
            "--model",
            "default",
        )
        == 2
    )  # no end line: cut short
    assert "the file was cut short" in capsys.readouterr().err
    assert command(monkeypatch, tmp_path / "db", checkpoint_a, "export", "--collection", "x") == 2
    storage = Storage(database)
    try:
        with storage.engine.connect() as connection:  # nothing at all, invisible rows included
            assert connection.execute(text("SELECT count(*) FROM collections")).scalar() == 0
        assert storage.count_examples() == 0
    finally:
        storage.close()

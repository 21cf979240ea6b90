"""Labels are safe in every route that carries them: no label can address another resource,
and look-alike spellings are one class (issue 11: `..` deleted its whole collection)."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from service.client import ProtonetAPIError, label_segment
from service.collections.labels import MAX_LENGTH, normalize_label
from service.storage.records import ClassRecord
from tests.service.helpers import make_settings, serve

pytestmark = pytest.mark.anyio

INK = np.zeros((4, 4))

# Labels that look like URL syntax but are plain text: each must round-trip through the client
# (create, list, delete) and never touch another class or the collection.
TRICKY = ["a.", ".a", "a..", "...", "%2e%2e", "%2E", "a%2Fb", "50%", "a/b", "a/.b", "?x=1", "#x"]


async def delete_raw(running, raw_path: str) -> httpx.Response:
    """A DELETE whose path goes to the app exactly as written (no client-side normalization)."""
    return await running.http.request("DELETE", httpx.URL(raw_path))


async def test_dot_segment_labels_are_refused_and_cannot_be_created(settings):
    async with serve(settings) as running:
        client = running.client
        await client.create_collection("letters")
        for label in [".", "..", "a/..", "../a", "a/./b", "./a"]:
            with pytest.raises(ProtonetAPIError) as refused:
                await client.add_support("letters", [(label, INK)])
            assert refused.value.status_code == 422, label
            assert "examples[0].label" in refused.value.detail
        assert (await client.get_collection("letters"))["n_classes"] == 0


async def test_deleting_a_dot_label_never_deletes_the_collection(settings):
    async with serve(settings) as running:
        client = running.client
        await client.create_collection("letters")
        await client.add_support("letters", [("a", INK)])
        for label in ["..", "."]:  # the client encodes the dots: the server sees the label
            with pytest.raises(ProtonetAPIError) as refused:
                await client.delete_class("letters", label)
            assert refused.value.status_code == 422
        for raw in ["%2e%2e", "%2E%2E", ".%2e", "%2e", "a%2F..", "..%2F..%2F"]:
            response = await delete_raw(running, f"/v1/collections/letters/classes/{raw}")
            assert response.status_code == 422, raw
            assert response.json()["error"] == "validation_error"
        # What curl -L makes of `classes/..`: a trailing slash is a 404, never a redirect.
        slash = await delete_raw(running, "/v1/collections/letters/")
        assert slash.status_code == 404 and "location" not in slash.headers
        assert await client.get_collection("letters")  # still there
        assert (await client.get_collection("letters"))["n_classes"] == 1


async def test_url_like_labels_round_trip_through_the_client(settings):
    async with serve(settings) as running:
        client = running.client
        await client.create_collection("c")
        await client.add_support("c", [("keep", INK)] + [(label, INK) for label in TRICKY])
        labels = {c["label"] for c in (await client.list_classes("c"))}
        assert labels == {"keep", *TRICKY}
        for label in TRICKY:
            await client.delete_class("c", label)
        remaining = await client.list_classes("c")
        assert [c["label"] for c in remaining] == ["keep"]


async def test_nfc_and_nfd_spellings_are_one_class(settings):
    async with serve(settings) as running:
        client = running.client
        await client.create_collection("c")
        await client.add_support("c", [("\u00e9", INK), ("e\u0301", INK)])
        classes = await client.list_classes("c")
        assert classes == [{"label": "\u00e9", "n_examples": 2}]
        await client.delete_class("c", "e\u0301")  # the decomposed spelling finds it too
        assert (await client.get_collection("c"))["n_classes"] == 0


def test_label_segment_never_is_a_dot_segment_or_has_a_slash():
    for label in ["..", ".", "a/../..", "%2e%2e", *TRICKY]:
        segment = label_segment(label)
        assert "/" not in segment and "." not in segment
        assert httpx.URL(f"http://h/c/classes/{segment}").path == f"/c/classes/{label}"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("a\u0085", "control"),
        ("a\u2028b", "line separator"),
        ("a\u2029b", "paragraph separator"),
        ("a\u200bb", "format"),
        ("a\u00adb", "format"),  # soft hyphen
        (" a", "whitespace"),
        ("a\u00a0", "whitespace"),
        ("x" * 201, "1-200"),
    ],
)
def test_label_rule_names_what_is_wrong(text, reason):
    with pytest.raises(ValueError, match=reason):
        normalize_label(text)


def test_fullwidth_forms_stay_distinct_and_inner_spaces_are_fine():
    assert normalize_label("\uff41") == "\uff41"  # NFC, not NFKC: documented
    assert normalize_label("a b") == "a b"
    assert normalize_label("e\u0301") == "\u00e9"


async def test_refused_labels_change_nothing(tmp_path, checkpoint_a):
    settings = make_settings(tmp_path, checkpoint_a)
    async with serve(settings) as running:
        await running.client.create_collection("c")
        body = {"examples": [{"label": "ok", "pixels": [[0.0]]}, {"label": "..", "pixels": [[0]]}]}
        response = await running.http.post("/v1/collections/c/support", json=body)
        assert response.status_code == 422
        assert (await running.client.get_collection("c"))["n_examples"] == 0


def test_the_label_column_holds_the_longest_label_the_rule_allows():
    """One limit: the rule's maximum (which every API field and the snapshot reader state) is
    what the ``classes.label`` column stores."""
    assert ClassRecord.__table__.c.label.type.length == MAX_LENGTH

"""Pages of a collection's classes (service/collections/pages.py, LiveCollection.class_page):
in id order after the cursor, the next cursor only while more remain, and cursors that name
their listing and collection."""

from __future__ import annotations

import numpy as np
import pytest

from protonet.errors import InvalidInputError
from service.collections.live_collection import ClassCount, LiveCollection
from service.collections.pages import encode_cursor, page_of, resume_after
from service.storage.repository import StoredEmbeddings

DIM = 4


def add_classes(live: LiveCollection, class_ids: list[int]) -> None:
    """One example per class, labelled ``c<id>``."""
    rng = np.random.default_rng(class_ids[0])
    stored = StoredEmbeddings(
        np.array(class_ids, dtype=np.int64),
        rng.standard_normal((len(class_ids), DIM)).astype(np.float32),
        np.array(class_ids, dtype=np.int64),
    )
    live.update_classes({i: f"c{i}" for i in class_ids}, stored)


def every_page(live: LiveCollection, limit: int) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        _, page = live.class_page(resume_after(cursor, "classes", live.id), limit)
        pages.append([c.label for c in page.items])
        if (cursor := page.next_cursor) is None:
            return pages


def test_pages_list_classes_by_id_whatever_order_they_arrive_in():
    live = LiveCollection(7, "c", DIM)
    add_classes(live, [10, 11, 12])
    add_classes(live, [5, 20])  # 5: created earlier elsewhere, applied late
    add_classes(live, [11])  # an existing class grows: it keeps its place
    assert every_page(live, 2) == [["c5", "c10"], ["c11", "c12"], ["c20"]]
    assert every_page(live, 5) == [["c5", "c10", "c11", "c12", "c20"]]
    live.remove_classes({10, 12, 99})
    assert every_page(live, 2) == [["c5", "c11"], ["c20"]]
    assert live.contents(classes_limit=1).classes.items == [ClassCount("c5", 1)]
    assert live.contents().classes is None


def test_a_page_resumes_after_its_cursor_even_when_that_class_is_gone():
    live = LiveCollection(7, "c", DIM)
    add_classes(live, [1, 2, 3, 4])
    _, first = live.class_page(0, 2)
    live.remove_classes({2})  # the last class of the first page
    add_classes(live, [5])
    _, second = live.class_page(resume_after(first.next_cursor, "classes", 7), 2)
    assert [c.label for c in second.items] == ["c3", "c4"] and second.next_cursor is not None
    _, third = live.class_page(resume_after(second.next_cursor, "classes", 7), 2)
    assert [c.label for c in third.items] == ["c5"] and third.next_cursor is None


def test_an_empty_collection_has_one_empty_last_page():
    assert LiveCollection(1, "c", DIM).class_page(0, 10)[1].items == []
    assert page_of([], 10, "classes", 1).next_cursor is None
    # A full page with nothing after it is the last one too.
    assert page_of([(1, "a"), (2, "b")], 2, "classes", 1).next_cursor is None


@pytest.mark.parametrize(
    "cursor",
    [
        encode_cursor("examples", 7, 3),  # another listing's
        encode_cursor("classes", 8, 3),  # another collection's (or a deleted namesake's)
        "not-a-cursor",
        "Y2xhc3Nlczo3Oi0x",  # classes:7:-1
        "",
    ],
)
def test_a_cursor_of_anything_else_is_refused_with_what_to_send(cursor):
    with pytest.raises(InvalidInputError, match="send the next_cursor of its previous page"):
        resume_after(cursor, "classes", 7)


def test_cursors_round_trip():
    assert resume_after(encode_cursor("classes", 7, 123), "classes", 7) == 123
    assert resume_after(None, "examples", 7) == 0

"""Bounded JSON parsing and the memory budget (issue 11: one request could take gigabytes)."""

from __future__ import annotations

import contextlib
import json
import re
import tracemalloc

import anyio
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protonet.errors import InvalidInputError
from service.api.json_bodies import MAX_KEYS_PER_OBJECT, BodyLimits, Converter, parse_json_body
from service.edge.body_size import BODY_MEMORY_FACTOR, MemoryBudget
from service.errors import LimitExceededError, MalformedJSONError, OverloadedError
from tests.service.helpers import make_settings, pixels_item, serve

LIMITS = BodyLimits(max_items=256, max_pixel_values=1024 * 1024)


def pixel_body(side: int) -> bytes:
    """The issue's worst query, scaled: one ``side`` x ``side`` array of 1s."""
    row = "[" + ",".join(["1"] * side) + "]"
    return ('{"queries":[{"pixels":[' + ",".join([row] * side) + "]}]}").encode()


def tiny_examples(count: int) -> bytes:
    return ('{"examples":[' + ",".join(['{"label":"a","pixels":[[1]]}'] * count) + "]}").encode()


def python_peak_bytes(function) -> int:
    """Peak bytes of Python objects allocated while ``function`` runs."""
    tracemalloc.start()
    try:
        with contextlib.suppress(LimitExceededError):
            function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_pixel_arrays_become_float64_numpy_without_python_floats():
    parsed = parse_json_body(pixel_body(600), LIMITS)  # 360,000 values
    pixels = parsed["queries"][0]["pixels"]
    assert isinstance(pixels, np.ndarray) and pixels.shape == (600, 600)
    assert pixels.dtype == np.float64 and float(pixels.sum()) == 360_000
    # Python lists of floats would take ~32 bytes a value (11 MB); the array is 2.9 MB.
    assert python_peak_bytes(lambda: parse_json_body(pixel_body(600), LIMITS)) < 4_000_000


def test_too_many_values_are_refused_before_parsing():
    body = pixel_body(2800)  # 7.84 million values in 15.7 MB, as in the issue
    with pytest.raises(LimitExceededError, match="about 7840000 JSON values"):
        parse_json_body(body, LIMITS)
    assert python_peak_bytes(lambda: parse_json_body(body, LIMITS)) < 1_000_000


def test_item_counts_are_checked_before_items_are_built():
    body = tiny_examples(200_000)  # under the comma count's bound, far over 256 items
    small = BodyLimits(max_items=256, max_pixel_values=1_000_000)
    with pytest.raises(LimitExceededError, match="examples: 200000 items; at most 256"):
        parse_json_body(body, small)
    # 200,000 dicts with their lists would be ~70 MB of Python objects.
    assert python_peak_bytes(lambda: parse_json_body(body, small)) < 2_000_000


def test_pixel_values_are_summed_over_the_request():
    small = BodyLimits(max_items=8, max_pixel_values=100)
    body = {"queries": [pixels_item(np.ones((6, 6)))] * 3}  # 108 values
    with pytest.raises(LimitExceededError, match=r"queries\[2\].pixels: the request's pixel"):
        parse_json_body(json.dumps(body).encode(), small)
    parse_json_body(json.dumps({"queries": body["queries"][:2]}).encode(), small)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"queries": [', "at character 13: unexpected end of data"),
        (b'{"a": "\xff"}', r"the body is not valid UTF-8 \(at byte 7: invalid start byte\)"),
        (b'{"a": "\xed\xa0\x80"}', r"the body is not valid UTF-8 \(at byte 7"),  # a surrogate
        (b"[" * 20 + b"]" * 20, "nested deeper than 16 levels"),
        (b"[" * 3000 + b"]" * 3000, "malformed JSON body"),
        (b'{"a": NaN}', "malformed JSON body at character 6"),
        (b"", "malformed JSON body"),
    ],
)
def test_malformed_bodies_say_where(body, message):
    with pytest.raises(MalformedJSONError, match=message):
        parse_json_body(body, LIMITS)


def test_keys_with_nul_characters_are_converted_too():
    """simdjson cannot look such keys up (a fuzzer's 500); they become a plain dict."""
    parsed = parse_json_body(b'{"a\\u0000b": {"c": [1]}, "d": 2}', LIMITS)
    assert parsed == {"a\x00b": {"c": [1]}, "d": 2}


def many_keys(count: int) -> str:
    return "{" + ",".join(f'"k{i}":1' for i in range(count)) + "}"


@pytest.mark.parametrize(
    ("body", "location"),
    [(many_keys(100_000), "body"), ('{"queries": [' + many_keys(100_000) + "]}", "queries[0]")],
)
def test_objects_of_many_keys_are_refused_before_any_value_is_read(monkeypatch, body, location):
    """Issue 25: 100,000 keys took 14-27 s (a linear simdjson lookup per key). The size is
    checked first, so not one of the object's values is converted."""
    converted: list[str] = []
    convert = Converter.convert

    def counting(self, node, at, depth):
        converted.append(at)
        return convert(self, node, at, depth)

    monkeypatch.setattr(Converter, "convert", counting)
    with pytest.raises(LimitExceededError, match=rf"^{re.escape(location)}: 100000 keys; at most"):
        parse_json_body(body.encode(), LIMITS)
    assert not any(at.startswith(("k", location + ".k")) for at in converted)
    widest = json.loads(many_keys(MAX_KEYS_PER_OBJECT))
    assert parse_json_body(many_keys(MAX_KEYS_PER_OBJECT).encode(), LIMITS) == widest


@pytest.mark.parametrize(
    "pixels",
    [
        "[[[1,1]]]",  # flattened, the size did not fit: a 500
        "[[[0.5]]]",  # these two were taken as 2-D
        "[[[0.1],[0.9]],[[0.9],[0.1]]]",
        "[[0.1,[0.9]],[0.9,0.1]]",
        '[[[1,"a"]]]',  # not numeric: left as lists, checked all the same
        "[[[]]]",
    ],
)
def test_pixels_deeper_than_rows_of_numbers_are_refused_naming_the_item(pixels):
    body = f'{{"label": "[a]", "queries": [{{"text": "x"}}, {{"pixels": {pixels}}}]}}'
    with pytest.raises(InvalidInputError, match=r"^queries\[1\].pixels: must be a 2-D list"):
        parse_json_body(body.encode(), LIMITS)


def test_brackets_in_strings_leave_good_pixel_arrays_alone():
    body = b'{"label": "[[", "note": "\\u005b", "pixels": [[0.25, 1], [0, 0.5]]}'
    pixels = parse_json_body(body, LIMITS)["pixels"]
    assert isinstance(pixels, np.ndarray) and pixels.tolist() == [[0.25, 1], [0, 0.5]]


def test_non_numeric_or_ragged_pixels_stay_lists_for_the_model_to_name():
    parsed = parse_json_body(b'{"pixels": [[1, true], [0.5]]}', LIMITS)
    assert parsed == {"pixels": [[1, True], [0.5]]}


@pytest.mark.anyio
async def test_budget_waits_in_order_and_times_out():
    budget = MemoryBudget(100)
    assert await budget.reserve(60) == 60
    order: list[str] = []

    async def take(name: str, amount: int) -> None:
        await budget.reserve(amount)
        order.append(name)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(take, "first", 50)
        await anyio.sleep(0.01)
        tasks.start_soon(take, "second", 10)  # fits now, but waits behind "first"
        await anyio.sleep(0.01)
        assert order == []
        budget.release(60)
    assert order == ["first", "second"] and budget.available == 40
    with pytest.raises(OverloadedError, match="PROTONET_REQUEST_MEMORY_BYTES"):
        await budget.reserve(50, timeout=0.01)
    budget.release(50 + 10)
    assert budget.available == 100 and await budget.reserve(500) == 100  # capped: runs alone


@pytest.mark.anyio
async def test_requests_over_the_budget_wait_instead_of_failing(tmp_path, checkpoint_a):
    """Eight concurrent bodies whose reservations fit two at a time: all answered 200."""
    body = json.dumps({"inputs": [pixels_item(np.ones((28, 28)))] * 8}).encode()
    settings = make_settings(
        tmp_path, checkpoint_a, request_memory_bytes=2 * len(body) * BODY_MEMORY_FACTOR + 100
    )
    statuses: list[int] = []
    async with serve(settings) as running:
        budget = running.app.state.body_budget

        async def embed() -> None:
            headers = {"content-type": "application/json"}
            response = await running.http.post("/v1/embed", content=body, headers=headers)
            statuses.append(response.status_code)

        async with anyio.create_task_group() as tasks:
            for _ in range(8):
                tasks.start_soon(embed)
        assert budget.available == budget.capacity  # every reservation was given back
    assert statuses == [200] * 8


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(JSON_VALUES)
def test_any_json_parses_like_json_loads_or_is_refused_cleanly(value):
    """Whatever JSON arrives, the parser returns what ``json.loads`` would (pixel arrays aside)
    or raises one of its own errors: never anything a handler would turn into a 500."""
    body = json.dumps(value).encode()
    try:
        parsed = parse_json_body(body, BodyLimits(max_items=4, max_pixel_values=50))
    except (LimitExceededError, MalformedJSONError, InvalidInputError):
        return
    assert json.dumps(parsed, default=lambda array: array.tolist()) == json.dumps(value) or (
        "pixels" in body.decode()
    )

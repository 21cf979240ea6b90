"""The micro-batcher on its own: batch sizes, waiting for announced work, errors, hand-offs,
shutdown."""

from __future__ import annotations

import asyncio
import threading

import pytest

from protonet.errors import InvalidInputError
from service.collections.batching import BatchStats, Handoff, MicroBatcher, Split
from service.errors import NotReadyError

pytestmark = pytest.mark.anyio


class Recorder:
    """A batch function that doubles numbers, remembers its batches, and fails on ``bad``."""

    def __init__(self) -> None:
        self.batches: list[list[object]] = []

    def __call__(self, jobs: list[object]) -> list[object]:
        self.batches.append(list(jobs))
        if "crash" in jobs:
            raise RuntimeError("the whole batch function failed")
        return [InvalidInputError(f"{job}: bad") if job == "bad" else job * 2 for job in jobs]


async def run_batcher(batcher: MicroBatcher, *jobs: object) -> list[object]:
    """Submit ``jobs`` together, all queued before the batcher's thread starts; outcomes in
    order (exceptions included)."""
    submitted = [asyncio.ensure_future(batcher.submit(job)) for job in jobs]
    await asyncio.sleep(0)  # every submit has queued its job
    batcher.start()
    try:
        return await asyncio.gather(*submitted, return_exceptions=True)
    finally:
        await batcher.stop()


async def test_batches_hold_at_most_the_budget():
    recorder = Recorder()
    batcher = MicroBatcher("test", recorder, budget=4)
    outcomes = await run_batcher(batcher, *range(10))
    assert outcomes == [2 * i for i in range(10)]
    assert recorder.batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


async def test_rows_count_images_a_large_job_goes_alone_and_later_jobs_fill_a_batch():
    recorder = Recorder()
    batcher = MicroBatcher("test", recorder, rows_of=len, budget=4)
    await run_batcher(batcher, "ab", "cdefgh", "i", "jk", "l")
    # "cdefgh" and "jk" do not fit beside "ab": they wait, and go first in the next batches.
    assert recorder.batches == [["ab", "i", "l"], ["cdefgh"], ["jk"]]


async def test_a_lone_job_does_not_wait_when_nothing_is_announced():
    recorder = Recorder()
    batcher = MicroBatcher("test", recorder, max_wait=60.0)  # would time the test out
    batcher.start()
    try:
        assert await asyncio.wait_for(batcher.submit(1), timeout=10) == 2
        assert await asyncio.wait_for(batcher.submit(2), timeout=10) == 4
    finally:
        await batcher.stop()
    assert recorder.batches == [[1], [2]]


async def test_a_batch_waits_for_announced_work_and_stops_waiting_once_it_came():
    recorder = Recorder()
    announced = [1]
    batcher = MicroBatcher("test", recorder, max_wait=60.0, incoming=lambda: announced[0])
    batcher.start()
    try:
        first = asyncio.ensure_future(batcher.submit(1))
        await asyncio.sleep(0.05)
        assert not first.done() and recorder.batches == []  # waiting for the announced job
        announced[0] = 0
        second = asyncio.ensure_future(batcher.submit(2))
        assert await asyncio.wait_for(asyncio.gather(first, second), timeout=10) == [2, 4]
    finally:
        await batcher.stop()
    assert recorder.batches == [[1, 2]]


async def test_waiting_ends_after_max_wait():
    recorder = Recorder()
    batcher = MicroBatcher("test", recorder, max_wait=0.05, incoming=lambda: 1)
    batcher.start()
    try:
        assert await asyncio.wait_for(batcher.submit(1), timeout=10) == 2
    finally:
        await batcher.stop()
    assert recorder.batches == [[1]]


async def test_one_bad_job_fails_alone():
    recorder = Recorder()
    outcomes = await run_batcher(MicroBatcher("test", recorder), 1, "bad", 3)
    assert outcomes[0] == 2 and outcomes[2] == 6
    assert isinstance(outcomes[1], InvalidInputError) and "bad" in str(outcomes[1])
    assert len(recorder.batches) == 1


async def test_a_crashing_batch_is_retried_one_job_at_a_time():
    recorder = Recorder()
    outcomes = await run_batcher(MicroBatcher("test", recorder), 1, "crash", 3)
    assert outcomes[0] == 2 and outcomes[2] == 6
    assert isinstance(outcomes[1], RuntimeError)
    assert recorder.batches == [[1, "crash", 3], [1], ["crash"], [3]]


async def test_batch_statistics_are_reported():
    seen: list[BatchStats] = []
    batcher = MicroBatcher("stage", Recorder(), rows_of=len, on_batch=seen.append)
    await run_batcher(batcher, "ab", "c")
    assert [(s.stage, s.jobs, s.rows, len(s.queue_waits)) for s in seen] == [("stage", 2, 3, 2)]
    assert all(wait >= 0 for wait in seen[0].queue_waits) and seen[0].seconds >= 0


async def test_a_handoff_answers_with_the_next_stages_result():
    second_stage = MicroBatcher("second", lambda jobs: [f"<{job}>" for job in jobs])
    first_stage = MicroBatcher(
        "first", lambda jobs: [Handoff(second_stage, job * 2) if job else "kept" for job in jobs]
    )
    second_stage.start()
    try:
        assert await run_batcher(first_stage, 1, 0, 5) == ["<2>", "kept", "<10>"]
    finally:
        await second_stage.stop()


async def test_after_stop_jobs_are_refused():
    batcher = MicroBatcher("test", Recorder())
    batcher.start()
    await batcher.stop()
    with pytest.raises(NotReadyError):
        await batcher.submit(1)


async def test_stop_finishes_the_jobs_already_queued():
    recorder = Recorder()
    batcher = MicroBatcher("test", recorder)
    queued = [asyncio.ensure_future(batcher.submit(job)) for job in (1, 2)]
    await asyncio.sleep(0)
    batcher.start()
    await batcher.stop()
    assert await asyncio.wait_for(asyncio.gather(*queued), timeout=10) == [2, 4]


class PartRecorder:
    """A batch function over tuples of numbers (a job's rows): doubles them, remembers the
    parts of each batch, fails a part holding ``"bad"``, and can hold its first call until
    ``release`` is set."""

    def __init__(self, hold: bool = False) -> None:
        self.batches: list[list[tuple[object, ...]]] = []
        self.release = threading.Event()
        self.started = threading.Event()
        if not hold:
            self.release.set()

    def __call__(self, jobs: list[tuple[object, ...]]) -> list[object]:
        self.started.set()
        self.release.wait(30)
        self.batches.append(list(jobs))
        return [
            InvalidInputError("bad row") if "bad" in job else tuple(2 * row for row in job)
            for job in jobs
        ]


def splitting(
    recorder: PartRecorder, budget: int, costs=lambda job: [1] * len(job)
) -> MicroBatcher:
    """A batcher that cuts tuple jobs into parts and joins the parts' results."""
    split = Split(
        costs=costs,
        part=lambda job, start, stop: job[start:stop],
        finish=lambda _job, results: tuple(row for result in results for row in result),
    )
    return MicroBatcher("test", recorder, budget=budget, split=split)


async def test_parts_of_concurrent_jobs_take_turns():
    """A job of 6 rows and one of 3, budget 2: each batch takes one row of each in turn, so
    the smaller job is done after 3 batches, not after the larger one."""
    recorder = PartRecorder()
    large, small = (0, 1, 2, 3, 4, 5), (10, 11, 12)
    outcomes = await run_batcher(splitting(recorder, budget=2), large, small)
    assert outcomes == [(0, 2, 4, 6, 8, 10), (20, 22, 24)]
    assert recorder.batches == [
        [(0,), (10,)],
        [(1,), (11,)],
        [(2,), (12,)],
        [(3, 4)],
        [(5,)],
    ]


async def test_a_job_arriving_beside_a_large_one_waits_for_one_batch():
    recorder = PartRecorder(hold=True)
    batcher = splitting(recorder, budget=4)
    batcher.start()
    try:
        large = asyncio.ensure_future(batcher.submit(tuple(range(100))))
        await asyncio.to_thread(recorder.started.wait, 30)  # the first batch is running
        small = asyncio.ensure_future(batcher.submit((7,)))
        await asyncio.sleep(0.05)  # queued (not a timing assertion: only the order matters)
        recorder.release.set()
        assert await asyncio.wait_for(small, timeout=30) == (14,)
        assert await asyncio.wait_for(large, timeout=30) == tuple(range(0, 200, 2))
    finally:
        await batcher.stop()
    assert recorder.batches[0] == [(0, 1, 2, 3)]
    assert sorted(recorder.batches[1]) == [(4, 5, 6), (7,)]  # the next batch, shared


async def test_a_job_whose_rows_each_exceed_the_budget_lets_others_through():
    """Rows that cost more than the budget go alone; a cheap job queued beside such a job
    gets the next batch instead of waiting for all of its rows."""
    recorder = PartRecorder()
    costs = lambda job: [10 if row >= 100 else 1 for row in job]  # noqa: E731
    batcher = splitting(recorder, budget=4, costs=costs)
    outcomes = await run_batcher(batcher, (100, 101, 102), (1, 2))
    assert outcomes == [(200, 202, 204), (2, 4)]
    assert recorder.batches == [[(100,)], [(1, 2)], [(101,)], [(102,)]]


async def test_a_failing_part_fails_its_job_and_its_other_parts_are_skipped():
    recorder = PartRecorder()
    outcomes = await run_batcher(splitting(recorder, budget=2), (1, "bad", 3, 4), (5, 6, 7))
    assert isinstance(outcomes[0], InvalidInputError)
    assert outcomes[1] == (10, 12, 14)
    processed = [row for batch in recorder.batches for part in batch for row in part]
    assert 3 not in processed and 4 not in processed

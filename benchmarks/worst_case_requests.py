"""What one worst-case request within the default limits costs, and what it costs everyone else
(issue 25, item 7b).

Starts ``python -m service`` with an image model and a text model and default limits. For each
case, a probe process sends one small query after another (a text query for the text cases, an
image query for the image cases): first alone, then while one client sends the worst-case
request. Prints, side by side: the small query's p50/p99 alone and beside the big request, the
big request's status, time and the server's peak RSS growth over its RSS just before.

    python benchmarks/worst_case_requests.py            # the limits' worst cases (minutes)
    python benchmarks/worst_case_requests.py --smoke    # small sizes: the code path (tests)

The machine is shared: run it when little else runs, and read the ratios, not the absolutes.
"""

from __future__ import annotations

import argparse
import base64
import io
import multiprocessing
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import smoke
from benchmarks.machine import machine
from benchmarks.request_memory import rss_bytes
from service.launcher import REPO_ROOT, local_server

MiB = 1024 * 1024
MODELS = (
    f"omniglot={REPO_ROOT / 'models' / 'omniglot-conv4.pt'},"
    f"intents={REPO_ROOT / 'models' / 'banking77-minilm.pt'}"
)
SMALL_TEXT = {"queries": [{"text": "where is my new card?"}]}


def png_item(width: int, height: int) -> dict[str, str]:
    """A white ``width`` x ``height`` PNG: few bytes, many pixels to decode."""
    image = Image.new("L", (width, height), 255)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return {"image": base64.b64encode(buffer.getvalue()).decode()}


def small_image() -> dict[str, Any]:
    pixels = np.full((28, 28), 1.0)
    pixels[8:20, 13:15] = 0.0  # a stroke
    return {"queries": [{"pixels": pixels.tolist()}]}


def long_text(chars: int) -> str:
    """``chars`` characters that the tokenizer makes one word piece each (truncated at the
    model's 256): the most encoder work a text of that length can ask for."""
    return ("x " * chars)[:chars].strip()


@dataclass(frozen=True)
class Case:
    name: str
    path: str
    body: Callable[[], dict[str, Any]]  # the big request's body (built when its turn comes)
    probe_path: str
    probe_body: dict[str, Any]


def cases(smoke: bool) -> list[Case]:
    """The worst case of each limit: max items x max characters; max pixels per request in the
    most expensive shapes the per-image limits allow; max items of the per-item pixel share."""
    items, chars = (8, 1000) if smoke else (256, 1000)  # PROTONET_MAX_ITEMS_PER_REQUEST, max_chars
    side = 256 if smoke else 4096  # PROTONET_MAX_IMAGE_PIXELS = 4096 x 4096
    count = 2 if smoke else 4  # PROTONET_MAX_REQUEST_PIXELS = 4 x 4096 x 4096
    many = 8 if smoke else 256  # PROTONET_MAX_ITEMS_PER_REQUEST images sharing the request budget
    text_query, image_query = "/v1/collections/texts/query", "/v1/collections/images/query"

    def images(width: int, height: int, n: int) -> Callable[[], dict[str, Any]]:
        return lambda: {"queries": [png_item(width, height)] * n}

    image_cases = [
        (f"{count} images of {side}x{side}", images(side, side, count)),
        # The longest side PROTONET_MAX_IMAGE_SIDE (16384) lets through at full size.
        (f"{count} images of {side // 4}x{side * 4}", images(side // 4, side * 4, count)),
        # The issue's: within the pixel limits, 10 s to decode; refused by the side limit now.
        (f"{count} images of 1x{side * side}", images(1, side * side, count)),
        (f"{many} images of {side // 8}x{side // 8}", images(side // 8, side // 8, many)),
    ]
    return [
        Case(
            f"{items} texts of {chars} characters",
            text_query,
            lambda: {"queries": [{"text": long_text(chars)}] * items},
            text_query,
            SMALL_TEXT,
        ),
        *(Case(name, image_query, body, image_query, small_image()) for name, body in image_cases),
    ]


def probe(url: str, path: str, body: dict[str, Any], stop: Any, results: Any) -> None:
    """In its own process (the big sender's thread holds no GIL it needs): POST ``body`` to
    ``path`` one after another until ``stop`` is set; ``(started, ms, status)`` into
    ``results``, ``started`` on the machine's monotonic clock."""
    timings = []
    with httpx.Client(base_url=url, timeout=300) as http:
        while not stop.is_set():
            started = time.monotonic()
            status = http.post(path, json=body).status_code
            timings.append((started, (time.monotonic() - started) * 1000, status))
    results.put(timings)


class Probe:
    """The probe process, started and stopped as a context."""

    def __init__(self, url: str, path: str, body: dict[str, Any]) -> None:
        self.timings: list[tuple[float, float, int]] = []
        self._stop = multiprocessing.Event()
        self._results: Any = multiprocessing.Queue()
        self._process = multiprocessing.Process(
            target=probe, args=(url, path, body, self._stop, self._results)
        )

    def __enter__(self) -> Probe:
        self._process.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self.timings = self._results.get(timeout=600)
        self._process.join()

    def between(self, start: float, end: float) -> list[float]:
        """Latencies (ms) of the probes that started in ``[start, end]``."""
        return [ms for started, ms, _ in self.timings if start <= started <= end]


class PeakRss:
    """The peak RSS of ``pid`` while the context is open (sampled every 5 ms)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before = rss_bytes(pid)
        self.peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes(self.pid))
            time.sleep(0.005)


def percentile(values: list[float], point: float) -> float:
    return float(np.percentile(values, point)) if values else float("nan")


def measure(url: str, pid: int, case: Case, alone_seconds: float) -> tuple[str, bool]:
    """One table row: the probe alone, then beside the big request; and whether every
    answer was 200 or a 4xx for the big request (never a 5xx)."""
    with Probe(url, case.probe_path, case.probe_body) as alone:
        time.sleep(alone_seconds)
    quiet = [ms for _, ms, _ in alone.timings]
    body = case.body()
    with Probe(url, case.probe_path, case.probe_body) as beside, httpx.Client(timeout=600) as http:
        time.sleep(min(0.5, alone_seconds))  # the probe is running before the big one starts
        with PeakRss(pid) as memory:
            started = time.monotonic()
            status = http.post(url + case.path, json=body).status_code
            seconds = time.monotonic() - started
    loud = beside.between(started, started + seconds)
    ratio = percentile(loud, 99) / percentile(quiet, 99)
    probes = {code for _, _, code in alone.timings + beside.timings}
    row = (
        f"| {case.name} | {status} | {seconds:.2f} s | {(memory.peak - memory.before) / MiB:.0f} "
        f"MiB | {percentile(quiet, 50):.0f} / {percentile(quiet, 99):.0f} ms | "
        f"{percentile(loud, 50):.0f} / {percentile(loud, 99):.0f} ms ({len(loud)}) | "
        f"{ratio:.1f}x |"
    )
    return row, status < 500 and probes == {200}


def prepare(url: str) -> None:
    """A text collection and an image collection, each with two classes."""
    with httpx.Client(base_url=url, timeout=60) as http:
        for name, model in (("texts", "intents"), ("images", "omniglot")):
            http.post("/v1/collections", json={"name": name, "model": model}).raise_for_status()
        texts = [("card", "where is my new card?"), ("refund", "I want my money back")]
        examples = [{"label": label, "text": text} for label, text in texts]
        http.post("/v1/collections/texts/support", json={"examples": examples}).raise_for_status()
        strokes = small_image()["queries"][0]["pixels"]
        blank = np.full((28, 28), 1.0).tolist()
        examples = [{"label": "stroke", "pixels": strokes}, {"label": "blank", "pixels": blank}]
        http.post("/v1/collections/images/support", json={"examples": examples}).raise_for_status()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alone", type=float, default=3.0, help="seconds of the probe alone")
    args = smoke.parse_args(parser, {"alone": 0.5})  # and smaller requests: cases()
    env = {
        "PROTONET_MODELS": MODELS,
        "PROTONET_MAX_CONCURRENT_REQUESTS": "64",  # the default (local_server turns it off)
        "PROTONET_LOG_LEVEL": "warning",
        "HF_HUB_OFFLINE": "1",
    }
    with (
        tempfile.TemporaryDirectory() as data,
        local_server({**env, "PROTONET_DATA_DIR": data}) as server,
    ):
        prepare(server.url)
        print(f"{machine()}; default limits\n")
        print(
            "| big request | status | time | RSS growth | small alone p50 / p99 | "
            "small beside p50 / p99 (n) | p99 ratio |"
        )
        print("|---|---|---|---|---|---|---|")
        ok = True
        for case in cases(args.smoke):
            row, passed = measure(server.url, server.process.pid, case, args.alone)
            print(row, flush=True)
            ok &= passed
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

"""The web page (/ui) in a real browser: headless Chromium (Debian's ``chromium``) driven by
Playwright against a real ``python -m service`` on a free port, with the bundled model.

Strokes are drawn with mouse events on the page's canvas: two made-up symbols (the quickstart's
ring and fork, examples/make_images.py), three drawings of each as support examples, then new
drawings as queries, whose predicted label must be right; every request the page makes goes to
the service itself. With auth on, a bad key shows the API's own message. A service serving an
image and a text model offers both when creating a collection, and a text collection's examples
and queries are typed, one per line, and a request of no registered intent, with rejection on, is
answered "unknown".

The screenshot in the README (docs/ui.png) is taken by this test: run it with
``UPDATE_SCREENSHOT=1`` (``make screenshot``) to rewrite it; otherwise it goes to a
temporary directory. Chromium is ``$CHROMIUM``, else ``chromium`` on the PATH. Skips without
Chromium or Playwright on a user's machine; fails with ``CI=true`` (``.ci/run`` installs
Chromium).
"""

from __future__ import annotations

import base64
import importlib.util
import os
import random
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from service.client import ProtonetClient
from service.launcher import LocalServer, local_server
from tests.conftest import REPO_ROOT, SHARED_DATA, ci, require_path
from tests.service.helpers import PATIENCE

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOT = REPO_ROOT / "docs" / "ui.png"
PAD_SIZE = 280  # the canvas' size in CSS pixels (service/ui/static/index.html)
GOOD_KEY = "a-write-key-for-the-page-0123456789"
Strokes = list[list[tuple[float, float]]]


def missing(what: str) -> None:
    message = f"{what}: the browser tests need it"
    if ci():
        pytest.fail(f"{message} (CI=true: .ci/run installs it)")
    pytest.skip(message)


def chromium_path() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        missing("Chromium is not installed (apt-get install -y chromium)")
    return path


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """A fresh Chromium profile (no first-run work, no network calls of its own)."""
    executable = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("Playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tmp_path / "profile",
            executable_path=executable,
            headless=True,
            args=FLAGS,
            viewport={"width": 1200, "height": 860},
        )
        try:
            yield context
        finally:
            context.close()


def start_server(tmp_path: Path, **env: str) -> Iterator[LocalServer]:
    variables = {
        "PROTONET_DATA_DIR": str(tmp_path / "data"),
        "PROTONET_TORCH_THREADS": "1",
        "PROTONET_LOG_LEVEL": "warning",
        **env,
    }
    with local_server(variables, cwd=tmp_path, ready_timeout=PATIENCE) as running:
        yield running


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LocalServer]:
    yield from start_server(tmp_path)


@pytest.fixture
def secured_server(tmp_path: Path) -> Iterator[LocalServer]:
    yield from start_server(
        tmp_path, PROTONET_AUTH_ENABLED="true", PROTONET_API_KEYS=f"{GOOD_KEY}:default:write"
    )


def shapes() -> ModuleType:
    """examples/make_images.py: the ring and fork strokes the quickstart's images are drawn
    from, on Omniglot's 105x105 canvas."""
    spec = importlib.util.spec_from_file_location(
        "make_images", REPO_ROOT / "examples" / "make_images.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def strokes_of(shape: Callable[[random.Random], Strokes], seed: str) -> Strokes:
    scale = PAD_SIZE / 105
    return [[(x * scale, y * scale) for x, y in line] for line in shape(random.Random(seed))]


def draw(page: Any, strokes: Strokes) -> None:
    """Each stroke as a mouse press, moves in small steps, and a release on the canvas."""
    box = page.locator("#pad").bounding_box()
    for line in strokes:
        page.mouse.move(box["x"] + line[0][0], box["y"] + line[0][1])
        page.mouse.down()
        for x, y in line[1:]:
            page.mouse.move(box["x"] + x, box["y"] + y, steps=4)
        page.mouse.up()


def watch(page: Any, origin: str) -> list[str]:
    """Problems the page runs into: uncaught exceptions, console errors, failed API calls, and
    requests to anywhere but the service (the page must work offline). A 404 or 405 from the
    diagnostics route is expected where the service has none: the page hides that panel."""
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"exception: {error}"))

    def console(message: Any) -> None:
        # A failed fetch is also logged as "Failed to load resource": judged by its response.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            problems.append(f"console: {message.text}")

    def request(request: Any) -> None:
        if not request.url.startswith((origin + "/", "data:", "blob:")):
            problems.append(f"request elsewhere: {request.url}")

    def response(response: Any) -> None:
        optional = response.url.split("?")[0].endswith("/diagnostics")
        if response.status >= 400 and not (optional and response.status in (404, 405)):
            problems.append(f"{response.status} from {response.url}")

    page.on("console", console)
    page.on("request", request)
    page.on("response", response)
    return problems


def test_draw_two_classes_then_a_query_is_recognised(browser, server, tmp_path):
    from playwright.sync_api import expect

    module = shapes()
    page = browser.new_page()
    problems = watch(page, server.url)
    page.goto(server.url + "/")  # redirects to /ui
    assert page.url == server.url + "/ui"
    page.fill("#create-name", "symbols")
    page.click("#create-form button")
    expect(page.locator("#collection-select")).to_have_value("symbols")

    for label in ("ring", "fork"):
        for number in (1, 2, 3):
            draw(page, strokes_of(getattr(module, label), f"page-{label}-{number}"))
            page.fill("#label", label)
            page.click("#add")
            loaded = page.locator(f'.class-card[data-label="{label}"] .thumb img[src^="blob:"]')
            expect(loaded).to_have_count(number)
    expect(page.locator(".class-card")).to_have_count(2)
    # The service diagnoses the support set, and the bundled model carries a calibration.
    expect(page.locator("#diagnostics")).to_contain_text("Expected accuracy")
    expect(page.locator("#diagnostics")).to_contain_text("ring ↔ fork")
    expect(page.locator("#rejection-choice")).to_be_visible()

    page.fill("#top-k", "2")
    for label in ("fork", "ring"):
        page.click("#clear")
        draw(page, strokes_of(getattr(module, label), f"page-query-{label}"))
        page.click("#classify")
        expect(page.locator(".result .headline .label")).to_have_text(label)
    bars = page.locator(".result .bars li")
    expect(bars).to_have_count(2)
    assert bars.nth(0).locator(".name").inner_text() == "ring"
    assert float(bars.nth(0).locator(".probability").inner_text().rstrip("%")) > 50

    # Thumbnails: the stored 28x28 pixels of each example, fetched through the API.
    sizes = page.eval_on_selector_all(".thumb img", "images => images.map(i => i.naturalWidth)")
    assert sizes == [28] * 6
    shot = SCREENSHOT if os.environ.get("UPDATE_SCREENSHOT") == "1" else tmp_path / "ui.png"
    page.screenshot(path=str(shot), full_page=True)

    page.once("dialog", lambda dialog: dialog.accept())
    page.locator('.class-card[data-label="fork"] button.danger').click()
    expect(page.locator(".class-card")).to_have_count(1)
    expect(page.locator("#message")).to_have_text('Deleted class "fork".')
    assert problems == []


def test_a_dropped_image_file_is_classified(browser, server):
    from playwright.sync_api import expect

    page = browser.new_page()
    problems = watch(page, server.url)
    page.goto(server.url + "/ui")
    page.fill("#create-name", "files")
    page.click("#create-form button")
    expect(page.locator("#collection-select")).to_have_value("files")
    images = REPO_ROOT / "examples" / "images"
    for label in ("ring", "fork"):
        page.set_input_files("#file-input", [images / f"{label}{n}.png" for n in (1, 2)])
        expect(page.locator("#drops img")).to_have_count(2)
        page.fill("#label", label)
        page.click("#add")
        expect(page.locator(f'.class-card[data-label="{label}"] .thumb')).to_have_count(2)
    drop(page, images / "fork3.png")
    page.click("#classify")
    expect(page.locator(".result .headline .label")).to_have_text("fork")
    assert problems == []


def test_right_and_wrong_add_the_query_as_an_example(browser, server):
    """After Classify, "Right" adds the query to its predicted class, and "Wrong, it is ..."
    to the class typed (a new one here): the service remembered it, the page sends only its
    id."""
    from playwright.sync_api import expect

    images = REPO_ROOT / "examples" / "images"
    with ProtonetClient(server.url) as client:
        client.create_collection("corrections")
        client.add_support("corrections", {"ring": [images / "ring1.png", images / "ring2.png"]})
        client.add_support("corrections", {"fork": [images / "fork1.png"]})
    page = browser.new_page()
    problems = watch(page, server.url)
    page.goto(server.url + "/ui")
    expect(page.locator("#collection-select")).to_have_value("corrections")
    page.set_input_files("#file-input", [images / "ring3.png"])
    page.click("#classify")
    expect(page.locator(".result .headline .label")).to_have_text("ring")
    page.click(".result .feedback button.right")
    expect(page.locator("#message")).to_have_text('Added the query as an example of "ring".')
    expect(page.locator('.class-card[data-label="ring"] .thumb')).to_have_count(3)
    expect(page.locator(".result .feedback")).to_have_text('Added as an example of "ring".')

    page.click("#clear")
    page.set_input_files("#file-input", [images / "fork3.png"])
    page.click("#classify")
    expect(page.locator(".result .feedback button.wrong")).to_have_text("Wrong, it is ...")
    page.fill(".result .feedback input", "spoon")
    page.click(".result .feedback button.wrong")
    expect(page.locator('.class-card[data-label="spoon"] .thumb img[src^="blob:"]')).to_have_count(
        1
    )
    expect(page.locator(".class-card")).to_have_count(3)
    assert problems == []


def drop(page: Any, path: Path) -> None:
    """Drop ``path`` on the drawing pad, as a file dragged from the desktop."""
    transfer = page.evaluate_handle(
        """([name, bytes]) => {
            const transfer = new DataTransfer();
            const data = Uint8Array.from(atob(bytes), (c) => c.charCodeAt(0));
            transfer.items.add(new File([data], name, { type: "image/png" }));
            return transfer;
        }""",
        [path.name, base64.b64encode(path.read_bytes()).decode()],
    )
    page.dispatch_event("#pad", "drop", {"dataTransfer": transfer})


def test_rejection_and_diagnostics_are_shown_when_the_service_has_them(browser, server):
    """The page codes against the contracts of the rejection and diagnostics APIs (answers
    shaped as docs/service.md will describe them, served here by Playwright in place of the
    service's): an unknown query shows "unknown" and the threshold, diagnostics show the
    confusable pairs and outline the suspicious examples' thumbnails."""
    from playwright.sync_api import expect

    images = REPO_ROOT / "examples" / "images"
    with ProtonetClient(server.url) as client:
        client.create_collection("contracts")
        client.add_support("contracts", {"ring": [images / "ring1.png", images / "ring2.png"]})
        client.add_support("contracts", {"fork": [images / "fork1.png", images / "fork2.png"]})
        suspect = client.list_examples("contracts", label="fork")[1]["id"]
    diagnostics = {
        "model_version": "v",
        "revision": 3,
        "n_classes": 2,
        "n_examples": 4,
        "expected_accuracy": 0.75,
        "classes": [
            {
                "label": "ring",
                "n_examples": 2,
                "loo_accuracy": 1.0,
                "nearest_class": "fork",
                "nearest_class_distance": 20.5,
            },
            {
                "label": "fork",
                "n_examples": 2,
                "loo_accuracy": 0.5,
                "nearest_class": "ring",
                "nearest_class_distance": 20.5,
            },
        ],
        "confusable_pairs": [{"labels": ["ring", "fork"], "distance": 20.5}],
        "suspected_mislabelled": [
            {
                "example_id": suspect,
                "label": "fork",
                "closer_to": "ring",
                "distance_own": 9.0,
                "distance_other": 4.0,
            }
        ],
    }
    unknown = {
        "label": None,
        "probability": None,
        "distance": None,
        "known": False,
        "score": 31.5,
        "threshold": 24.25,
        "top_k": [{"label": "ring", "probability": 0.7, "distance": 30.1}],
    }
    answer = {
        "model_version": "v",
        "revision": 3,
        "index": "exact",
        "results": [unknown],
        "rejection": {"mode": "calibrated", "acceptance": 0.95},
    }
    sent: list[Any] = []

    def models(route: Any) -> None:
        response = route.fetch()
        calibration = {"method": "nearest_distance", "default_acceptance": 0.95}
        served = [{**model, "rejection": calibration} for model in response.json()["models"]]
        route.fulfill(response=response, json={"models": served})

    def query(route: Any) -> None:
        sent.append(route.request.post_data_json)
        route.fulfill(json=answer)

    page = browser.new_page()
    page.route("**/v1/models", models)
    page.route("**/diagnostics*", lambda route: route.fulfill(json=diagnostics))
    page.route("**/query*", query)
    page.goto(server.url + "/ui")
    expect(page.locator("#collection-select")).to_have_value("contracts")
    panel = page.locator("#diagnostics")
    expect(panel).to_be_visible()
    expect(panel).to_contain_text("Expected accuracy (leave-one-out): 75.0%")
    expect(panel).to_contain_text("ring ↔ fork: distance 20.50")
    expect(panel).to_contain_text(f'example {suspect} labelled "fork" is closer to "ring"')
    flagged = page.locator(".thumb.suspect")
    expect(flagged).to_have_count(1)
    assert flagged.get_attribute("data-example-id") == str(suspect)
    expect(page.locator('.class-card[data-label="fork"]')).to_contain_text(
        "leave-one-out accuracy 50.0%"
    )

    page.select_option("#rejection", "default")
    draw(page, strokes_of(shapes().ring, "page-unknown"))
    page.click("#classify")
    expect(page.locator(".result .headline .unknown")).to_have_text("unknown")
    expect(page.locator(".result .headline")).to_contain_text("threshold 24.25")
    expect(page.locator(".result .bars li")).to_have_count(1)
    assert sent[0]["rejection"] == "default" and sent[0]["top_k"] == 5


INTENTS = {
    "card_arrival": [
        "My card has not arrived yet",
        "When will my new card be delivered?",
        "I am still waiting for my card to come",
    ],
    "exchange_rate": [
        "What exchange rate do you use?",
        "How much is one euro in dollars today?",
        "Is your currency conversion rate fair?",
    ],
}


def bundled_models(tmp_path: Path, *names: str) -> Iterator[LocalServer]:
    """A server of the bundled models ``names``, as ``make run`` serves them."""
    files = {
        "omniglot": "omniglot-conv4.pt",
        "intents": "banking77-minilm.pt",
        "pictures": "pictures-mobilenetv2.pt",
    }
    models = ",".join(f"{name}={REPO_ROOT / 'models' / files[name]}" for name in names)
    # HF_HUB_OFFLINE: the text model's base encoder comes from site-packages.
    yield from start_server(tmp_path, PROTONET_MODELS=models, HF_HUB_OFFLINE="1")


@pytest.fixture
def two_model_server(tmp_path: Path) -> Iterator[LocalServer]:
    """The image and the text model side by side."""
    yield from bundled_models(tmp_path, "omniglot", "intents")


def test_a_text_collection_is_typed_and_an_image_one_still_drawn(browser, two_model_server):
    from playwright.sync_api import expect

    server = two_model_server
    page = browser.new_page()
    problems = watch(page, server.url)
    page.goto(server.url + "/ui")
    choice = page.locator("#create-model")
    expect(choice).to_be_visible()
    expect(choice).to_have_value("omniglot")  # the default model, preselected
    assert choice.locator("option").all_inner_texts() == ["omniglot (image)", "intents (text)"]

    page.fill("#create-name", "banking")
    choice.select_option("intents")
    page.click("#create-form button")
    expect(page.locator("#collection-select")).to_have_value("banking")
    expect(page.locator("#text-input")).to_be_visible()
    expect(page.locator("#pad")).to_be_hidden()
    expect(page.locator("#model")).to_contain_text("model intents")
    expect(page.locator("#rejection-choice")).to_be_visible()  # the text model is calibrated

    for label, sentences in INTENTS.items():
        page.fill("#text-input", "\n".join(sentences) + "\n\n")  # blank lines are skipped
        page.fill("#label", label)
        page.click("#add")
        expect(page.locator(f'.class-card[data-label="{label}"] .thumb.text')).to_have_count(3)
    expect(page.locator("#message")).to_have_text('Added 3 example(s) of "exchange_rate".')
    expect(page.locator('.class-card[data-label="card_arrival"] .thumb.text').first).to_have_text(
        INTENTS["card_arrival"][0]
    )

    # Two lines: two queries, each answered with its own bars.
    page.fill("#text-input", "my new card still hasn't come\nwhat rate do you convert pounds at")
    page.click("#classify")
    results = page.locator(".result")
    expect(results).to_have_count(2)
    expect(results.nth(0).locator(".headline .label")).to_have_text("card_arrival")
    expect(results.nth(1).locator(".headline .label")).to_have_text("exchange_rate")
    expect(results.nth(0).locator(".query-text")).to_have_text("my new card still hasn't come")
    expect(results.nth(0).locator(".bars li")).to_have_count(2)  # top 5 of 2 classes
    assert results.nth(0).locator(".distance").first.inner_text().startswith("d ")

    # A request of no registered intent, with rejection on: answered "unknown", its nearest
    # intent still listed below.
    page.select_option("#rejection", "default")
    page.fill("#text-input", "play some relaxing jazz music")
    page.click("#classify")
    expect(results).to_have_count(1)
    expect(results.nth(0).locator(".headline .unknown")).to_have_text("unknown")
    expect(results.nth(0).locator(".query-text")).to_have_text("play some relaxing jazz music")

    # An image collection of the same service: the pad is back, and a drawing is added.
    page.fill("#create-name", "glyphs")
    choice.select_option("omniglot")
    page.click("#create-form button")
    expect(page.locator("#collection-select")).to_have_value("glyphs")
    expect(page.locator("#pad")).to_be_visible()
    expect(page.locator("#text-input")).to_be_hidden()
    expect(page.locator("#rejection-choice")).to_be_visible()
    draw(page, strokes_of(shapes().ring, "page-two-models"))
    page.fill("#label", "ring")
    page.click("#add")
    expect(page.locator('.class-card[data-label="ring"] .thumb img[src^="blob:"]')).to_have_count(1)

    page.select_option("#collection-select", "banking")  # and back to the texts
    expect(page.locator("#text-input")).to_be_visible()
    expect(page.locator(".class-card")).to_have_count(2)
    assert problems == []


def test_with_auth_on_a_bad_key_shows_the_apis_message(browser, secured_server):
    from playwright.sync_api import expect

    page = browser.new_page()
    page.goto(secured_server.url + "/")  # the page itself loads without a key
    message = page.locator("#message")
    expect(page.locator("#key-form")).to_be_visible()
    expect(message).to_contain_text("missing API key")
    page.fill("#key-input", "not-a-key-of-this-service")
    page.click("#key-form button")
    expect(message).to_have_text("invalid API key")
    expect(page.locator("#app")).to_be_hidden()

    page.fill("#key-input", GOOD_KEY)
    page.click("#key-form button")
    expect(page.locator("#app")).to_be_visible()
    expect(page.locator("#forget-key")).to_be_visible()
    page.fill("#create-name", "bad name!")
    page.click("#create-form button")  # the API refuses the name: its message is shown
    expect(message).to_contain_text("name: String should match pattern")
    # The key is kept for this tab only: another tab asks again.
    other = browser.new_page()
    other.goto(secured_server.url + "/ui")
    expect(other.locator("#key-form")).to_be_visible()


def emoji_picture(code: str, vendor: str = "google") -> Path:
    """A real colour picture: an emoji PNG of the shared data (64 px RGBA)."""
    return require_path(SHARED_DATA / "emoji" / vendor / f"{code}.png", "the emoji data")


@pytest.fixture
def picture_server(tmp_path: Path) -> Iterator[LocalServer]:
    """The pen-stroke and the picture model side by side."""
    yield from bundled_models(tmp_path, "omniglot", "pictures")


def test_a_picture_collection_takes_chosen_photos_and_shows_colour_thumbnails(
    browser, picture_server
):
    """The pictures model: files chosen for a collection bound to it, colour thumbnails at the
    model's 224 px, and another vendor's drawing recognised."""
    from playwright.sync_api import expect

    server = picture_server
    page = browser.new_page()
    problems = watch(page, server.url)
    page.goto(server.url + "/ui")
    page.fill("#create-name", "fruit")
    page.locator("#create-model").select_option("pictures")
    page.click("#create-form button")
    expect(page.locator("#collection-select")).to_have_value("fruit")
    for label, code in (("banana", "1f34c"), ("strawberry", "1f353"), ("pizza", "1f355")):
        page.set_input_files("#file-input", [str(emoji_picture(code))])
        page.fill("#label", label)
        page.click("#add")
        thumb = page.locator(f'.class-card[data-label="{label}"] .thumb img[src^="blob:"]')
        expect(thumb).to_have_count(1)
    width = thumb.evaluate("image => image.decode().then(() => image.naturalWidth)")
    assert width == 224
    coloured = thumb.evaluate(
        """image => {
          const canvas = document.createElement("canvas");
          canvas.width = canvas.height = 224;
          const context = canvas.getContext("2d");
          context.drawImage(image, 0, 0);
          const data = context.getImageData(0, 0, 224, 224).data;
          for (let i = 0; i < data.length; i += 4)
            if (Math.abs(data[i] - data[i + 1]) > 40) return true;
          return false;
        }"""
    )
    assert coloured, "the thumbnail is in colour"
    page.set_input_files("#file-input", [str(emoji_picture("1f34c", "twitter"))])
    page.click("#classify")
    expect(page.locator(".result .headline .label").first).to_have_text("banana")
    assert problems == []


def test_adapt_shows_the_jobs_progress_and_its_decision(browser, server):
    """The Adapt button starts a job of the collection and follows it: a progress bar while it
    runs, then what it decided with the held-out figures (a real job first, whatever it
    decides; then, with the service's answers replaced by Playwright, a job seen half-way that
    adopts, and the adapter removed)."""
    import re

    from playwright.sync_api import expect

    images = REPO_ROOT / "examples" / "images"
    with ProtonetClient(server.url) as client:
        client.create_collection("adapted")
        client.add_support("adapted", {"ring": [images / "ring1.png", images / "ring2.png"]})
        client.add_support("adapted", {"fork": [images / "fork1.png", images / "fork2.png"]})
    page = browser.new_page()
    problems = watch(page, server.url)
    page.goto(server.url + "/ui")
    expect(page.locator("#collection-select")).to_have_value("adapted")
    expect(page.locator("#adapter-state")).to_contain_text("Not adapted")
    page.click("#adapt")
    decided = re.compile(r"(Adopted adapter \d+|Kept unadapted).*held-out accuracy")
    expect(page.locator("#adapt-status")).to_have_text(decided, timeout=PATIENCE * 1000)
    expect(page.locator("#adapt-progress")).to_be_hidden()
    assert problems == []

    polls: list[int] = []
    job = {
        "id": 7,
        "collection": "adapted",
        "status": "running",
        "decision": None,
        "progress": {"fraction": 0.5, "examples_per_second": 1234.0},
        "model_version": "v",
        "trained_revision": 3,
        "n_examples": 4,
        "n_classes": 2,
        "held_out": None,
        "adapter_version": None,
        "revision": None,
        "error": None,
        "created_at": "2026-12-07T10:00:00",
        "finished_at": None,
    }
    adopted = {
        **job,
        "status": "completed",
        "decision": "adopted",
        "progress": {"fraction": 1.0, "examples_per_second": 1300.0},
        "held_out": {
            "examples": 4,
            "folds": 2,
            "unadapted_accuracy": 0.5,
            "adapted_accuracy": 1.0,
            "margin": 0.01,
            "min_gain": 2,
            "seconds": 1.5,
        },
        "adapter_version": 7,
        # None: the made-up adoption's revision, which the service never made, would become the
        # page's min_revision for every read of the collection (refused: ahead of its writes).
        "revision": None,
    }

    def job_route(route: Any) -> None:
        if route.request.method == "POST":
            route.fulfill(status=202, json=job)
            return
        polls.append(1)
        route.fulfill(json=job if len(polls) < 4 else adopted)

    def collection_route(route: Any) -> None:
        response = route.fetch()
        adapter = {"version": 7, "trained_revision": 3, "stale": False}
        route.fulfill(response=response, json={**response.json(), "adapter": adapter})

    page.route(re.compile(r".*/v1/collections/adapted/adaptations(/7)?$"), job_route)
    page.route(re.compile(r".*/v1/collections/adapted(\?.*)?$"), collection_route)
    page.click("#adapt")
    expect(page.locator("#adapt-progress")).to_be_visible()
    assert page.locator("#adapt-progress").evaluate("bar => bar.value") == 0.5
    expect(page.locator("#adapt-status")).to_have_text("Job 7: 50.0% done, 1234 examples/s")
    expect(page.locator("#cancel-adapt")).to_be_visible()
    expect(page.locator("#adapt-status")).to_have_text(
        "Adopted adapter 7 (held-out accuracy 50.0% unadapted, 100% adapted, over 4 examples)."
    )
    expect(page.locator("#adapter-state")).to_have_text(
        "Adapted: adapter 7, trained on revision 3."
    )
    expect(page.locator("#remove-adapter")).to_be_visible()

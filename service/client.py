"""Python client for the protonet HTTP service: :class:`ProtonetClient` and
:class:`AsyncProtonetClient` (httpx). Needs only httpx and numpy, not torch.

    from service.client import ProtonetClient

    with ProtonetClient("http://127.0.0.1:8000") as client:
        client.create_collection("letters")
        client.add_support("letters", [("a", "a1.png"), ("a", "a2.png"), ("b", b"<png bytes>")])
        print(client.query("letters", ["unknown.png"])["results"][0]["label"])

Images can be given as encoded file bytes, file paths, or 2-D numpy arrays (floats in [0, 1]
with 0 = black ink and 1 = white paper, or uint8 0-255); a text model's inputs as
``text("...")``. Every 4xx/5xx response raises :class:`ProtonetAPIError` carrying the server's
message. The listings (``models()``, ``list_collections()``, ``list_classes()``,
``list_examples()``) return the list itself, not the one-key object the HTTP answer wraps it
in (``{"models": [...]}``); every other method returns the answer's JSON as it is.

Paged listings (a collection's classes and examples): ``list_classes()`` and
``list_examples()`` follow the pages' cursors to the end and return every item;
``iter_classes()`` and ``iter_examples()`` yield them a page at a time, holding one page.
``get_collection(name)`` is the summary (counts, settings); ``classes=True`` adds every class.

Rejection of unknown inputs: ``create_collection(..., rejection="default")``,
``set_rejection(name, 0.99)`` or ``query(..., rejection=...)``; each result then says
``known`` (docs/service.md, "Rejection of unknowns").

With auth on, pass ``api_key=`` (sent as ``Authorization: Bearer``); an admin key may also pass
``tenant=`` to act in another tenant.

Read-your-writes across replicas: a client remembers, per collection, the revision its last
write returned, and sends it as ``min_revision`` with its reads of that collection (a query, a
collection GET, diagnostics), so a replica that has not applied that write yet catches up first
(docs/scaling.md). ``read_your_writes=False`` turns that off.

Safe retries of writes: ``add_support(..., idempotency_key=...)`` sends an ``Idempotency-Key``;
the same key with the same examples is written once, however often it is sent.

Feedback: ``query(..., remember=True)`` keeps the inputs for a while (each result gets an
``input_id``), and ``feedback(name, input_id, label)`` adds one as an example of ``label``.

Snapshots: ``export_snapshot(name, "file.jsonl")`` streams a collection's snapshot into a file,
``restore_snapshot("new-name", "file.jsonl")`` streams one into a new collection; neither
holds the file in memory (docs/service.md, "Snapshots").

Adapting a collection to its own examples: ``job = adapt(name)`` starts a background job,
``wait_for_adaptation(name, job["id"])`` follows it to its end (then an adopted adapter's
revision counts as this client's write: its next reads see the adapted collection through any
replica), ``cancel_adaptation``, ``adapter(name)`` and ``delete_adapter(name)``
(docs/service.md, "Adapting a collection").
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

import httpx
import numpy as np

# An input: an image (file bytes, a file path, an array), or a request item as the API takes
# it, such as ``text("...")`` for a text model's collections.
ImageLike = bytes | str | os.PathLike[str] | np.ndarray | Mapping[str, Any]
# A rejection setting as a request gives it (the API's ``RejectionChoice``): "none", "default",
# an acceptance such as 0.99, or the JSON form {"acceptance": 0.99}
RejectionChoice = str | float | Mapping[str, float]
Examples = Iterable[tuple[str, ImageLike]] | Mapping[str, Sequence[ImageLike]]
DEFAULT_URL = "http://127.0.0.1:8000"
CHUNK = 1024 * 1024  # bytes of a file read at a time, to stream it
# A snapshot to restore: its bytes, a path to it, or an open binary file.
SnapshotSource = bytes | str | os.PathLike[str] | BinaryIO
PAGE_SIZE = 1000  # items per page of a listing the client walks: the most the server allows


class ProtonetAPIError(Exception):
    """The service answered with an error status; ``detail`` is its message."""

    def __init__(self, status_code: int, error: str, detail: str, body: Any = None) -> None:
        super().__init__(f"{status_code} {error}: {detail}")
        self.status_code = status_code
        self.error = error
        self.detail = detail
        self.body = body

    @classmethod
    def from_response(cls, response: httpx.Response) -> ProtonetAPIError:
        try:
            body = response.json()
            return cls(response.status_code, body["error"], body["detail"], body)
        except (ValueError, KeyError, TypeError):
            return cls(response.status_code, "http_error", response.text or response.reason_phrase)


def text(value: str) -> dict[str, str]:
    """A text input, for a text model's collections: ``client.query("faq", [text("...")])``
    (a bare string is a file path)."""
    return {"text": value}


def encode_input(image: ImageLike) -> dict[str, Any]:
    """One input as a request item: ``{"image": base64}``, ``{"pixels": [[...]]}``, or a
    mapping such as :func:`text`'s as it is."""
    if isinstance(image, Mapping):
        return dict(image)
    if isinstance(image, bytes):
        return {"image": base64.b64encode(image).decode("ascii")}
    if isinstance(image, str | os.PathLike):
        return {"image": base64.b64encode(Path(image).read_bytes()).decode("ascii")}
    if isinstance(image, np.ndarray):
        if image.dtype == np.uint8:
            image = image / 255.0
        return {"pixels": np.asarray(image, dtype=np.float64).tolist()}
    raise TypeError(f"expected image bytes, a file path or a numpy array, got {type(image)}")


def encode_rejection(rejection: RejectionChoice) -> str | dict[str, float]:
    """A rejection setting as the API takes it: ``"none"``, ``"default"`` or
    ``{"acceptance": x}`` (a bare number ``x`` is the acceptance)."""
    if isinstance(rejection, str):
        return rejection
    if isinstance(rejection, Mapping):
        return dict(rejection)
    return {"acceptance": float(rejection)}


def encode_examples(examples: Examples) -> list[dict[str, Any]]:
    """``[(label, image), ...]`` or ``{label: [images]}`` -> support request items."""
    pairs = (
        [(label, image) for label, images in examples.items() for image in images]
        if isinstance(examples, Mapping)
        else list(examples)
    )
    return [{"label": label, **encode_input(image)} for label, image in pairs]


@dataclass(frozen=True)
class Call:
    """One HTTP request of the API, independent of sync/async transport."""

    method: str
    path: str
    json: Any = None
    accepted: tuple[int, ...] = field(default=())  # error statuses returned instead of raised
    collection: str | None = None  # the collection it reads or writes
    writes: bool = False
    binary: bool = False  # the body is a file (an image), returned as bytes
    headers: Mapping[str, str] = field(default_factory=dict)  # beyond the client's own
    params: Mapping[str, str | int] = field(default_factory=dict)  # the query string
    content: Any = None  # a body that is not JSON (bytes, or an iterator of them)


REVISION_HEADER = "Protonet-Revision"
IDEMPOTENCY_HEADER = "Idempotency-Key"


class Revisions:
    """The revision of each collection's last write through this client (read-your-writes)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.last_written: dict[str, int] = {}

    def params(self, call: Call) -> dict[str, int]:
        """``min_revision`` for a read of a collection this client wrote."""
        if not self.enabled or call.writes or call.collection is None:
            return {}
        revision = self.last_written.get(call.collection)
        return {} if revision is None else {"min_revision": revision}

    def observe(self, call: Call, response: httpx.Response) -> None:
        header = response.headers.get(REVISION_HEADER)
        if call.writes and call.collection is not None and header and response.is_success:
            self.note(call.collection, int(header))

    def note(self, collection: str, revision: int) -> None:
        """Count ``revision`` as a write of this client to ``collection``."""
        previous = self.last_written.get(collection, 0)
        self.last_written[collection] = max(previous, revision)


# A job's statuses while it runs; any other is final.
RUNNING_STATUSES = ("running", "cancelling")


def adaptation_done(job: Mapping[str, Any], revisions: Revisions, name: str) -> bool:
    """Whether ``job`` has ended; an adopted one's revision then counts as a write."""
    if job["status"] in RUNNING_STATUSES:
        return False
    if job.get("revision") is not None:
        revisions.note(name, int(job["revision"]))
    return True


def collection_path(name: str, *rest: str) -> str:
    return "/".join(["/v1/collections", quote(name, safe=""), *rest])


def label_segment(label: str) -> str:
    """A label as one URL path segment that nothing on the way can read as another path:
    ``/``, ``%`` and every other reserved character percent-encoded, and each ``.`` too, so
    that no label is ever the dot segment ``.`` or ``..`` which httpx, curl and proxies
    resolve (``classes/..`` would address the collection itself)."""
    return quote(label, safe="").replace(".", "%2E")


def page_params(cursor: str | None, limit: int) -> dict[str, str | int]:
    """The query of a listing's page: its size, and the cursor it starts after."""
    return {"limit": limit} if cursor is None else {"limit": limit, "cursor": cursor}


class Calls:
    """Builders for every endpoint's :class:`Call`."""

    @staticmethod
    def create_collection(
        name: str,
        index: str | None = None,
        rejection: RejectionChoice | None = None,
        model: str | None = None,
    ) -> Call:
        body: dict[str, Any] = {"name": name}
        if model is not None:
            body["model"] = model
        if index is not None:
            body["index"] = index
        if rejection is not None:
            body["rejection"] = encode_rejection(rejection)
        return Call("POST", "/v1/collections", body, collection=name, writes=True)

    @staticmethod
    def set_rejection(name: str, rejection: RejectionChoice) -> Call:
        body = {"rejection": encode_rejection(rejection)}
        return Call("PATCH", collection_path(name), body, collection=name, writes=True)

    @staticmethod
    def get_collection(name: str, classes: bool = False) -> Call:
        params: dict[str, str | int] = {"classes": "true", "limit": PAGE_SIZE} if classes else {}
        return Call("GET", collection_path(name), collection=name, params=params)

    @staticmethod
    def class_page(name: str, cursor: str | None, limit: int = PAGE_SIZE) -> Call:
        params = page_params(cursor, limit)
        return Call("GET", collection_path(name, "classes"), collection=name, params=params)

    @staticmethod
    def diagnostics(name: str) -> Call:
        return Call("GET", collection_path(name, "diagnostics"), collection=name)

    @staticmethod
    def delete_collection(name: str) -> Call:
        return Call("DELETE", collection_path(name), collection=name, writes=True)

    @staticmethod
    def add_support(name: str, examples: Examples, idempotency_key: str | None = None) -> Call:
        body = {"examples": encode_examples(examples)}
        headers = {} if idempotency_key is None else {IDEMPOTENCY_HEADER: idempotency_key}
        path = collection_path(name, "support")
        return Call("POST", path, body, collection=name, writes=True, headers=headers)

    @staticmethod
    def delete_class(name: str, label: str) -> Call:
        path = collection_path(name, "classes", label_segment(label))
        return Call("DELETE", path, collection=name, writes=True)

    @staticmethod
    def query(
        name: str,
        images: Sequence[ImageLike],
        top_k: int,
        rejection: RejectionChoice | None = None,
        remember: bool = False,
    ) -> Call:
        body: dict[str, Any] = {
            "queries": [encode_input(image) for image in images],
            "top_k": top_k,
        }
        if rejection is not None:
            body["rejection"] = encode_rejection(rejection)
        if remember:
            body["remember"] = True
        return Call("POST", collection_path(name, "query"), body, collection=name)

    @staticmethod
    def adapt(name: str) -> Call:
        return Call("POST", collection_path(name, "adaptations"), collection=name, writes=True)

    @staticmethod
    def adaptation(name: str, job_id: int) -> Call:
        # Jobs are read from storage, which every replica shares: no min_revision is needed.
        return Call("GET", collection_path(name, "adaptations", str(int(job_id))))

    @staticmethod
    def adaptations(name: str) -> Call:
        return Call("GET", collection_path(name, "adaptations"))

    @staticmethod
    def cancel_adaptation(name: str, job_id: int) -> Call:
        path = collection_path(name, "adaptations", str(int(job_id)))
        return Call("DELETE", path, collection=name, writes=True)

    @staticmethod
    def adapter(name: str) -> Call:
        return Call("GET", collection_path(name, "adapter"))

    @staticmethod
    def delete_adapter(name: str) -> Call:
        return Call("DELETE", collection_path(name, "adapter"), collection=name, writes=True)

    @staticmethod
    def feedback(name: str, input_id: int, label: str, idempotency_key: str | None = None) -> Call:
        body = {"input_id": input_id, "label": label}
        headers = {} if idempotency_key is None else {IDEMPOTENCY_HEADER: idempotency_key}
        path = collection_path(name, "feedback")
        return Call("POST", path, body, collection=name, writes=True, headers=headers)

    @staticmethod
    def example_page(
        name: str, label: str | None, cursor: str | None, limit: int = PAGE_SIZE
    ) -> Call:
        # Read from storage, which every replica shares: no min_revision is needed.
        params = page_params(cursor, limit) | ({} if label is None else {"label": label})
        return Call("GET", collection_path(name, "examples"), params=params)

    @staticmethod
    def example_image(name: str, example_id: int) -> Call:
        path = collection_path(name, "examples", str(int(example_id)), "image")
        return Call("GET", path, binary=True)

    @staticmethod
    def export_snapshot(name: str, embeddings: bool) -> Call:
        params: dict[str, str | int] = {} if embeddings else {"embeddings": "false"}
        return Call("GET", collection_path(name, "snapshot"), binary=True, params=params)

    @staticmethod
    def restore_snapshot(name: str, content: Any, model: str | None) -> Call:
        path = collection_path(name, "snapshot")
        params: dict[str, str | int] = {} if model is None else {"model": model}
        return Call("POST", path, collection=name, writes=True, params=params, content=content)

    @staticmethod
    def embed(images: Sequence[ImageLike], model: str | None = None) -> Call:
        body: dict[str, Any] = {"inputs": [encode_input(image) for image in images]}
        if model is not None:
            body["model"] = model
        return Call("POST", "/v1/embed", body)


def file_chunks(file: BinaryIO) -> Iterator[bytes]:
    while chunk := file.read(CHUNK):
        yield chunk


@contextlib.contextmanager
def readable(source: SnapshotSource) -> Iterator[BinaryIO]:
    """A snapshot source as a binary file to stream (one the caller opened stays open)."""
    if isinstance(source, bytes):
        yield io.BytesIO(source)
    elif isinstance(source, str | os.PathLike):
        with Path(source).open("rb") as file:
            yield file
    else:
        yield source


@contextlib.contextmanager
def writable(out: str | os.PathLike[str] | BinaryIO) -> Iterator[BinaryIO]:
    """Where to stream a snapshot: a path (opened here) or a binary file (left open)."""
    if isinstance(out, str | os.PathLike):
        with Path(out).open("wb") as file:
            yield file
    else:
        yield out


def auth_headers(api_key: str | None, tenant: str | None) -> dict[str, str]:
    """Headers sent with every request: the API key, and the tenant an admin acts in."""
    headers = {}
    if api_key is not None:
        headers["Authorization"] = f"Bearer {api_key}"
    if tenant is not None:
        headers["X-Protonet-Tenant"] = tenant
    return headers


def parse(response: httpx.Response, call: Call) -> Any:
    """The JSON body (``None`` for 204; the bytes of a file), or :class:`ProtonetAPIError`."""
    if response.is_error and response.status_code not in call.accepted:
        raise ProtonetAPIError.from_response(response)
    if call.binary and response.is_success:
        return response.content
    return None if response.status_code == 204 else response.json()


# A paged listing: the call of the page after a cursor (None: the first), and the answer's key
# that holds the page's items.
Listing = tuple[Callable[[str | None], Call], str]


def class_listing(name: str) -> Listing:
    return (lambda cursor: Calls.class_page(name, cursor), "classes")


def example_listing(name: str, label: str | None) -> Listing:
    return (lambda cursor: Calls.example_page(name, label, cursor), "examples")


def with_every_class(summary: dict[str, Any], classes: list[dict[str, Any]]) -> dict[str, Any]:
    """A collection GET's answer with every class: its first page and the rest."""
    return {**summary, "classes": classes, "next_cursor": None}


def is_ready(readiness: dict[str, Any]) -> bool:
    """Whether a ``/readyz`` body says ready; ``RuntimeError`` if the service failed to start."""
    if readiness["status"] == "failed":
        raise RuntimeError(f"service failed to start: {readiness['detail']}")
    return bool(readiness["status"] == "ready")


class ProtonetClient:
    """Synchronous client; use as a context manager or call :meth:`close`."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        timeout: float = 60.0,
        http: httpx.Client | None = None,
        api_key: str | None = None,
        tenant: str | None = None,
        read_your_writes: bool = True,
    ) -> None:
        self.http = http or httpx.Client(base_url=base_url, timeout=timeout)
        self.headers = auth_headers(api_key, tenant)
        self.revisions = Revisions(read_your_writes)

    def __repr__(self) -> str:  # never the key
        return f"ProtonetClient({str(self.http.base_url)!r})"

    def __enter__(self) -> ProtonetClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def send(self, call: Call) -> Any:
        params = {**call.params, **self.revisions.params(call)}
        headers = {**self.headers, **call.headers}
        response = self.http.request(
            call.method,
            call.path,
            json=call.json,
            content=call.content,
            headers=headers,
            params=params or None,
        )
        self.revisions.observe(call, response)
        return parse(response, call)

    def health(self) -> dict[str, Any]:
        return self.send(Call("GET", "/healthz"))

    def readiness(self) -> dict[str, Any]:
        """``{"status": "ready"|"starting"|"failed", "detail": ...}`` (503 is not an error)."""
        return self.send(Call("GET", "/readyz", accepted=(503,)))

    def wait_until_ready(
        self,
        timeout: float = 60.0,
        interval: float = 0.1,
        exited: Callable[[], int | None] = lambda: None,
    ) -> None:
        """Poll ``/readyz`` (tolerating refused connections) until ready; ``TimeoutError``.
        ``exited`` (e.g. ``Popen.poll``) lets a local server's early death end the wait."""
        deadline = time.monotonic() + timeout
        while True:
            if exited() is not None:
                raise RuntimeError(f"service process exited with code {exited()}")
            try:
                state = self.readiness()
                if is_ready(state):
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"service not ready after {timeout} s")
            time.sleep(interval)

    def model(self) -> dict[str, Any]:
        """The default model's description and card."""
        return self.send(Call("GET", "/v1/model"))

    def models(self) -> list[dict[str, Any]]:
        """Every served model's summary (name, modality, version, input or text spec...): the
        list itself, which ``GET /v1/models`` answers as ``{"models": [...]}``."""
        return self.send(Call("GET", "/v1/models"))["models"]

    def create_collection(
        self,
        name: str,
        index: str | None = None,
        rejection: RejectionChoice | None = None,
        model: str | None = None,
    ) -> dict[str, Any]:
        """``index``: auto (the server's default), exact or ivf (docs/performance.md).
        ``rejection`` of unknown inputs: ``"none"`` (the server's default), ``"default"`` (the
        model's calibrated default) or a known acceptance such as ``0.99``. ``model``: the
        served model it is bound to (default: the server's default model)."""
        return self.send(Calls.create_collection(name, index, rejection, model))

    def set_rejection(self, name: str, rejection: RejectionChoice) -> dict[str, Any]:
        """Change the collection's rejection of unknowns; returns its summary."""
        return self.send(Calls.set_rejection(name, rejection))

    def list_collections(self) -> list[dict[str, Any]]:
        return self.send(Call("GET", "/v1/collections"))["collections"]

    def get_collection(self, name: str, classes: bool = False) -> dict[str, Any]:
        """The collection's summary (counts, settings, revision); ``classes=True`` adds
        ``"classes"``: every class, oldest first, read a page at a time."""
        summary = self.send(Calls.get_collection(name, classes))
        if not classes or (cursor := summary["next_cursor"]) is None:
            return summary
        rest = self.pages(class_listing(name), cursor)
        return with_every_class(summary, summary["classes"] + list(rest))

    def pages(self, listing: Listing, cursor: str | None = None) -> Iterator[dict[str, Any]]:
        """Every item of a paged listing (after ``cursor``), one page held at a time."""
        call_after, key = listing
        while True:
            page = self.send(call_after(cursor))
            yield from page[key]
            if (cursor := page["next_cursor"]) is None:
                return

    def iter_classes(self, name: str) -> Iterator[dict[str, Any]]:
        """The collection's classes ``{"label", "n_examples"}``, oldest first, a page at a
        time (stable under concurrent writes: none skipped or repeated)."""
        return self.pages(class_listing(name))

    def list_classes(self, name: str) -> list[dict[str, Any]]:
        """Every class of the collection, oldest first (all pages)."""
        return list(self.iter_classes(name))

    def diagnostics(self, name: str) -> dict[str, Any]:
        """How well the collection classifies its own examples: ``{"expected_accuracy",
        "classes": [{"label", "n_examples", "loo_accuracy", "nearest_class", ...}],
        "confusable_pairs", "suspected_mislabelled": [{"example_id", "label", "closer_to",
        ...}]}`` (docs/service.md)."""
        return self.send(Calls.diagnostics(name))

    def delete_collection(self, name: str) -> None:
        self.send(Calls.delete_collection(name))

    def add_support(
        self, name: str, examples: Examples, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Add ``[(label, image), ...]`` or ``{label: [images]}``; all or nothing.
        ``idempotency_key`` (e.g. ``str(uuid.uuid4())``, one per batch of examples) makes a
        retry safe: sending the same examples with the same key again, after a timeout or a
        503, writes them at most once and returns the first answer."""
        return self.send(Calls.add_support(name, examples, idempotency_key))

    def delete_class(self, name: str, label: str) -> None:
        self.send(Calls.delete_class(name, label))

    def query(
        self,
        name: str,
        images: Sequence[ImageLike],
        top_k: int = 5,
        rejection: RejectionChoice | None = None,
        remember: bool = False,
    ) -> dict[str, Any]:
        """``{"model_version", "results": [{"label", "probability", "distance", "top_k"}]}``.
        ``rejection`` overrides the collection's setting for this request; when rejection
        applies, each result also has ``known``, ``score`` and ``threshold`` (``label``,
        ``probability`` and ``distance`` are ``None`` if not known) and the answer a
        ``rejection`` summary. ``remember=True``: each result also has an ``input_id`` for
        :meth:`feedback`."""
        return self.send(Calls.query(name, images, top_k, rejection, remember))

    def feedback(
        self, name: str, input_id: int, label: str, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Add the remembered input ``input_id`` (of a query with ``remember=True``) as an
        example of ``label``: a confirmation (its answer's label) or a correction; the support
        answer ``{"n_added", "classes", "revision"}``."""
        return self.send(Calls.feedback(name, input_id, label, idempotency_key))

    def iter_examples(self, name: str, label: str | None = None) -> Iterator[dict[str, Any]]:
        """The stored examples ``{"id", "label", "text"}`` (of ``label`` only, if given), by
        id, a page at a time."""
        return self.pages(example_listing(name, label))

    def adapt(self, name: str) -> dict[str, Any]:
        """Start adapting the collection to its own examples, in the background; returns the
        job (``{"id", "status": "running", "progress", ...}``). 409 while a job of it runs or
        if it has too few examples, 429 adaptation_busy when the server runs its limit."""
        return self.send(Calls.adapt(name))

    def adaptation(self, name: str, job_id: int) -> dict[str, Any]:
        """A job: ``status`` (running, cancelling, completed, cancelled, failed),
        ``decision`` (adopted or kept_unadapted), ``progress``, ``held_out`` figures."""
        return self.send(Calls.adaptation(name, job_id))

    def adaptations(self, name: str) -> list[dict[str, Any]]:
        """The collection's latest jobs, newest first."""
        return self.send(Calls.adaptations(name))["adaptations"]

    def cancel_adaptation(self, name: str, job_id: int) -> dict[str, Any]:
        """Ask a running job to stop (nothing is adopted); 409 if it has finished."""
        return self.send(Calls.cancel_adaptation(name, job_id))

    def wait_for_adaptation(
        self, name: str, job_id: int, timeout: float = 600.0, interval: float = 0.5
    ) -> dict[str, Any]:
        """Poll the job until it ends; returns it (``TimeoutError`` after ``timeout`` s). An
        adopted adapter's revision then counts as this client's write (read-your-writes)."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.adaptation(name, job_id)
            if adaptation_done(job, self.revisions, name):
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"adaptation {job_id} still {job['status']} after {timeout} s")
            time.sleep(interval)

    def adapter(self, name: str) -> dict[str, Any]:
        """The collection's adopted adapter: ``version``, ``trained_revision``, ``stale``,
        ``held_out``; 404 if it has none."""
        return self.send(Calls.adapter(name))

    def delete_adapter(self, name: str) -> None:
        """Remove the collection's adapter: queries go back to the model's own space."""
        self.send(Calls.delete_adapter(name))

    def list_examples(self, name: str, label: str | None = None) -> list[dict[str, Any]]:
        """Every stored example ``[{"id", "label", "text"}, ...]`` (of ``label`` only, if
        given), by id (all pages)."""
        return list(self.iter_examples(name, label))

    def example_image(self, name: str, example_id: int) -> bytes:
        """One stored example as a PNG file (its stored pixels: the model's input size)."""
        return self.send(Calls.example_image(name, example_id))

    def embed(self, images: Sequence[ImageLike], model: str | None = None) -> dict[str, Any]:
        """``{"model_version", "embeddings": [[...], ...]}`` by ``model`` (default: the
        server's default model)."""
        return self.send(Calls.embed(images, model))

    def export_snapshot(
        self, name: str, out: str | os.PathLike[str] | BinaryIO, embeddings: bool = True
    ) -> int:
        """Stream the collection's snapshot into ``out`` (a path or a binary file); the bytes
        written. ``embeddings=False`` leaves the stored embeddings out."""
        call = Calls.export_snapshot(name, embeddings)
        written = 0
        request = self.http.stream("GET", call.path, params=call.params, headers=self.headers)
        with writable(out) as target, request as response:
            if response.is_error:
                response.read()
                raise ProtonetAPIError.from_response(response)
            for chunk in response.iter_bytes():
                written += target.write(chunk)
        return written

    def restore_snapshot(
        self, name: str, source: SnapshotSource, model: str | None = None
    ) -> dict[str, Any]:
        """Restore a snapshot (bytes, a path or a binary file, streamed) into the new
        collection ``name``, bound to ``model`` (default: the snapshot's); its summary."""
        with readable(source) as file:
            return self.send(Calls.restore_snapshot(name, file_chunks(file), model))


class AsyncProtonetClient:
    """Asynchronous client with the same methods as :class:`ProtonetClient`, awaitable."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        timeout: float = 60.0,
        http: httpx.AsyncClient | None = None,
        api_key: str | None = None,
        tenant: str | None = None,
        read_your_writes: bool = True,
    ) -> None:
        self.http = http or httpx.AsyncClient(base_url=base_url, timeout=timeout)
        self.headers = auth_headers(api_key, tenant)
        self.revisions = Revisions(read_your_writes)

    def __repr__(self) -> str:  # never the key
        return f"AsyncProtonetClient({str(self.http.base_url)!r})"

    async def __aenter__(self) -> AsyncProtonetClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def send(self, call: Call) -> Any:
        params = {**call.params, **self.revisions.params(call)}
        headers = {**self.headers, **call.headers}
        response = await self.http.request(
            call.method,
            call.path,
            json=call.json,
            content=call.content,
            headers=headers,
            params=params or None,
        )
        self.revisions.observe(call, response)
        return parse(response, call)

    async def health(self) -> dict[str, Any]:
        return await self.send(Call("GET", "/healthz"))

    async def readiness(self) -> dict[str, Any]:
        return await self.send(Call("GET", "/readyz", accepted=(503,)))

    async def wait_until_ready(self, timeout: float = 60.0, interval: float = 0.1) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                state = await self.readiness()
                if is_ready(state):
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"service not ready after {timeout} s")
            await asyncio.sleep(interval)

    async def model(self) -> dict[str, Any]:
        return await self.send(Call("GET", "/v1/model"))

    async def models(self) -> list[dict[str, Any]]:
        return (await self.send(Call("GET", "/v1/models")))["models"]

    async def create_collection(
        self,
        name: str,
        index: str | None = None,
        rejection: RejectionChoice | None = None,
        model: str | None = None,
    ) -> dict[str, Any]:
        return await self.send(Calls.create_collection(name, index, rejection, model))

    async def set_rejection(self, name: str, rejection: RejectionChoice) -> dict[str, Any]:
        return await self.send(Calls.set_rejection(name, rejection))

    async def list_collections(self) -> list[dict[str, Any]]:
        return (await self.send(Call("GET", "/v1/collections")))["collections"]

    async def get_collection(self, name: str, classes: bool = False) -> dict[str, Any]:
        summary = await self.send(Calls.get_collection(name, classes))
        if not classes or (cursor := summary["next_cursor"]) is None:
            return summary
        rest = [item async for item in self.pages(class_listing(name), cursor)]
        return with_every_class(summary, summary["classes"] + rest)

    async def pages(
        self, listing: Listing, cursor: str | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        call_after, key = listing
        while True:
            page = await self.send(call_after(cursor))
            for item in page[key]:
                yield item
            if (cursor := page["next_cursor"]) is None:
                return

    def iter_classes(self, name: str) -> AsyncIterator[dict[str, Any]]:
        return self.pages(class_listing(name))

    async def list_classes(self, name: str) -> list[dict[str, Any]]:
        return [item async for item in self.iter_classes(name)]

    async def diagnostics(self, name: str) -> dict[str, Any]:
        return await self.send(Calls.diagnostics(name))

    async def delete_collection(self, name: str) -> None:
        await self.send(Calls.delete_collection(name))

    async def add_support(
        self, name: str, examples: Examples, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        return await self.send(Calls.add_support(name, examples, idempotency_key))

    async def delete_class(self, name: str, label: str) -> None:
        await self.send(Calls.delete_class(name, label))

    async def query(
        self,
        name: str,
        images: Sequence[ImageLike],
        top_k: int = 5,
        rejection: RejectionChoice | None = None,
        remember: bool = False,
    ) -> dict[str, Any]:
        return await self.send(Calls.query(name, images, top_k, rejection, remember))

    async def feedback(
        self, name: str, input_id: int, label: str, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        return await self.send(Calls.feedback(name, input_id, label, idempotency_key))

    def iter_examples(self, name: str, label: str | None = None) -> AsyncIterator[dict[str, Any]]:
        return self.pages(example_listing(name, label))

    async def adapt(self, name: str) -> dict[str, Any]:
        return await self.send(Calls.adapt(name))

    async def adaptation(self, name: str, job_id: int) -> dict[str, Any]:
        return await self.send(Calls.adaptation(name, job_id))

    async def adaptations(self, name: str) -> list[dict[str, Any]]:
        return (await self.send(Calls.adaptations(name)))["adaptations"]

    async def cancel_adaptation(self, name: str, job_id: int) -> dict[str, Any]:
        return await self.send(Calls.cancel_adaptation(name, job_id))

    async def wait_for_adaptation(
        self, name: str, job_id: int, timeout: float = 600.0, interval: float = 0.5
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = await self.adaptation(name, job_id)
            if adaptation_done(job, self.revisions, name):
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"adaptation {job_id} still {job['status']} after {timeout} s")
            await asyncio.sleep(interval)

    async def adapter(self, name: str) -> dict[str, Any]:
        return await self.send(Calls.adapter(name))

    async def delete_adapter(self, name: str) -> None:
        await self.send(Calls.delete_adapter(name))

    async def list_examples(self, name: str, label: str | None = None) -> list[dict[str, Any]]:
        return [item async for item in self.iter_examples(name, label)]

    async def example_image(self, name: str, example_id: int) -> bytes:
        return await self.send(Calls.example_image(name, example_id))

    async def embed(self, images: Sequence[ImageLike], model: str | None = None) -> dict[str, Any]:
        return await self.send(Calls.embed(images, model))

    async def export_snapshot(
        self, name: str, out: str | os.PathLike[str] | BinaryIO, embeddings: bool = True
    ) -> int:
        call = Calls.export_snapshot(name, embeddings)
        written = 0
        request = self.http.stream("GET", call.path, params=call.params, headers=self.headers)
        with writable(out) as target:
            async with request as response:
                if response.is_error:
                    await response.aread()
                    raise ProtonetAPIError.from_response(response)
                async for chunk in response.aiter_bytes():
                    written += await asyncio.to_thread(target.write, chunk)
        return written

    async def restore_snapshot(
        self, name: str, source: SnapshotSource, model: str | None = None
    ) -> dict[str, Any]:
        with readable(source) as file:

            async def chunks() -> AsyncIterator[bytes]:
                while chunk := await asyncio.to_thread(file.read, CHUNK):
                    yield chunk

            return await self.send(Calls.restore_snapshot(name, chunks(), model))

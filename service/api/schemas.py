"""Request and response bodies of the HTTP API (they are also its OpenAPI documentation)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetPydanticSchema,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError, core_schema

from protonet.open_set import ACCEPTANCES
from service.api import openapi_examples
from service.collections.labels import LABEL_PATTERN, MAX_LENGTH, MIN_LENGTH, RULE, normalize_label
from service.collections.live_collection import IndexKind
from service.collections.rejection import RejectionSetting
from service.settings import MODEL_NAME_PATTERN

COLLECTION_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"

CollectionName = Annotated[
    str,
    Field(
        pattern=COLLECTION_NAME_PATTERN,
        description="1-64 characters: letters, digits, '_' and '-'.",
        examples=["omniglot-demo"],
    ),
]
# What a JSON schema can state of the label rule (service/collections/labels.py), for every
# label a request carries: in a body (``Label``), a path or a query parameter (the routers).
LABEL_CONSTRAINTS: dict[str, Any] = {
    "min_length": MIN_LENGTH,
    "max_length": MAX_LENGTH,
    "pattern": LABEL_PATTERN,
}
Label = Annotated[
    str,
    StringConstraints(**LABEL_CONSTRAINTS),
    AfterValidator(normalize_label),
    Field(description=f"Class label: {RULE}."),
]


def to_pixel_array(value: Any, validate_rows: core_schema.ValidatorFunctionWrapHandler) -> Any:
    """``pixels`` -> float64 ``[H, W]``. The body parser (service/api/json_bodies.py) already made
    rectangular numeric arrays numpy; anything else (lists from Python callers, or what the
    parser left as lists) is validated as rows of numbers, so errors name ``pixels[r][c]``."""
    if isinstance(value, np.ndarray):
        return value
    rows = validate_rows(value)
    widths = sorted({len(row) for row in rows})
    if len(widths) > 1:
        raise PydanticCustomError(
            "ragged_pixels",
            "ragged pixel array: rows have lengths {widths}",
            {"widths": widths[:5]},
        )
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), widths[0] if rows else 0)


def pixel_array_schema(_source: Any, _handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
    number = core_schema.float_schema(strict=True)  # ints are numbers too; bools, strings not
    rows = core_schema.list_schema(core_schema.list_schema(number))
    return core_schema.no_info_wrap_validator_function(to_pixel_array, rows)


# JSON: rows of numbers; Python: a float64 numpy array [H, W] (the schema is the list's).
PixelArray = Annotated[np.ndarray, GetPydanticSchema(pixel_array_schema)]


class StrictModel(BaseModel):
    """Unknown fields are errors, so typos surface instead of being ignored; no type coercion
    (``"3"`` or ``true`` is not an integer), as the OpenAPI schema says."""

    model_config = ConfigDict(extra="forbid", strict=True)


def exactly_one_of(*names: str) -> Callable[[dict[str, Any]], None]:
    """A ``json_schema_extra`` that states "exactly one of these fields" (``oneOf``), with the
    fields typed without ``null``: sending ``null`` is an error, as omitting the field is the
    way to leave it out."""

    def complete(schema: dict[str, Any]) -> None:
        properties = schema["properties"]
        for name in names:
            field = properties[name]
            non_null = [s for s in field.pop("anyOf") if s.get("type") != "null"]
            field.update(non_null[0])
            field.pop("default", None)
        schema["oneOf"] = [{"required": [name]} for name in names]

    return complete


ModelName = Annotated[
    str,
    Field(
        pattern=MODEL_NAME_PATTERN,
        description="A served model's name (GET /v1/models).",
        examples=["omniglot"],
    ),
]


class InputItem(StrictModel):
    """One input: exactly one of ``image`` or ``pixels`` (for an image model) or ``text`` (for
    a text model)."""

    model_config = ConfigDict(json_schema_extra=exactly_one_of("image", "pixels", "text"))

    image: str | None = Field(
        None,
        description=(
            "Base64 of an encoded image file (PNG, JPEG, BMP, GIF, WebP: anything Pillow reads), "
            "any size or mode; a `data:image/...;base64,` prefix is allowed. Transparent areas "
            "count as white paper."
        ),
    )
    pixels: PixelArray | None = Field(
        None,
        description=(
            "Grayscale image as a 2-D list of rows of numbers in [0, 1]: 0 = black ink, "
            "1 = white paper. Any size; resized like an image."
        ),
        examples=[[[1.0, 0.0, 1.0], [1.0, 0.0, 1.0]]],
    )
    text: str | None = Field(
        None,
        description=(
            "A text, for a text model's collections: cleaned (Unicode NFC, runs of whitespace "
            "made one space, stripped) and then at most the model's text.max_chars characters "
            "(GET /v1/models); empty or whitespace-only text is refused."
        ),
        examples=["I still have not received my new card"],
    )

    @field_validator("image", "pixels", "text", mode="wrap")
    @classmethod
    def _not_null(cls, value: Any, handler: core_schema.ValidatorFunctionWrapHandler) -> Any:
        if value is None:  # only when sent: defaults are not validated
            raise PydanticCustomError("null_source", "omit the field rather than sending null")
        return handler(value)

    @model_validator(mode="after")
    def _exactly_one_source(self) -> InputItem:
        if sum(value is not None for value in (self.image, self.pixels, self.text)) != 1:
            raise PydanticCustomError(
                "image_or_pixels",
                "give exactly one of 'image' (base64 file), 'pixels' or 'text'",
            )
        return self


class SupportExample(InputItem):
    """A labelled example: a label plus exactly one of ``image``, ``pixels`` or ``text``."""

    label: Label


INDEX_DESCRIPTION = (
    "Search index: 'exact' (every class, one matrix), 'ivf' (FAISS inverted lists: "
    "approximate, for very large collections) or 'auto' (exact up to "
    "PROTONET_EXACT_MAX_CLASSES classes, then ivf, switched in the background)."
)


class AcceptanceTarget(StrictModel):
    """Calibrated rejection at a chosen share of known inputs accepted."""

    model_config = ConfigDict(json_schema_extra=openapi_examples.ACCEPTANCE_TARGET)

    acceptance: float = Field(
        ge=ACCEPTANCES[0],
        le=ACCEPTANCES[-1],
        description=f"Share of known inputs to accept, e.g. 0.99: from {ACCEPTANCES[0]} to "
        f"{ACCEPTANCES[-1]} (what a calibration measures), and within the served model's "
        "calibrated range (GET /v1/model: rejection.acceptances), else 422.",
    )


REJECTION_DESCRIPTION = (
    "Rejection of unknown inputs (inputs of none of the classes): 'none' (every query gets its "
    "nearest class), 'default' (calibrated, at the model's default known acceptance, 0.95 for "
    "the bundled model) or {'acceptance': x} (calibrated to accept a share x of known inputs). "
    "Calibrated rejection needs a model with a calibration (422 rejection_unavailable)."
)
RejectionChoice = Annotated[
    Literal["none", "default"] | AcceptanceTarget, Field(description=REJECTION_DESCRIPTION)
]


def rejection_setting(choice: Literal["none", "default"] | AcceptanceTarget) -> RejectionSetting:
    """The domain's setting of a request's ``rejection``."""
    if isinstance(choice, AcceptanceTarget):
        return RejectionSetting.from_choice(choice.acceptance)
    return RejectionSetting.from_choice(choice)


class CreateCollectionRequest(StrictModel):
    model_config = ConfigDict(json_schema_extra=openapi_examples.CREATE_COLLECTION)

    name: CollectionName
    index: IndexKind = Field("auto", description=INDEX_DESCRIPTION)
    rejection: RejectionChoice = "none"
    model: ModelName | None = Field(
        None,
        description="The served model the collection is bound to for good (GET /v1/models); "
        "omitted or null: the default model. Its inputs must be of that model's modality.",
    )


class UpdateCollectionRequest(StrictModel):
    """The collection's settings that may change after creation."""

    model_config = ConfigDict(json_schema_extra=openapi_examples.UPDATE_COLLECTION)

    rejection: RejectionChoice


class SupportRequest(StrictModel):
    model_config = ConfigDict(json_schema_extra=openapi_examples.SUPPORT)

    examples: list[SupportExample] = Field(
        min_length=1,
        description="Labelled examples; new labels create classes. All are stored or none.",
    )


class QueryRequest(StrictModel):
    model_config = ConfigDict(json_schema_extra=openapi_examples.QUERY)

    queries: list[InputItem] = Field(
        min_length=1, description="Inputs to classify: images, or texts for a text model."
    )
    top_k: int = Field(
        5, ge=1, description="How many nearest classes to return per query (clamped to n_classes)."
    )
    rejection: RejectionChoice | None = Field(
        None,
        description=REJECTION_DESCRIPTION + " Omitted (or null): the collection's setting.",
    )
    remember: bool = Field(
        False,
        description="Keep the inputs for feedback (PROTONET_REMEMBER_SECONDS, in the database): "
        "each result then carries an input_id, which POST .../feedback turns into a support "
        "example of the right label. Within the tenant's limits (429 remember_limit).",
    )


class FeedbackRequest(StrictModel):
    """A remembered query input, and its right label: a confirmation or a correction."""

    model_config = ConfigDict(json_schema_extra=openapi_examples.FEEDBACK)

    input_id: int = Field(
        ge=1,
        le=2**53 - 1,
        description="A result's input_id, from a query of this collection with remember.",
    )
    label: Label


class EmbedRequest(StrictModel):
    model_config = ConfigDict(json_schema_extra=openapi_examples.EMBED)

    inputs: list[InputItem] = Field(
        min_length=1, description="Inputs to embed: images, or texts for a text model."
    )
    model: ModelName | None = Field(
        None, description="The served model to embed with; omitted or null: the default model."
    )


class HealthResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra=openapi_examples.HEALTH)

    status: Literal["ok"] = Field(description="Always 'ok': the process is alive.")


class ReadyResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra=openapi_examples.READY)

    status: Literal["ready", "starting", "failed"] = Field(description="Readiness state.")
    detail: str = Field(description="What the service is doing while not ready.")
    database: Literal["up", "down"] = Field(
        description="Whether the database answered this process's last round trip (about "
        "every second). Down: queries are still answered from memory, writes get 503 "
        "database_unavailable; ready stays 200 unless the probe asks ?require=database."
    )


class InputSpecInfo(BaseModel):
    model_config = ConfigDict(json_schema_extra=openapi_examples.INPUT_SPEC)

    image_size: int = Field(description="Inputs are resized to image_size x image_size.")
    channels: int = Field(description="1 = grayscale, 3 = RGB colour.")
    invert: bool = Field(description="Whether the model sees ink as 1 (inputs are ink-on-paper).")
    fit: str = Field(
        "stretch",
        description="How a non-square input becomes square: stretch, or pad (aspect ratio "
        "kept, white paper around).",
    )
    mean: list[float] = Field(
        default_factory=list, description="Per-channel normalisation mean (empty: none)."
    )
    std: list[float] = Field(
        default_factory=list, description="Per-channel normalisation std (empty: none)."
    )


class RejectionCalibrationInfo(BaseModel):
    model_config = ConfigDict(json_schema_extra=openapi_examples.REJECTION_CALIBRATION)

    method: str = Field(description="The unknown-ness score, e.g. nearest_distance.")
    shots: list[int] = Field(description="Shot counts (examples per class) calibrated.")
    acceptances: list[float] = Field(
        description="Known acceptances calibrated: a rejection's acceptance must lie within."
    )
    default_acceptance: float = Field(description="The acceptance 'default' stands for.")


class TextSpecInfo(BaseModel):
    model_config = ConfigDict(json_schema_extra=openapi_examples.TEXT_SPEC)

    base_encoder: str = Field(description="The frozen base sentence encoder under the head.")
    base_weights_sha256: str = Field(description="sha256 of the base's weights (checked).")
    max_chars: int = Field(description="Most characters per text, after cleaning (422 above).")
    max_tokens: int = Field(description="Word pieces the base reads per text (longer: cut).")
    base_dim: int = Field(description="Width of the base's embeddings.")


class ModelSummary(BaseModel):
    model_config = ConfigDict(json_schema_extra=openapi_examples.MODEL_SUMMARY)

    name: str = Field(description="The model's name in PROTONET_MODELS ('default' alone).")
    modality: Literal["image", "text"] = Field(
        description="What its collections take: images ('image' or 'pixels') or 'text'."
    )
    default: bool = Field(
        description="Whether it is the default model (of collections created without one)."
    )
    version: str = Field(description="Content hash of the weights; changes with every model.")
    embedding_dim: int = Field(description="Width of the embeddings.")
    input: InputSpecInfo | None = Field(
        None, description="What an image model expects (inputs are converted); null for text."
    )
    text: TextSpecInfo | None = Field(
        None, description="How a text model reads text (base encoder, limits); null for images."
    )
    rejection: RejectionCalibrationInfo | None = Field(
        description="The model's rejection calibration (measured on training-side classes), "
        "or null: the model cannot reject unknown inputs."
    )


class ModelList(BaseModel):
    model_config = ConfigDict(json_schema_extra=openapi_examples.MODEL_LIST)

    models: list[ModelSummary] = Field(description="Every served model, as configured.")


class ModelInfo(ModelSummary):
    model_config = ConfigDict(json_schema_extra=openapi_examples.MODEL)

    metric: str = Field(description="Distance between embeddings and prototypes.")
    card: dict[str, Any] = Field(
        description="Model card: encoder config, training config, evaluation, metadata."
    )


REVISION_DESCRIPTION = (
    "The collection's revision that this answer reflects: the revision of its latest write "
    "that the answering process has applied (revisions count the tenant's writes: 1, 2, "
    "3...). Send it as min_revision to read your own writes through any replica "
    "(docs/scaling.md)."
)


class RejectionOff(BaseModel):
    mode: Literal["none"] = Field(description="No rejection: every query gets its nearest class.")


class RejectionOn(BaseModel):
    mode: Literal["calibrated"] = Field(description="Calibrated rejection of unknown inputs.")
    acceptance: float | None = Field(
        description="Share of known inputs accepted ('default' shows the model's default; null "
        "only if the served model has no calibration, when queries answer 422)."
    )


RejectionSummary = Annotated[RejectionOff | RejectionOn, Field(discriminator="mode")]


class AdapterSummary(BaseModel):
    model_config = ConfigDict(json_schema_extra=openapi_examples.ADAPTER_SUMMARY)

    version: int = Field(description="The adapter's version: the id of the job that made it.")
    trained_revision: int = Field(description="The collection's revision it was trained on.")
    stale: bool = Field(
        description="Examples were added or deleted since: they count in queries (mapped by the "
        "adapter), but it was not trained on them; adapt again to include them."
    )


class CollectionSummary(BaseModel):
    model_config = ConfigDict(json_schema_extra=openapi_examples.COLLECTION_SUMMARY)

    name: str = Field(description="Collection name.")
    n_classes: int = Field(description="Number of classes (distinct labels).")
    n_examples: int = Field(description="Number of stored support examples.")
    revision: int = Field(description=REVISION_DESCRIPTION)
    index: IndexKind = Field(description=INDEX_DESCRIPTION)
    index_in_use: Literal["exact", "ivf"] = Field(description="The index that answers now.")
    rejection: RejectionSummary = Field(
        description="Rejection of unknown inputs in queries that do not say otherwise."
    )
    model: str = Field(description="The served model the collection is bound to.")
    adapter: AdapterSummary | None = Field(
        None,
        description="Its adopted adapter (POST .../adaptations): queries are answered in its "
        "space. Present only when it has one.",
    )


class CollectionList(BaseModel):
    model_config = ConfigDict(json_schema_extra=openapi_examples.COLLECTION_LIST)

    collections: list[CollectionSummary] = Field(description="Every collection, by name.")


class ClassSummary(BaseModel):
    model_config = ConfigDict(json_schema_extra=openapi_examples.CLASS_COUNT)

    label: str = Field(description="Class label.")
    n_examples: int = Field(description="Support examples of this class.")


NEXT_CURSOR_DESCRIPTION = (
    "Send it as ?cursor= to get the next page (null: this page is the last). Pages list items "
    "in creation order and stay stable under concurrent writes: no item is skipped or listed "
    "twice."
)


class CollectionDetail(CollectionSummary):
    """The summary; with ``?classes=true``, also the first page of the classes."""

    model_config = ConfigDict(json_schema_extra=openapi_examples.COLLECTION_DETAIL)

    classes: list[ClassSummary] | None = Field(
        None,
        description="Only with ?classes=true: the first page of classes (up to ?limit), oldest "
        "first; GET .../classes?cursor=next_cursor has the rest.",
    )
    next_cursor: str | None = Field(
        None,
        description="Only with ?classes=true: the cursor of the classes' next page, for GET "
        ".../classes (null: every class is listed).",
    )


class ClassPage(BaseModel):
    model_config = ConfigDict(json_schema_extra=openapi_examples.CLASS_PAGE)

    classes: list[ClassSummary] = Field(description="Up to ?limit classes, oldest first.")
    next_cursor: str | None = Field(description=NEXT_CURSOR_DESCRIPTION)
    revision: int = Field(description=REVISION_DESCRIPTION)


class SupportResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra=openapi_examples.SUPPORT_ANSWER)

    n_added: int = Field(description="Examples added by this request.")
    classes: list[ClassSummary] = Field(
        description="The classes this request touched, with their new example counts."
    )
    revision: int = Field(description="The collection's revision after this write.")


class Prediction(BaseModel):
    model_config = ConfigDict(json_schema_extra=openapi_examples.PREDICTION)

    label: str = Field(description="Class label.")
    probability: float = Field(
        description="Softmax over all the collection's classes of minus the squared distance."
    )
    distance: float = Field(description="Squared Euclidean distance to the class prototype.")


NULL_WHEN_REJECTED = " Null when rejection applies and the query is not known."
ONLY_WITH_REJECTION = " Present only when rejection applies."


class QueryResult(BaseModel):
    """The most likely class, plus the ``top_k`` nearest ones (best first); with rejection,
    whether the query is one of the known classes at all."""

    model_config = ConfigDict(json_schema_extra=openapi_examples.QUERY_RESULT)

    label: str | None = Field(None, description="Class label." + NULL_WHEN_REJECTED)
    probability: float | None = Field(
        None,
        description="Softmax over all the collection's classes of minus the squared distance."
        + NULL_WHEN_REJECTED,
    )
    distance: float | None = Field(
        None, description="Squared Euclidean distance to the class prototype." + NULL_WHEN_REJECTED
    )
    # "top_k" in JSON (clients read it); in Python ``top_k`` is always the count asked for.
    ranked: list[Prediction] = Field(
        alias="top_k", description="The nearest classes, best first (also when not known)."
    )
    known: bool | None = Field(
        None,
        description="Whether the query is one of the collection's classes (score <= "
        "threshold)." + ONLY_WITH_REJECTION,
    )
    score: float | None = Field(
        None,
        description="Unknown-ness score (the model's method, e.g. the squared distance to the "
        "nearest prototype): higher is more likely unknown." + ONLY_WITH_REJECTION,
    )
    threshold: float | None = Field(
        None,
        description="The limit on the score used for this query (by the nearest class's "
        "number of examples)." + ONLY_WITH_REJECTION,
    )
    input_id: int | None = Field(
        None,
        description="Where the input is remembered, for POST .../feedback. Present only when "
        "the query asked to remember.",
    )


class AppliedRejectionInfo(BaseModel):
    mode: Literal["calibrated"] = Field(description="Calibrated rejection of unknown inputs.")
    acceptance: float = Field(description="Share of known inputs the thresholds accept.")
    threshold_source: Literal["checkpoint", "collection", "adapter"] = Field(
        description="'checkpoint': the model's thresholds as calibrated; 'collection': scaled "
        "to this collection from its own support set (held-out distances of classes with 2 or "
        "more examples, once there are 30 or more); 'adapter': scaled to the adapted space by "
        "the held-out distances its adaptation measured."
    )


class QueryResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra=openapi_examples.QUERY_ANSWER)

    model_version: str = Field(description="Version of the model that embedded the queries.")
    adapter_version: int | None = Field(
        None,
        description="Version of the collection's adapter that mapped the queries and "
        "prototypes. Present only when an adapter answered.",
    )
    revision: int = Field(description=REVISION_DESCRIPTION)
    index: Literal["exact", "ivf"] = Field(
        description="The index that answered: exact, or ivf (approximate; probabilities are "
        "the softmax over the nearest classes it found, see docs/performance.md)."
    )
    results: list[QueryResult] = Field(description="One result per query, in request order.")
    rejection: AppliedRejectionInfo | None = Field(
        None, description="The rejection of unknowns applied." + ONLY_WITH_REJECTION
    )


class EmbedResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra=openapi_examples.EMBEDDINGS)

    model_version: str = Field(description="Version of the model that made the embeddings.")
    embeddings: list[list[float]] = Field(description="One embedding per input, in order.")


class ClassDiagnosis(BaseModel):
    model_config = ConfigDict(json_schema_extra=openapi_examples.CLASS_DIAGNOSIS_EXAMPLE)

    label: str = Field(description="Class label.")
    n_examples: int = Field(description="Support examples of this class.")
    loo_accuracy: float | None = Field(
        None,
        description="Leave-one-out accuracy: the share of the class's examples that are nearest "
        "their own class's prototype computed without them (every other prototype as it is); "
        "null for a class of one example, which cannot be left out.",
    )
    nearest_class: str | None = Field(
        None,
        description="The class whose prototype is nearest this class's; null if it is the only "
        "class.",
    )
    nearest_class_distance: float | None = Field(
        None, description="Squared Euclidean distance between the two prototypes."
    )


class ConfusablePair(BaseModel):
    model_config = ConfigDict(json_schema_extra=openapi_examples.CONFUSABLE_PAIR_EXAMPLE)

    labels: tuple[str, str] = Field(description="The two classes, the older first.")
    distance: float = Field(description="Squared Euclidean distance between their prototypes.")


class SuspectedExample(BaseModel):
    model_config = ConfigDict(json_schema_extra=openapi_examples.SUSPECTED_EXAMPLE_EXAMPLE)

    example_id: int = Field(description="The stored example's id.")
    label: str = Field(description="Its label.")
    closer_to: str = Field(description="The class whose prototype it is nearer.")
    distance_own: float = Field(
        description="Squared distance to its own class's prototype computed without it."
    )
    distance_other: float = Field(description="Squared distance to closer_to's prototype.")


class DiagnosticsResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra=openapi_examples.DIAGNOSTICS)

    model_version: str = Field(description="Version of the model whose embeddings were used.")
    revision: int = Field(description=REVISION_DESCRIPTION)
    n_classes: int = Field(description="Number of classes diagnosed.")
    n_examples: int = Field(description="Number of examples diagnosed.")
    expected_accuracy: float | None = Field(
        None,
        description="Mean leave-one-out accuracy over the examples of classes with two or more "
        "examples: an estimate of the accuracy on new inputs like the support examples (with "
        "one example fewer per class); null if no class has two.",
    )
    classes: list[ClassDiagnosis] = Field(description="Every class, oldest first.")
    confusable_pairs: list[ConfusablePair] = Field(
        description="The closest pairs of class prototypes, closest first, at most 10."
    )
    suspected_mislabelled: list[SuspectedExample] = Field(
        description="Examples nearer another class's prototype than their own class's prototype "
        "computed without them, most suspicious first (smallest distance_other / "
        "distance_own). Classes of one example are never judged."
    )


class StoredExampleInfo(BaseModel):
    model_config = ConfigDict(json_schema_extra=openapi_examples.STORED_EXAMPLE)

    id: int = Field(description="The example's id: its image is at .../examples/{id}/image.")
    label: str = Field(description="Its class's label.")
    text: str | None = Field(
        None, description="A text model's example: its text as stored (cleaned); null for images."
    )


class ExampleList(BaseModel):
    model_config = ConfigDict(json_schema_extra=openapi_examples.EXAMPLE_LIST)

    examples: list[StoredExampleInfo] = Field(
        description="Up to ?limit stored examples, by id (creation order)."
    )
    next_cursor: str | None = Field(description=NEXT_CURSOR_DESCRIPTION)


class AdaptationProgress(BaseModel):
    model_config = ConfigDict(json_schema_extra=openapi_examples.PROGRESS)

    fraction: float = Field(description="Share of the job's training steps done, 0 to 1.")
    examples_per_second: float = Field(
        description="Training examples processed per second so far (each step is one episode "
        "over the support set)."
    )


class HeldOutFigures(BaseModel):
    """How the adapter did on held-out examples, against the model's own space."""

    model_config = ConfigDict(json_schema_extra=openapi_examples.HELD_OUT)

    examples: int = Field(description="Held-out examples (each class of 2 or more, all of them).")
    folds: int = Field(description="Folds: an adapter was trained without each.")
    unadapted_accuracy: float = Field(description="Their accuracy in the model's own space.")
    adapted_accuracy: float = Field(description="Their accuracy in the adapted space.")
    margin: float = Field(description="Gain in accuracy needed to adopt the adapter.")
    min_gain: int = Field(description="More examples right needed to adopt it.")
    seconds: float = Field(description="How long the job took.")


class AdaptationJob(BaseModel):
    """An adaptation of a collection to its own support set (docs/service.md, "Adapting a
    collection")."""

    model_config = ConfigDict(json_schema_extra=openapi_examples.ADAPTATION)

    id: int = Field(description="The job's id; an adopted adapter's version.")
    collection: str = Field(description="The collection it adapts.")
    status: Literal["running", "cancelling", "completed", "cancelled", "failed"] = Field(
        description="'cancelling': asked to stop, not stopped yet; 'failed': see error (a job "
        "whose process stopped has failed)."
    )
    decision: Literal["adopted", "kept_unadapted"] | None = Field(
        None,
        description="A completed job's: its adapter adopted, or the collection kept "
        "unadapted (the adapter did not win on held-out examples by the margin).",
    )
    progress: AdaptationProgress = Field(description="How far its training is.")
    model_version: str = Field(description="The model version whose embeddings it adapts.")
    trained_revision: int = Field(description="The collection's revision it trains on.")
    n_examples: int = Field(description="Examples it trains on.")
    n_classes: int = Field(description="Classes it trains on.")
    held_out: HeldOutFigures | None = Field(None, description="Once measured; null before.")
    adapter_version: int | None = Field(None, description="The adapter it adopted (null: none).")
    revision: int | None = Field(
        None,
        description="The collection's revision that adopted it (send it as min_revision to "
        "query through any replica in the adapted space); null: none adopted.",
    )
    error: str | None = Field(None, description="Why it failed, or stopped.")
    created_at: datetime = Field(description="When it started (UTC).")
    finished_at: datetime | None = Field(None, description="When it ended (UTC); null: running.")


class AdaptationList(BaseModel):
    model_config = ConfigDict(json_schema_extra=openapi_examples.ADAPTATION_LIST)

    adaptations: list[AdaptationJob] = Field(description="The latest 20 jobs, newest first.")


class AdapterInfo(AdapterSummary):
    model_config = ConfigDict(json_schema_extra=openapi_examples.ADAPTER)

    model_version: str = Field(description="The model version whose embeddings it maps.")
    held_out: HeldOutFigures = Field(description="What adopted it: the held-out comparison.")
    created_at: datetime = Field(description="When it was adopted (UTC).")

"""Service configuration, read from ``PROTONET_*`` environment variables."""

from __future__ import annotations

import ipaddress
import re
import textwrap
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

# Resolved from this file, not the working directory: ``python -m service`` works from anywhere.
BUNDLED_CHECKPOINT = Path(__file__).resolve().parent.parent / "models" / "omniglot-conv4.pt"
DATABASE_FILE = "protonet.sqlite3"
# The name of the one model that PROTONET_CHECKPOINT configures (without PROTONET_MODELS).
SINGLE_MODEL_NAME = "default"
# A served model's name: here in PROTONET_MODELS, and in the API wherever a model is named
# (service/api/schemas.py states it in the OpenAPI document).
MODEL_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
ENV_PREFIX = "PROTONET_"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")  # uvicorn's
HELP_WIDTH = 92  # characters per line of the settings' help
# The settings `python -m service --help` shows; docs/service.md has them all.
MAIN_SETTINGS = (
    "checkpoint",
    "models",
    "data_dir",
    "database_url",
    "host",
    "port",
    "workers",
    "device",
    "log_level",
    "log_format",
    "auth_enabled",
    "api_keys_file",
)


def model_list(value: str) -> dict[str, Path]:
    """PROTONET_MODELS (``name=path`` entries separated by commas) -> ``name -> path``, in the
    order given; :class:`ValueError` names a malformed entry or a repeated name."""
    models: dict[str, Path] = {}
    for raw in value.split(","):
        entry = raw.strip()
        if not entry:
            continue
        name, separator, path = (part.strip() for part in entry.partition("="))
        if not separator or not path or not re.match(MODEL_NAME_PATTERN, name):
            raise ValueError(
                f"model entry {entry!r} is not name=path (a name of 1-64 letters, digits, "
                "'_' or '-'), e.g. omniglot=models/omniglot-conv4.pt"
            )
        if name in models:
            raise ValueError(f"model {name!r} is named twice")
        models[name] = Path(path)
    return models


def check_model_list(value: str) -> str:
    """PROTONET_MODELS checked at start (a malformed entry fails it)."""
    model_list(value)
    return value


def check_log_level(value: str) -> str:
    """PROTONET_LOG_LEVEL, in any case, one of uvicorn's levels (checked here: a wrong one
    would fail the start inside the logging configuration, in a traceback)."""
    if value.lower() not in LOG_LEVELS:
        raise ValueError(f"log level {value!r} is not one of {', '.join(LOG_LEVELS)}")
    return value


def trusted_proxy_list(value: str) -> list[str]:
    """The entries of PROTONET_TRUSTED_PROXIES (IP addresses and CIDR networks separated by
    commas), checked and normalised; :class:`ValueError` names a malformed one. Checked here
    because uvicorn's ProxyHeadersMiddleware would silently take a typo as a host name that
    never matches. ``*`` (trust every peer) is refused: any client could then pick its address,
    and with it its rate bucket, by sending X-Forwarded-For."""
    entries = []
    for raw in value.split(","):
        entry = raw.strip()
        if not entry:
            continue
        try:
            if "/" in entry:
                entries.append(str(ipaddress.ip_network(entry)))
            else:
                entries.append(str(ipaddress.ip_address(entry)))
        except ValueError as error:
            raise ValueError(
                f"trusted proxy {entry!r} is not an IP address or a CIDR network "
                f"(like 10.0.0.1 or 10.0.0.0/8): {error}"
            ) from None
    return entries


def check_trusted_proxies(value: str) -> str:
    """PROTONET_TRUSTED_PROXIES checked (a malformed entry fails the start) and normalised."""
    return ",".join(trusted_proxy_list(value))


class Settings(BaseSettings):
    """Every knob of the service; see docs/service.md for the table."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    checkpoint: Path = Field(
        default=BUNDLED_CHECKPOINT,
        description="Model checkpoint to serve as the one model 'default' (without "
        "PROTONET_MODELS).",
    )
    models: Annotated[str, AfterValidator(check_model_list)] = Field(
        default="",
        description="Several models at once: name=path entries separated by commas, e.g. "
        "omniglot=models/omniglot-conv4.pt,intents=models/banking77-minilm.pt (replaces "
        "PROTONET_CHECKPOINT). Collections are bound to one by name.",
    )
    default_model: str | None = Field(
        default=None,
        description="The model of collections created without one, of /v1/model and of "
        "/v1/embed without one; default: the first of PROTONET_MODELS.",
    )
    data_dir: Path = Field(default=Path("data"), description="Where the embedded database lives.")
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default: a SQLite file in data_dir.",
    )
    migrate_on_start: bool = Field(
        default=True,
        description="Migrate the database schema on start (under a lock: replicas may start "
        "together); false: refuse to start on an outdated schema (`python -m service migrate`).",
    )
    workers: PositiveInt = Field(
        default=1,
        description="Server processes on one port (`python -m service`); each keeps its own "
        "indexes, in sync through the database's change feed.",
    )
    sync_interval_ms: PositiveInt | None = Field(
        default=None,
        description="How often the change feed polls the database for other processes' "
        "writes; default: 50 on SQLite, 1000 on PostgreSQL (LISTEN/NOTIFY wakes it at once).",
    )
    min_revision_timeout: PositiveFloat = Field(
        default=5.0,
        description="Longest a read with min_revision waits for this process to apply that "
        "revision before 503 revision_not_reached.",
    )
    exact_max_classes: PositiveInt = Field(
        default=20_000,
        description="Collections with index 'auto' search exactly up to this many classes and "
        "switch to the approximate FAISS IVF index above (in the background).",
    )
    ivf_nprobe: PositiveInt = Field(
        default=32,
        description="Inverted lists an IVF index scans per query (more: higher recall, slower).",
    )
    diagnostics_max_examples: PositiveInt = Field(
        default=200_000,
        description="Largest collection (in examples) whose diagnostics are computed; larger "
        "ones get 422 collection_too_large.",
    )
    diagnostics_max_distances: PositiveInt = Field(
        default=1_000_000_000,
        description="Most distances one diagnostics request computes (examples of classes with "
        "two or more x classes, plus classes x classes); beyond: 422 collection_too_large.",
    )
    host: str = Field(default="127.0.0.1", description="Interface `python -m service` binds to.")
    port: int = Field(
        default=8000, ge=0, le=65535, description="Port `python -m service` binds to."
    )
    log_level: Annotated[str, AfterValidator(check_log_level)] = Field(
        default="info", description="Python/uvicorn log level."
    )
    log_format: Literal["json", "text"] = Field(
        default="json", description="Log lines as JSON objects (with request ids) or plain text."
    )
    device: str = Field(default="cpu", description="Torch device for the encoder: cpu, cuda, auto.")
    torch_threads: PositiveInt | None = Field(
        default=None,
        description="torch intra-op threads; default: all cores but one (left to the server).",
    )
    embed_batch_size: PositiveInt = Field(
        default=256, description="Encoder batch size, for requests and for re-embedding."
    )
    batch_max_rows: PositiveInt = Field(
        default=16, description="Most images in one micro-batch of concurrent requests."
    )
    batch_max_wait_ms: float = Field(
        default=2.0,
        ge=0,
        description="Longest a micro-batch waits for requests still being decoded.",
    )
    max_header_bytes: PositiveInt = Field(
        default=64 * 1024,
        description="Largest request line and headers of one request together (431 and the "
        "connection closed above).",
    )
    header_timeout: PositiveFloat = Field(
        default=10.0,
        description="Seconds a connection (or a kept-alive connection's next request) has to "
        "send its complete headers; then 408 and the connection is closed.",
    )
    max_body_bytes: PositiveInt = Field(
        default=16 * 1024 * 1024, description="Largest accepted request body (413 above)."
    )
    remember_seconds: PositiveInt = Field(
        default=3600,
        description="How long the inputs of a query sent with remember are kept (in the "
        "database) for feedback.",
    )
    remember_max_inputs: PositiveInt = Field(
        default=10_000,
        description="Most remembered query inputs one tenant keeps at once; a query that would "
        "remember more gets 429 remember_limit.",
    )
    remember_max_bytes: PositiveInt = Field(
        default=256 * 1024 * 1024,
        description="Most bytes of remembered query inputs (their pixels or texts) one tenant "
        "keeps at once; beyond, 429 remember_limit.",
    )
    max_snapshot_bytes: PositiveInt = Field(
        default=64 * 1024**3,
        description="Largest snapshot file a restore (POST .../snapshot) reads, as it "
        "streams in (413 above); it is never held in memory, and each of its lines is "
        "limited to PROTONET_MAX_BODY_BYTES.",
    )
    max_items_per_request: PositiveInt = Field(
        default=256, description="Most examples/queries/inputs in one request (413 above)."
    )
    max_image_pixels: PositiveInt = Field(
        default=4096 * 4096,
        description="Largest decoded image (width x height), checked before decoding.",
    )

    max_request_pixels: PositiveInt = Field(
        default=64 * 1024 * 1024,
        description="Most decoded pixels (width x height summed over a request's images).",
    )
    max_pixel_values: PositiveInt = Field(
        default=256 * 1024,
        description="Most numbers in a request's 'pixels' arrays together (413 above), "
        "checked while parsing; larger images travel better as files in 'image'.",
    )
    request_memory_bytes: PositiveInt = Field(
        default=512 * 1024 * 1024,
        description="Memory that the requests in flight may hold together for their bodies "
        "and what parsing makes of them (reserved as a multiple of each body's size); "
        "requests beyond it wait for room.",
    )
    auth_enabled: bool = Field(
        default=False,
        description="Require an API key on every endpoint but the probes (and docs).",
    )
    api_keys: SecretStr | None = Field(
        default=None,
        description="Inline keys 'key:tenant:role' separated by commas or newlines.",
    )
    api_keys_file: Path | None = Field(
        default=None,
        description="File of keys: 'key:tenant:role' lines, or a JSON list of objects.",
    )
    protect_metrics: bool = Field(
        default=False, description="With auth enabled, /metrics needs a valid key too."
    )
    rate_limit_per_second: NonNegativeFloat = Field(
        default=200.0,
        description="With auth on: sustained requests per second per API key; 0 = off.",
    )
    rate_limit_burst: PositiveInt = Field(
        default=400, description="Requests an API key may send at once before 429."
    )
    address_rate_limit_per_second: NonNegativeFloat = Field(
        default=0.0,
        description="Requests per second per client address for requests without a valid key "
        "(all of them with auth off); 0 = off.",
    )
    address_rate_limit_burst: PositiveInt = Field(
        default=400, description="Requests without a valid key an address may send at once."
    )
    auth_failure_rate_limit_per_second: NonNegativeFloat = Field(
        default=20.0,
        description="With auth on: failed authentications per second per client address "
        "(key guessing); 0 = off.",
    )
    auth_failure_rate_limit_burst: PositiveInt = Field(
        default=40, description="Failed authentications an address may make at once before 429."
    )
    trusted_proxies: Annotated[str, AfterValidator(check_trusted_proxies)] = Field(
        default="",
        description="Reverse proxies (IPs, CIDRs; comma-separated) whose X-Forwarded-For gives "
        "the client address; empty: the peer address is the client's.",
    )
    max_concurrent_requests: NonNegativeInt = Field(
        default=64, description="Requests handled at once; more get 503 (0 = no limit)."
    )
    shutdown_timeout: PositiveInt = Field(
        default=30, description="Seconds SIGTERM waits for in-flight requests to finish."
    )
    idempotency_key_retention_seconds: PositiveInt = Field(
        default=86_400,
        description="How long the answer of a write sent with an Idempotency-Key is kept: a "
        "retry with the same key within it gets that answer instead of writing again.",
    )
    diagnostics_max_concurrent: PositiveInt = Field(
        default=2,
        description="Diagnostics computed at once by this process; more get 429 "
        "diagnostics_busy with Retry-After.",
    )
    diagnostics_max_concurrent_per_tenant: PositiveInt = Field(
        default=1, description="Diagnostics computed at once for one tenant in this process."
    )
    max_image_side: PositiveInt = Field(
        default=16384,
        description="Longest image side (width or height) accepted, checked before decoding: "
        "a long, thin image costs far more to decode and resize than its pixels suggest.",
    )
    adapt_max_examples: PositiveInt = Field(
        default=20_000,
        description="Largest collection (in examples) that POST .../adaptations adapts; larger "
        "ones get 422 collection_too_large.",
    )
    adapt_max_seconds: PositiveFloat = Field(
        default=600.0,
        description="Longest an adaptation job may run; then it fails and nothing is adopted.",
    )
    adapt_max_concurrent: PositiveInt = Field(
        default=1,
        description="Adaptation jobs run at once by this process (each trained in a child "
        "process of lower priority than queries); more get 429 adaptation_busy with "
        "Retry-After.",
    )
    batch_max_tokens: PositiveInt = Field(
        default=512,
        description="Most word pieces (estimated from the texts' lengths) in one micro-batch "
        "of a text model's encoder; larger requests are encoded in parts that take turns with "
        "other requests'.",
    )

    @model_validator(mode="after")
    def _one_model_configuration(self) -> Self:
        if self.models and "checkpoint" in self.model_fields_set:
            raise ValueError("set PROTONET_MODELS or PROTONET_CHECKPOINT, not both")
        names = list(self.served_models())
        if self.default_model is not None and self.default_model not in names:
            raise ValueError(
                f"PROTONET_DEFAULT_MODEL {self.default_model!r} is not one of the served "
                f"models ({', '.join(names)})"
            )
        return self

    def served_models(self) -> dict[str, Path]:
        """``name -> checkpoint`` of every model to serve, in configuration order."""
        return model_list(self.models) or {SINGLE_MODEL_NAME: self.checkpoint}

    def resolved_default_model(self) -> str:
        """PROTONET_DEFAULT_MODEL, else the first served model."""
        return self.default_model or next(iter(self.served_models()))

    def index_directory(self) -> Path:
        """Where IVF indexes are persisted between starts."""
        return self.data_dir / "indexes"

    def resolved_sync_interval(self) -> float:
        """Seconds between polls of the change feed (see ``sync_interval_ms``)."""
        if self.sync_interval_ms is not None:
            return self.sync_interval_ms / 1000
        return 1.0 if self.resolved_database_url().startswith("postgresql") else 0.05

    def resolved_database_url(self) -> str:
        """``database_url`` if set, else ``sqlite:///<data_dir>/protonet.sqlite3``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / DATABASE_FILE).resolve()}"


def variable_of(field: str) -> str:
    """The environment variable of a :class:`Settings` field: ``port`` -> ``PROTONET_PORT``."""
    return f"{ENV_PREFIX}{field.upper()}"


def explain_settings_error(error: ValidationError) -> list[str]:
    """One line per problem of :class:`Settings`, naming its variable, without pydantic's
    field names, type codes and links."""
    lines = []
    for problem in error.errors(include_url=False):
        message = problem["msg"]
        if problem["type"] == "value_error":  # our validators' ValueError: its message alone
            message = str(problem["ctx"]["error"])
        variables = ", ".join(variable_of(str(part)) for part in problem["loc"])
        lines.append(f"{variables}: {message}" if variables else message)
    return lines


def settings_help() -> str:
    """What ``python -m service`` serves by default, and its main settings with their
    defaults and descriptions, read from :class:`Settings` so that the help cannot drift."""
    default = Settings.model_construct()  # the defaults, not this environment's values
    serves = (
        f"By default it serves the bundled model {BUNDLED_CHECKPOINT} (as model "
        f"'{SINGLE_MODEL_NAME}') on http://{default.host}:{default.port}, with its database "
        f"in {default.data_dir / DATABASE_FILE} (SQLite), relative to the working directory."
    )
    lines = [*textwrap.wrap(serves, HELP_WIDTH), "", "main settings (with their defaults):"]
    for name in MAIN_SETTINGS:
        lines.append(f"  {variable_of(name)}={shown(getattr(default, name))}")
        description = Settings.model_fields[name].description or ""
        lines += textwrap.wrap(
            description, HELP_WIDTH, initial_indent=" " * 6, subsequent_indent=" " * 6
        )
    lines += ["", "All settings: docs/service.md (Settings) and docs/security-and-deployment.md."]
    return "\n".join(lines)


def shown(value: Any) -> str:
    """A default as it would be written in the environment."""
    if value is None or value == "":
        return "(unset)"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)

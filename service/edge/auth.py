"""API keys, tenants and roles.

Keys come from configuration (``PROTONET_API_KEYS`` inline, ``PROTONET_API_KEYS_FILE``), each
bound to a tenant and a role. Only the SHA-256 of a key is kept: the key itself is dropped as
soon as it is parsed, and logs name a key by a prefix of its hash (``key_id``). A presented
key is hashed and compared against every configured hash with :func:`hmac.compare_digest`,
without stopping at a match, so the time taken says nothing about which key (if any) matched.

Roles: ``read`` (model, embed, list, describe, query), ``write`` (also create/delete
collections, add support, delete classes), ``admin`` (everything, in any tenant: the
``X-Protonet-Tenant`` header picks which). With auth off every request is an admin of the
``default`` tenant, so local use needs no key.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from service.errors import ForbiddenError, UnauthenticatedError

TENANT_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
# Where every request acts when auth is off; also where the collections made before tenants
# existed are (the schema migration that added tenants put them there).
DEFAULT_TENANT = "default"
TENANT_HEADER = "X-Protonet-Tenant"
MIN_KEY_LENGTH = 16  # short keys can be guessed; generate them with e.g. `openssl rand -hex 24`


class Role(enum.StrEnum):
    READ = "read"
    WRITE = "write"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return list(Role).index(self)


class KeyConfigError(ValueError):
    """The configured keys cannot be used; raised at startup, never per request."""


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: a key (by hash prefix), its tenant and its role."""

    key_id: str
    tenant: str
    role: Role


ANONYMOUS = Principal(key_id="anonymous", tenant=DEFAULT_TENANT, role=Role.ADMIN)


@dataclass(frozen=True)
class StoredKey:
    key_hash: str
    principal: Principal


def parse_entry(entry: str, where: str) -> StoredKey:
    """``key:tenant:role`` (split from the right, so a key may contain ':')."""
    parts = entry.strip().rsplit(":", 2)
    if len(parts) != 3:
        raise KeyConfigError(f"{where}: expected 'key:tenant:role'")
    key, tenant, role = parts
    return make_key(key, tenant, role, where)


def make_key(key: str, tenant: str, role: str, where: str) -> StoredKey:
    # Messages never quote the key itself: they end up in logs and crash reports.
    if len(key) < MIN_KEY_LENGTH:
        raise KeyConfigError(f"{where}: the key is shorter than {MIN_KEY_LENGTH} characters")
    if not re.fullmatch(TENANT_PATTERN, tenant):
        raise KeyConfigError(f"{where}: tenant {tenant!r} does not match {TENANT_PATTERN}")
    if role not in Role.__members__.values():
        raise KeyConfigError(f"{where}: role {role!r} is not one of read, write, admin")
    key_hash = hash_key(key)
    return StoredKey(key_hash, Principal(key_hash[:12], tenant, Role(role)))


def parse_entries(text: str, source: str) -> list[StoredKey]:
    """Entries separated by commas or newlines; blank lines and ``#`` comments are skipped."""
    entries = [line.split("#", 1)[0] for line in text.splitlines()]
    items = [item.strip() for line in entries for item in line.split(",")]
    return [parse_entry(item, f"{source} entry {n}") for n, item in enumerate(items, 1) if item]


def parse_json_keys(text: str, source: str) -> list[StoredKey]:
    """A JSON list of ``{"key": ..., "tenant": ..., "role": ...}`` objects."""
    try:
        items = json.loads(text)
    except json.JSONDecodeError as error:
        raise KeyConfigError(f"{source}: not valid JSON ({error.msg})") from None
    if not isinstance(items, list):
        raise KeyConfigError(f"{source}: expected a JSON list of key objects")
    keys = []
    for n, item in enumerate(items, 1):
        if not isinstance(item, dict) or {"key", "tenant", "role"} - item.keys():
            raise KeyConfigError(f"{source} entry {n}: needs 'key', 'tenant' and 'role'")
        key, tenant, role = (str(item[field]) for field in ("key", "tenant", "role"))
        keys.append(make_key(key, tenant, role, f"{source} entry {n}"))
    return keys


def load_keys(inline: str | None, path: Path | None) -> list[StoredKey]:
    """Every configured key; :class:`KeyConfigError` on a bad entry or a duplicate key."""
    keys = parse_entries(inline, "PROTONET_API_KEYS") if inline else []
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise KeyConfigError(f"PROTONET_API_KEYS_FILE {path}: {error.strerror}") from None
        parse = parse_json_keys if text.lstrip()[:1] == "[" else parse_entries
        keys += parse(text, f"PROTONET_API_KEYS_FILE {path}")
    hashes = [key.key_hash for key in keys]
    if len(set(hashes)) != len(hashes):
        raise KeyConfigError("the same API key is configured twice")
    return keys


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key of ``Authorization: Bearer <key>`` or ``X-API-Key``; 401 if they disagree."""
    bearer = None
    authorization = headers.get("authorization")
    if authorization is not None:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise UnauthenticatedError("use 'Authorization: Bearer <API key>' or 'X-API-Key'")
        bearer = value.strip()
    header_key = headers.get("x-api-key")
    if bearer is not None and header_key is not None and bearer != header_key:
        raise UnauthenticatedError("Authorization and X-API-Key carry different keys")
    return bearer if bearer is not None else header_key


class Authenticator:
    """Maps request headers to a :class:`Principal` (or :class:`UnauthenticatedError`)."""

    def __init__(self, keys: Iterable[StoredKey], enabled: bool) -> None:
        self.enabled = enabled
        self._keys = list(keys)
        if enabled and not self._keys:
            raise KeyConfigError(
                "PROTONET_AUTH_ENABLED is true but no keys are configured: "
                "set PROTONET_API_KEYS or PROTONET_API_KEYS_FILE"
            )

    def authenticate(self, headers: Mapping[str, str]) -> Principal:
        if not self.enabled:
            return ANONYMOUS
        key = presented_key(headers)
        if key is None:
            raise UnauthenticatedError(
                "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
            )
        return self._match(hash_key(key))

    def _match(self, candidate: str) -> Principal:
        found = None
        for stored in self._keys:  # no early exit: constant time in the number of keys
            if hmac.compare_digest(candidate, stored.key_hash):
                found = stored.principal
        if found is None:
            raise UnauthenticatedError("invalid API key")
        return found


def authorize(principal: Principal, required: Role, tenant: str | None) -> str:
    """The tenant a request acts in; :class:`ForbiddenError` if the key may not do it."""
    if principal.role.rank < required.rank:
        raise ForbiddenError(
            f"this API key has the '{principal.role}' role; this operation needs '{required}'"
        )
    if tenant is not None and tenant != principal.tenant and principal.role != Role.ADMIN:
        raise ForbiddenError(f"only admin keys may act in another tenant ({TENANT_HEADER})")
    return tenant or principal.tenant

"""API keys, tenants, roles and per-key limits: the authentication core of the gRPC and HTTP front ends."""

from __future__ import annotations

import contextvars
import hashlib
import math
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, field_validator

from services.common.errors import PermissionDenied, ResourceExhausted, Unauthenticated
from services.common.settings import Section, is_placeholder

DEFAULT_TENANT = "default"
KEY_PREFIX = "crl_"
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")

Role = Literal["tenant", "service", "admin"]


class Access(IntEnum):
    """What a method needs; a key's role grants every level up to its own."""

    OPEN = 0
    TENANT = 1
    SERVICE = 2
    ADMIN = 3


_ROLE_ACCESS: dict[str, Access] = {"tenant": Access.TENANT, "service": Access.SERVICE, "admin": Access.ADMIN}


class ApiKeyEntry(Section):
    """One API key as stored at rest: only its SHA-256 is kept.

    Attributes:
        key_sha256: Hex SHA-256 of the key (`scripts/make_api_key.py` prints it with a new key).
        name: A label for logs and errors (never the key itself).
        tenant: The tenant every request made with this key acts for; it scopes the cache.
        role: "tenant" (the router's API), "service" (also Corral's internal RPCs) or "admin" (everything).
        rate_per_s: Sustained requests per second; 0 means no rate limit.
        burst: Requests allowed at once above the rate (token bucket size); default: the rate, at least 1.
        max_concurrent: Requests in progress at once (streams count until they end); 0 means no limit.
    """

    key_sha256: str
    name: str = ""
    tenant: str = DEFAULT_TENANT
    role: Role = "tenant"
    rate_per_s: float = Field(default=0.0, ge=0)
    burst: int | None = Field(default=None, ge=1)
    max_concurrent: int = Field(default=0, ge=0)

    @field_validator("key_sha256")
    @classmethod
    def _is_sha256(cls, value: str) -> str:
        value = value.strip().lower()
        if not _SHA256_HEX.match(value):
            raise ValueError("must be the 64 hex digits of the key's SHA-256 (never the key itself)")
        return value

    @field_validator("tenant")
    @classmethod
    def _tenant_name(cls, value: str) -> str:
        if not _TENANT.match(value):
            raise ValueError("1-128 characters: letters, digits, '.', '_', ':' or '-'")
        return value


class AuthConfig(Section):
    """Authentication and authorisation (off by default for the local demo).

    Attributes:
        enabled: Require an API key on every RPC and HTTP route except health checks.
        keys: The accepted keys (hashed).
        keys_file: A YAML or JSON file with more keys (a list of entries, or `{keys: [...]}`); read
            at start-up, e.g. mounted from a Kubernetes Secret.
        service_key: The raw key this process presents when it calls other Corral services.
        service_key_file: A file holding that key (preferred over `service_key` in deployments).
    """

    enabled: bool = False
    keys: list[ApiKeyEntry] = Field(default_factory=list)
    keys_file: str = ""
    service_key: str = ""
    service_key_file: str = ""


class AuthSetupError(Exception):
    """The auth configuration cannot be used; the message names the problem in one line."""


@dataclass(frozen=True)
class Principal:
    """Who a request acts as, from its key.

    Attributes:
        name: The key's label (or the first 8 hex digits of its hash).
        tenant: The tenant that scopes the request and its cache entries.
        role: The key's role.
    """

    name: str
    tenant: str
    role: Role

    @property
    def access(self) -> Access:
        """The highest access level the key grants."""
        return _ROLE_ACCESS[self.role]


_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("corral_principal", default=None)


def set_principal(principal: Principal | None) -> None:
    """Sets the caller of the current request (the front ends do, before the handler runs)."""
    _current.set(principal)


def current_principal() -> Principal | None:
    """The caller of the current request; None when authentication is off."""
    return _current.get()


def current_tenant() -> str:
    """The tenant of the current request: the key's tenant, or "default" when authentication is off."""
    principal = _current.get()
    return DEFAULT_TENANT if principal is None else principal.tenant


def require_access(needed: Access, what: str) -> None:
    """Checks that the current caller may do `what`; anyone may when authentication is off.

    For routes whose front end admits a lower role than one operation needs (the HTTP API admits
    any key; model management needs an admin key).

    Raises:
        PermissionDenied: The caller's key has a lower role; the message names the role required.
    """
    principal = _current.get()
    if principal is not None:
        _check_access(principal, needed, what)


def _check_access(principal: Principal, needed: Access, what: str) -> None:
    if principal.access < needed:
        role = needed.name.lower()
        article = "an" if role[0] in "aeiou" else "a"
        raise PermissionDenied(
            f"{what} needs {article} {role} key; key '{principal.name}' has role {principal.role}",
            reason=f"{needed.name}_KEY_REQUIRED",
        )


def hash_key(raw_key: str) -> str:
    """The hex SHA-256 of a key, as stored in the configuration.

    NOTE: keys are 256-bit random tokens, not passwords, so an unsalted fast hash is enough: there
    is nothing to brute-force, and the lookup stays one dictionary access per request.
    """
    return hashlib.sha256(raw_key.encode("utf-8")).hexdigest()


def new_key() -> str:
    """A new random API key (`crl_` + 43 URL-safe characters, 256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def parse_bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value, or None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token or None


class RateLimited(ResourceExhausted):
    """A key is over its rate limit; `retry_after_s` says when a token is back."""

    default_reason = "RATE_LIMITED"
    retry_after_s: float

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class TokenBucket:
    """A token bucket: `rate_per_s` tokens per second up to `burst` (the classic rate limiter)."""

    def __init__(self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate_per_s
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._last = clock()

    def take(self) -> float:
        """Takes one token; returns 0 on success, else the seconds until one is available."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self._rate


@dataclass
class KeyState:
    """A key's principal and its live limits."""

    principal: Principal
    bucket: TokenBucket | None
    max_concurrent: int
    in_flight: int = 0


class Authenticator:
    """Checks keys, roles and per-key limits; shared by the gRPC interceptor and the HTTP middleware.

    Args:
        entries: The accepted keys.
        clock: Monotonic clock for the rate limits.
    """

    def __init__(self, entries: Iterable[ApiKeyEntry], clock: Callable[[], float] = time.monotonic) -> None:
        self._keys: dict[str, KeyState] = {}
        for entry in entries:
            burst = entry.burst if entry.burst is not None else max(1, math.ceil(entry.rate_per_s))
            bucket = TokenBucket(entry.rate_per_s, burst, clock) if entry.rate_per_s > 0 else None
            principal = Principal(entry.name or entry.key_sha256[:8], entry.tenant, entry.role)
            self._keys[entry.key_sha256] = KeyState(principal, bucket, entry.max_concurrent)

    def __len__(self) -> int:
        return len(self._keys)

    def authenticate(self, raw_key: str | None) -> KeyState:
        """The state of a presented key.

        Raises:
            Unauthenticated: No key, or a key that is not configured.
        """
        if not raw_key:
            raise Unauthenticated(
                "missing API key: send 'authorization: Bearer <key>'", reason="API_KEY_MISSING"
            )
        state = self._keys.get(hash_key(raw_key))
        if state is None:
            raise Unauthenticated("invalid API key", reason="API_KEY_INVALID")
        return state

    @staticmethod
    def authorize(state: KeyState, needed: Access, what: str) -> None:
        """Checks that the key's role grants `needed` for `what` (a method or route).

        Raises:
            PermissionDenied: The role is too low; the message names the role required.
        """
        _check_access(state.principal, needed, what)

    @staticmethod
    def admit(state: KeyState) -> None:
        """Takes a token from the key's rate limit.

        Raises:
            ResourceExhausted: The key is over its rate (reason RATE_LIMITED; `retry_after_s` set).
        """
        if state.bucket is None:
            return
        wait_s = state.bucket.take()
        if wait_s > 0:
            raise RateLimited(
                f"rate limit of key '{state.principal.name}' exceeded; retry in {wait_s:.2f} s", wait_s
            )

    @staticmethod
    def enter(state: KeyState) -> None:
        """Counts one request in progress for the key.

        Raises:
            ResourceExhausted: The key has `max_concurrent` requests in progress (reason CONCURRENCY_LIMITED).
        """
        if state.max_concurrent and state.in_flight >= state.max_concurrent:
            raise ResourceExhausted(
                f"key '{state.principal.name}' has {state.in_flight} requests in progress "
                f"(limit {state.max_concurrent})",
                reason="CONCURRENCY_LIMITED",
            )
        state.in_flight += 1

    @staticmethod
    def leave(state: KeyState) -> None:
        """Ends one request in progress."""
        state.in_flight = max(0, state.in_flight - 1)


def _read_keys_file(path: str) -> list[ApiKeyEntry]:
    file = Path(path)
    if not file.is_file():
        raise AuthSetupError(f"auth.keys_file {file} not found")
    try:
        loaded = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise AuthSetupError(f"auth.keys_file {file}: not valid YAML or JSON") from exc
    if isinstance(loaded, dict):
        loaded = loaded.get("keys")
    if loaded is None:
        return []
    if not isinstance(loaded, list):
        raise AuthSetupError(f"auth.keys_file {file}: expected a list of keys or {{keys: [...]}}")
    entries = []
    for index, item in enumerate(loaded):
        try:
            entries.append(ApiKeyEntry.model_validate(item))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "(entry)"
            raise AuthSetupError(f"auth.keys_file {file}: keys[{index}].{where}: {err['msg']}") from None
    return entries


def build_authenticator(cfg: AuthConfig) -> Authenticator | None:
    """The authenticator for a service, or None when authentication is off.

    Raises:
        AuthSetupError: The keys file is missing or malformed, or auth is on without any key.
    """
    if not cfg.enabled:
        return None
    entries = list(cfg.keys)
    if cfg.keys_file:
        entries += _read_keys_file(cfg.keys_file)
    if not entries:
        raise AuthSetupError("auth.enabled is true but no keys are configured (auth.keys or auth.keys_file)")
    return Authenticator(entries)


def service_key(cfg: AuthConfig) -> str:
    """The raw key this process presents to its peers ("" for none).

    Raises:
        AuthSetupError: `service_key_file` is set but cannot be read, or holds the example's placeholder.
    """
    if cfg.service_key_file:
        file = Path(cfg.service_key_file)
        try:
            key = file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise AuthSetupError(f"auth.service_key_file {file}: {exc.strerror}") from None
        if is_placeholder(key):
            raise AuthSetupError(
                f"auth.service_key_file {file} is still the example's placeholder: write the real key there "
                "(python -m scripts.make_compose_keys writes it, --kubernetes for the example overlay)"
            )
        return key
    return cfg.service_key.strip()

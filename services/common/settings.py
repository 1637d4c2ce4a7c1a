"""Base classes for Corral's typed configuration sections."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Section(BaseModel):
    """A configuration section: frozen, and an unknown key is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerTlsConfig(Section):
    """TLS of a service's listening ports (gRPC, and the router's HTTP API).

    Attributes:
        cert_file: PEM certificate chain of the server.
        key_file: PEM private key of the server.
        client_ca_file: PEM CA bundle; when set, clients must present a certificate it signed (mutual TLS).
    """

    cert_file: str
    key_file: str
    client_ca_file: str = ""


class ClientTlsConfig(Section):
    """How this process dials the other Corral services (see services/common/tls.py).

    Attributes:
        enabled: Use TLS towards Corral peers.
        ca_file: PEM CA bundle that signed the peers' certificates ("" = the system roots).
        cert_file: PEM client certificate, for peers that require mutual TLS.
        key_file: PEM private key of the client certificate.
        server_name: Expected name in the peers' certificates when it differs from the dialled host.
    """

    enabled: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    server_name: str = ""


class ServiceConfig(Section):
    """Settings every gRPC service shares.

    Attributes:
        host: Address the gRPC server binds to.
        port: gRPC port; 0 picks a free port (the bound port is printed at start-up).
        metrics_port: Prometheus metrics port; 0 disables the endpoint.
        grace_s: How long in-flight calls may run after SIGTERM before they are cancelled.
        enable_reflection: Serve gRPC server reflection.
        max_concurrent_rpcs: Calls beyond this get RESOURCE_EXHAUSTED; None means no limit.
        max_message_bytes: Largest request or response message accepted.
        debug_rpcs: Serve `/corral.debug.DebugService/Sleep` (tests of graceful shutdown); off in production.
        tls: Serve TLS (mutual TLS with `client_ca_file`); None serves plaintext.
        max_connection_age_s: A client connection is closed (GOAWAY) after this long, so that clients
            re-resolve the service's name and spread over replicas added since; None keeps connections.
        max_connection_age_grace_s: Calls still running on a connection past its age get this long.
    """

    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)
    metrics_port: int = Field(default=0, ge=0, le=65535)
    grace_s: float = Field(default=10.0, ge=0)
    enable_reflection: bool = True
    max_concurrent_rpcs: int | None = Field(default=None, ge=1)
    max_message_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    debug_rpcs: bool = False
    tls: ServerTlsConfig | None = None
    max_connection_age_s: float | None = Field(default=None, gt=0)
    max_connection_age_grace_s: float = Field(default=30.0, ge=0)

    @field_validator("port", "metrics_port", check_fields=False)
    @classmethod
    def _port_in_range(cls, value: int) -> int:
        # NOTE: a validator, not Field bounds, so services that override the default port keep the check.
        if not 0 <= value <= 65535:
            raise ValueError("must be a TCP port between 0 and 65535")
        return value


class LoggingConfig(Section):
    """Logging settings: JSON lines on stdout by default."""

    level: str = "INFO"
    json_format: bool = True
    access_log: bool = True


class TracingConfig(Section):
    """OpenTelemetry settings.

    Attributes:
        exporter: "none", "console", "otlp-grpc" or "otlp-http".
        endpoint: The OTLP endpoint (collector address).
        sample_ratio: Share of new traces that are recorded (a parent's decision is kept).
        capture_content: Record prompts and answers in spans (off: privacy by default).
    """

    exporter: Literal["none", "console", "otlp-grpc", "otlp-http"] = "none"
    endpoint: str = ""
    sample_ratio: float = Field(default=1.0, ge=0, le=1)
    capture_content: bool = False


# NOTE: the mark of every placeholder in the deployment examples (deploy/kubernetes/overlays/example/
# secrets/*.example); "change-me" was the example overlay's PostgreSQL password before those files.
PLACEHOLDER_MARK = "REPLACE-ME"
_OLD_PLACEHOLDERS = frozenset({"change-me"})


class SecretError(Exception):
    """A password setting cannot be used; the message names the setting and what to do."""


def is_placeholder(value: str) -> bool:
    """True for a deployment example's placeholder, which must never be used as a secret."""
    return PLACEHOLDER_MARK in value or value.strip() in _OLD_PLACEHOLDERS


def read_secret(setting: str, value: str, file: str) -> str | None:
    """The secret set inline (`<setting>`) or in a file (`<setting>_file`); None when neither is set.

    The file's trailing line breaks are dropped, as the shell's `$(cat FILE)` drops them, so a store
    that reads the same file that way (the deployment examples' Redis) sees the same password.

    Raises:
        SecretError: Both are set, the file cannot be read or is empty, or the value is a placeholder.
    """
    source = setting
    if value and file:
        raise SecretError(f"{setting} and {setting}_file are both set: keep one")
    if file:
        source = f"{setting}_file {file}"
        try:
            value = Path(file).read_text(encoding="utf-8").rstrip("\n")
        except OSError as exc:
            raise SecretError(f"{source}: {exc.strerror}") from None
        if not value:
            raise SecretError(f"{source} is empty")
    if not value:
        return None
    if is_placeholder(value):
        raise SecretError(
            f"{source} is still the example's placeholder: write the real password there "
            "(python -m scripts.make_compose_keys writes one, --kubernetes for the example overlay)"
        )
    return value


class RedisConfig(Section):
    """Where the exact cache tier lives, and the password it requires.

    Attributes:
        url: `redis://HOST:PORT/DB` (a password in the URL works too; deployments use password_file).
        password: Redis's password (its `requirepass`), inline; "" for none.
        password_file: A file holding it instead (the deployments' Secret or compose secret).
    """

    url: str = "redis://127.0.0.1:6390/0"
    password: str = ""
    password_file: str = ""

    def resolved_password(self) -> str | None:
        """The password to authenticate with, from `password` or `password_file`; None for the URL's own.

        Raises:
            SecretError: See `read_secret`.
        """
        return read_secret("redis.password", self.password, self.password_file)


class PostgresConfig(Section):
    """Where the semantic cache tier lives, and the password of its role.

    Attributes:
        dsn: A libpq connection string or URI (without the password in deployments).
        password: The role's password, inline; "" for the DSN's own (or none).
        password_file: A file holding it instead (the deployments' Secret or compose secret).
    """

    dsn: str = "postgresql://corral@127.0.0.1:5439/corral"
    password: str = ""
    password_file: str = ""

    def resolved_dsn(self) -> str:
        """`dsn` with the resolved password in it (the DSN as it is when no password is set).

        Raises:
            SecretError: See `read_secret`.
        """
        password = self.resolved_password()
        if password is None:
            return self.dsn
        # NOTE: imported here so that services without PostgreSQL do not load psycopg at start-up.
        from psycopg.conninfo import make_conninfo

        return make_conninfo(self.dsn, password=password)

    def resolved_password(self) -> str | None:
        """The password to connect with, from `password` or `password_file`; None for the DSN's own.

        Raises:
            SecretError: See `read_secret`.
        """
        return read_secret("postgres.password", self.password, self.password_file)

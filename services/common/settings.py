"""Base classes for Corral's typed configuration sections."""

from __future__ import annotations

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


class RedisConfig(Section):
    """Where the exact cache tier lives."""

    url: str = "redis://127.0.0.1:6390/0"


class PostgresConfig(Section):
    """Where the semantic cache tier lives."""

    dsn: str = "postgresql://corral@127.0.0.1:5439/corral"

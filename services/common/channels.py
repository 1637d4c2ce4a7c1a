"""Client channels to Corral's own services: one long-lived channel per peer."""

from __future__ import annotations

import json
from dataclasses import dataclass

import grpc

from services.common import auth_grpc, tls
from services.common.settings import ClientTlsConfig

# NOTE: AIP-194 — clients retry automatically only UNAVAILABLE, and only for idempotent calls;
# the services opt in per method with `wait_for_ready`/their own retry loops where needed.
_KEEPALIVE_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


@dataclass(frozen=True)
class PeerSecurity:
    """How this process dials Corral peers: TLS settings and the service key it presents."""

    tls: ClientTlsConfig | None = None
    api_key: str = ""


_peer_security = PeerSecurity()


def configure_peers(security: PeerSecurity) -> None:
    """Sets, once at start-up, the TLS and service key every later make_channel uses by default."""
    global _peer_security
    _peer_security = security


def make_channel(
    address: str,
    *,
    service_config: dict[str, object] | None = None,
    security: PeerSecurity | None = None,
) -> grpc.aio.Channel:
    """Opens an aio channel with keepalive and quick reconnects (TLS and a key as configured).

    Args:
        address: "host:port" of the peer.
        service_config: An optional gRPC service config (e.g. a retry policy for idempotent calls).
        security: TLS and API key for this channel; None uses what configure_peers set.
    """
    chosen = _peer_security if security is None else security
    options: list[tuple[str, int | str]] = list(_KEEPALIVE_OPTIONS)
    if service_config is not None:
        options.append(("grpc.service_config", json.dumps(service_config)))
    interceptors = auth_grpc.key_interceptors(chosen.api_key) if chosen.api_key else None
    if chosen.tls is not None and chosen.tls.enabled:
        options += tls.channel_options(chosen.tls)
        credentials = tls.channel_credentials(chosen.tls)
        return grpc.aio.secure_channel(address, credentials, options=options, interceptors=interceptors)
    return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)

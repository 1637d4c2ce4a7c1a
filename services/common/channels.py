"""Client channels to Corral's own services: one long-lived channel per peer."""

from __future__ import annotations

import json

import grpc

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


def make_channel(address: str, *, service_config: dict[str, object] | None = None) -> grpc.aio.Channel:
    """Opens an insecure aio channel with keepalive and quick reconnects.

    Args:
        address: "host:port" of the peer.
        service_config: An optional gRPC service config (e.g. a retry policy for idempotent calls).
    """
    options: list[tuple[str, int | str]] = list(_KEEPALIVE_OPTIONS)
    if service_config is not None:
        options.append(("grpc.service_config", json.dumps(service_config)))
    return grpc.aio.insecure_channel(address, options=options)

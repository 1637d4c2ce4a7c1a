"""Keys and in-process servers with authentication for the security tests."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from corral.v1 import health_service_pb2, health_service_pb2_grpc

from services.common.auth import ApiKeyEntry, Authenticator, hash_key
from services.common.auth_grpc import AuthInterceptor
from services.common.server import build_server, set_serving
from services.common.settings import ServerTlsConfig
from services.health.config import HealthConfig
from services.health.engine import HealthEngine
from services.health.prober import Prober
from services.health.servicer import HealthServicer

TENANT_A_KEY = "crl_tenant-a-test-key"
TENANT_B_KEY = "crl_tenant-b-test-key"
SERVICE_KEY = "crl_service-test-key"
ADMIN_KEY = "crl_admin-test-key"
HEALTH_SERVICE = health_service_pb2.DESCRIPTOR.services_by_name["HealthService"].full_name


def key_entries(**limits: float) -> list[ApiKeyEntry]:
    """Four keys: two tenants, a service and an admin; `limits` apply to tenant A."""
    return [
        ApiKeyEntry(key_sha256=hash_key(TENANT_A_KEY), name="a", tenant="tenant-a", **limits),  # type: ignore[arg-type]
        ApiKeyEntry(key_sha256=hash_key(TENANT_B_KEY), name="b", tenant="tenant-b"),
        ApiKeyEntry(key_sha256=hash_key(SERVICE_KEY), name="svc", tenant="seed", role="service"),
        ApiKeyEntry(key_sha256=hash_key(ADMIN_KEY), name="ops", tenant="ops", role="admin"),
    ]


def keys_env(**limits: float) -> str:
    """The keys as a JSON list for `CORRAL_AUTH__KEYS`."""
    import json

    return json.dumps([entry.model_dump() for entry in key_entries(**limits)])


def bearer(key: str) -> tuple[tuple[str, str]]:
    """gRPC metadata carrying a key."""
    return (("authorization", f"Bearer {key}"),)


class FrozenClock:
    """A clock that moves only when told (rate limits without timing)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class AuthedHealth:
    """A real health service (no nodes) behind the auth interceptor."""

    server: grpc.aio.Server
    port: int
    engine: HealthEngine

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        self.engine.hub.close()
        await self.server.stop(None)
        await self.engine.stop()


async def start_authed_health(
    authenticator: Authenticator | None, tls: ServerTlsConfig | None = None
) -> AuthedHealth:
    """The health service on a free port with the production interceptors (and auth, TLS when given)."""
    cfg = HealthConfig(port=0, nodes=[], tls=tls)
    interceptors = [AuthInterceptor(authenticator, "health.corral")] if authenticator is not None else []
    server, port, health = build_server(
        cfg, (HEALTH_SERVICE,), domain="health.corral", access_log=False, interceptors=interceptors
    )
    engine = HealthEngine(cfg, Prober(cfg.probe_timeout_s))
    health_service_pb2_grpc.add_HealthServiceServicer_to_server(HealthServicer(engine), server)
    await engine.start()
    await server.start()
    await set_serving(health, (HEALTH_SERVICE,), True)
    return AuthedHealth(server, port, engine)

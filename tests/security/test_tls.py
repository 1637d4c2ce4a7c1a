"""TLS and mutual TLS: gRPC servers and channels, the HTTP API, and start-up errors."""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp
import grpc
import pytest
from corral.v1 import health_service_pb2 as hpb
from corral.v1 import health_service_pb2_grpc

from services.common.channels import PeerSecurity, make_channel
from services.common.settings import ClientTlsConfig, ServerTlsConfig
from services.common.tls import client_ssl_context
from services.router.config import RouterConfig
from services.router.http.app import start_http_server
from tests.helpers.procs import ServiceProcess
from tests.http.fake_core import FakeCore
from tests.security.helpers import start_authed_health

pytestmark = pytest.mark.timeout(60)


def server_tls(certs: Path, mutual: bool) -> ServerTlsConfig:
    return ServerTlsConfig(
        cert_file=str(certs / "server.pem"),
        key_file=str(certs / "server-key.pem"),
        client_ca_file=str(certs / "ca.pem") if mutual else "",
    )


def client_tls(certs: Path, with_cert: bool, server_name: str = "") -> ClientTlsConfig:
    return ClientTlsConfig(
        enabled=True,
        ca_file=str(certs / "ca.pem"),
        cert_file=str(certs / "corral-router.pem") if with_cert else "",
        key_file=str(certs / "corral-router-key.pem") if with_cert else "",
        server_name=server_name,
    )


async def _list_nodes(channel: grpc.aio.Channel) -> None:
    await health_service_pb2_grpc.HealthServiceStub(channel).ListNodes(hpb.ListNodesRequest(), timeout=3)


async def test_mtls_service_refuses_a_client_without_a_certificate(certs: Path) -> None:
    health = await start_authed_health(None, tls=server_tls(certs, mutual=True))
    try:
        without = make_channel(health.address, security=PeerSecurity(tls=client_tls(certs, with_cert=False)))
        plaintext = make_channel(health.address, security=PeerSecurity())
        with_cert = make_channel(health.address, security=PeerSecurity(tls=client_tls(certs, with_cert=True)))
        try:
            for refused in (without, plaintext):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await _list_nodes(refused)
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            await _list_nodes(with_cert)
        finally:
            for channel in (without, plaintext, with_cert):
                await channel.close()
    finally:
        await health.stop()


async def test_tls_without_client_certificates(certs: Path) -> None:
    health = await start_authed_health(None, tls=server_tls(certs, mutual=False))
    try:
        # The server certificate names localhost, 127.0.0.1 and the service names.
        targets = ((health.address, ""), (f"localhost:{health.port}", ""), (health.address, "cache"))
        for address, name in targets:
            channel = make_channel(address, security=PeerSecurity(tls=client_tls(certs, False, name)))
            try:
                await _list_nodes(channel)
            finally:
                await channel.close()
        wrong_name = make_channel(
            health.address, security=PeerSecurity(tls=client_tls(certs, False, "example.org"))
        )
        try:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await _list_nodes(wrong_name)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            await wrong_name.close()
    finally:
        await health.stop()


async def test_http_api_over_mutual_tls(certs: Path) -> None:
    cfg = RouterConfig(http_port=0, tls=server_tls(certs, mutual=True))
    runner, port = await start_http_server(FakeCore(), cfg)
    url = f"https://127.0.0.1:{port}/api/version"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(url, ssl=client_ssl_context(client_tls(certs, with_cert=True))) as resp:
                assert resp.status == 200
            with pytest.raises(aiohttp.ClientError):
                async with http.get(url, ssl=client_ssl_context(client_tls(certs, with_cert=False))):
                    pass
            with pytest.raises(aiohttp.ClientError):
                async with http.get(url, ssl=ssl.create_default_context()):
                    pass
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"CORRAL_HEALTH__TLS__CERT_FILE": "/nonexistent.pem", "CORRAL_HEALTH__TLS__KEY_FILE": "/x.pem"},
            "health.tls.cert_file/key_file",
        ),
        ({"CORRAL_AUTH__ENABLED": "true"}, "no keys are configured"),
        ({"CORRAL_AUTH__ENABLED": "true", "CORRAL_AUTH__KEYS_FILE": "/nonexistent.yaml"}, "keys_file"),
        ({"CORRAL_AUTH__KEYS": '[{"key_sha256": "abc"}]'}, "auth.keys.0.key_sha256"),
        ({"CORRAL_PEER_TLS__ENABLED": "true", "CORRAL_PEER_TLS__CA_FILE": "/nope.pem"}, "peer_tls.ca_file"),
    ],
)
async def test_bad_security_settings_exit_2_with_one_line(env: dict[str, str], expected: str) -> None:
    proc = ServiceProcess("services.health", env={"CORRAL_HEALTH__PORT": "0", **env})
    with pytest.raises(RuntimeError) as caught:
        await proc.start(timeout_s=45)
    assert proc.proc is not None and proc.proc.returncode == 2
    assert expected in str(caught.value), caught.value

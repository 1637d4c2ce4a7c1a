"""Each service runs as its own process: SERVING, reflection, graceful drain on SIGTERM, config errors."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from services.common.server import DEBUG_SLEEP_METHOD
from tests.helpers.procs import ROOT, ServiceProcess, base_env, free_port

SERVICES = {
    "router": "corral.v1.RouterService",
    "cache": "corral.v1.CacheService",
    "health": "corral.v1.HealthService",
    "prewarm": "corral.v1.PrewarmService",
}


def _list_services(port: int) -> list[str]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return list(ProtoReflectionDescriptorDatabase(channel).get_services())


@pytest.mark.parametrize("name", sorted(SERVICES))
async def test_service_serves_reflects_and_drains_on_sigterm(name: str) -> None:
    port = free_port()
    env = {
        f"CORRAL_{name.upper()}__PORT": str(port),
        f"CORRAL_{name.upper()}__DEBUG_RPCS": "true",
        f"CORRAL_{name.upper()}__GRACE_S": "20",
    }
    if name == "router":
        env["CORRAL_ROUTER__HTTP_PORT"] = str(free_port())
    if name == "cache":
        # NOTE: no node runs here; the default embedder (on the nodes) would hold SERVING back for
        # embedder.warmup_timeout_s (tests/cache/test_readiness.py covers that wait).
        env["CORRAL_CACHE__EMBEDDER__KIND"] = "hashing"
    proc = ServiceProcess(f"services.{name}", env=env)
    await proc.start()
    try:
        assert proc.port == port
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for service in ("", SERVICES[name]):
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING

            listed = await asyncio.to_thread(_list_services, port)
            assert SERVICES[name] in listed
            assert "grpc.health.v1.Health" in listed

            sleep = channel.unary_unary(DEBUG_SLEEP_METHOD)
            call = sleep(b"1500", timeout=30)
            # NOTE: the echo proves the call reached the handler before SIGTERM is sent.
            probe = await sleep(b"0", timeout=5)
            assert probe == b"0"
            proc.signal(15)
            assert await call == b"1500"
        assert await proc.wait(30) == 0
    finally:
        await proc.kill()


async def _run_with_config(name: str, path: str, extra: dict[str, str] | None = None) -> tuple[int, str]:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        f"services.{name}",
        env=base_env({"CORRAL_CONFIG": path, **(extra or {})}),
        cwd=str(ROOT),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(child.communicate(), 60)
    assert child.returncode is not None
    return child.returncode, (out + err).decode()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("router:\n  prot: 1\n", "unknown key 'router.prot'"),
        ("health:\n  port: lots\n", "'health.port'"),
        ("- just\n- a list\n", "top level must be a mapping"),
        ("router: [unclosed\n", "not valid YAML"),
    ],
)
async def test_bad_config_stops_with_one_clear_line(tmp_path: Path, body: str, expected: str) -> None:
    path = tmp_path / "corral.yaml"
    path.write_text(body)
    code, output = await _run_with_config("router", str(path))
    assert code == 2
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert expected in lines[0]
    assert "Traceback" not in output


async def test_missing_config_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    code, output = await _run_with_config("cache", str(missing))
    assert code == 2
    assert output.strip() == f"corral-cache: configuration error: config file {missing} not found"


async def test_wrong_type_from_environment_is_named(tmp_path: Path) -> None:
    path = tmp_path / "corral.yaml"
    path.write_text("{}\n")
    code, output = await _run_with_config("health", str(path), {"CORRAL_HEALTH__GRACE_S": "soon"})
    assert code == 2
    assert "'health.grace_s'" in output

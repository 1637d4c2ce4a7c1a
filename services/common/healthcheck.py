"""Container health check: `python -m services.common.healthcheck HOST:PORT` exits 0 when SERVING."""

from __future__ import annotations

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(target: str, service: str = "", timeout_s: float = 3.0) -> tuple[bool, str]:
    """Asks `grpc.health.v1.Health/Check` once, with a deadline.

    Args:
        target: HOST:PORT of the server.
        service: The service name to check; "" is the server's overall status.
        timeout_s: Deadline of the call.

    Returns:
        Whether the status is SERVING, and a one-line description.
    """
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError as exc:
            return False, f"{target}: {exc.code().name}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING, f"{target}: {status}"


def main(argv: list[str] | None = None) -> int:
    """Runs one check and returns the exit status (0 SERVING, 1 anything else)."""
    parser = argparse.ArgumentParser(prog="python -m services.common.healthcheck", description=__doc__)
    parser.add_argument("target", help="HOST:PORT of the gRPC server")
    parser.add_argument("service", nargs="?", default="", help='service name ("" = overall)')
    parser.add_argument("--timeout-s", type=float, default=3.0, help="deadline of the call (default 3)")
    args = parser.parse_args(argv)
    serving, line = check(args.target, args.service, args.timeout_s)
    print(line, flush=True)
    return 0 if serving else 1


if __name__ == "__main__":
    sys.exit(main())

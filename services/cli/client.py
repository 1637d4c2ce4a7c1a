"""Peer addresses, channels and one-line errors for the CLI's gRPC calls."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from grpc_status import rpc_status

from services.common.channels import PeerSecurity, make_channel

DEFAULT_ADDRS = {
    "router": "127.0.0.1:50051",
    "cache": "127.0.0.1:50052",
    "health": "127.0.0.1:50053",
    "prewarm": "127.0.0.1:50054",
}


class CliError(Exception):
    """An error shown as one line `corral: error: ...` with exit code 1."""


class UsageError(CliError):
    """A command line that cannot work as given; exit code 2, as argparse's own usage errors."""


def env_addr(service: str) -> str:
    """The default address of a service: $CORRAL_<SERVICE>_ADDR, else the local default."""
    return os.environ.get(f"CORRAL_{service.upper()}_ADDR") or DEFAULT_ADDRS[service]


@dataclass
class Peers:
    """The service addresses the command talks to, and the unary deadline."""

    router: str
    cache: str
    health: str
    prewarm: str
    timeout_s: float

    def addr(self, service: str) -> str:
        """The address of one service."""
        return str(getattr(self, service))

    def channel(self, service: str) -> grpc.aio.Channel:
        """A channel to one service, presenting $CORRAL_API_KEY when it is set (auth on)."""
        return make_channel(
            self.addr(service), security=PeerSecurity(api_key=os.environ.get("CORRAL_API_KEY", ""))
        )


def describe_rpc_error(exc: grpc.aio.AioRpcError, service: str, addr: str) -> str:
    """One line for a failed call, naming the service and what went wrong."""
    code = exc.code()
    if code == grpc.StatusCode.UNAVAILABLE and "connect" in (exc.details() or "").lower():
        hint = f"set --{service} or CORRAL_{service.upper()}_ADDR"
        return f"cannot reach the {service} service at {addr} (is it running? {hint})"
    if code == grpc.StatusCode.UNAVAILABLE:
        return f"the {service} service at {addr} is unavailable: {exc.details()}"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"the {service} service at {addr} did not answer in time"
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return f"the {service} service at {addr} does not implement this call"
    message = exc.details() or code.name.lower()
    try:
        status = rpc_status.from_call(exc)
        if status is not None and status.message:
            message = status.message
    except (ValueError, AttributeError, TypeError):
        pass
    return f"{service}: {message}"


def to_json(message: Message) -> dict[str, Any]:
    """A proto message as JSON with field names as in the .proto."""
    result: dict[str, Any] = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return result

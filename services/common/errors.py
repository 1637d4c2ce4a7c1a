"""Domain errors and their mapping to gRPC status codes with google.rpc.ErrorInfo details."""

from __future__ import annotations

import math

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status


class CorralError(Exception):
    """Base of the errors a servicer raises; the interceptor turns them into a gRPC status.

    Attributes:
        code: The gRPC status code.
        reason: The ErrorInfo reason (UPPER_SNAKE, stable, for machines).
        message: The human-readable message.
        field: For invalid arguments, the offending field path (e.g. "spec.messages[1].role").
        retry_after_s: When a retry may succeed, in seconds (HTTP `Retry-After`); None: no suggestion.
    """

    code = grpc.StatusCode.UNKNOWN
    default_reason = "UNKNOWN"
    retry_after_s: float | None = None

    def __init__(self, message: str, *, reason: str | None = None, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.field = field


def retry_after_header(seconds: float) -> str:
    """Seconds as an HTTP `Retry-After` value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))


class InvalidArgument(CorralError):
    """The request is malformed; the message names the field."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"

    def __init__(self, field: str, message: str, *, reason: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message, reason=reason, field=field)


class NotFound(CorralError):
    """A named thing does not exist."""

    code = grpc.StatusCode.NOT_FOUND
    default_reason = "NOT_FOUND"


class AlreadyExists(CorralError):
    """The thing to create exists already."""

    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(CorralError):
    """The system is not in a state that allows the call."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class ResourceExhausted(CorralError):
    """A limit was reached (concurrency, rate, size)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"


class Unavailable(CorralError):
    """No backend can serve the call now; the caller may retry."""

    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "UNAVAILABLE"


class DeadlineExceeded(CorralError):
    """The call's deadline passed."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    default_reason = "DEADLINE_EXCEEDED"


class Unauthenticated(CorralError):
    """No valid credentials."""

    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class PermissionDenied(CorralError):
    """The credentials do not allow the call."""

    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


def to_status(err: CorralError, domain: str) -> grpc.Status:
    """Builds the rich status (google.rpc.Status with ErrorInfo and, for fields, BadRequest)."""
    details: list[any_pb2.Any] = []
    info = error_details_pb2.ErrorInfo(reason=err.reason, domain=domain)
    if err.field:
        info.metadata["field"] = err.field
    packed = any_pb2.Any()
    packed.Pack(info)
    details.append(packed)
    if err.field:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=err.field, description=err.message)
            ]
        )
        packed_bad = any_pb2.Any()
        packed_bad.Pack(bad)
        details.append(packed_bad)
    status = status_pb2.Status(code=getattr(code_pb2, err.code.name), message=err.message, details=details)
    return rpc_status.to_status(status)


def error_info(status: status_pb2.Status | None) -> error_details_pb2.ErrorInfo | None:
    """Extracts the ErrorInfo from a decoded rich status, if any."""
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None

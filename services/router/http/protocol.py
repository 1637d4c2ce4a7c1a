"""The slice of the router core that the HTTP API calls (a Protocol, so tests can pass a fake)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol, runtime_checkable

from corral.v1 import router_service_pb2 as rpb


class RouterCoreProtocol(Protocol):
    """What the HTTP layer needs from the in-process router core.

    Every method raises the domain errors of services/common/errors.py; `deadline_s` is the time the
    request may still take, in seconds (None: the router's request_timeout_s). HTTP clients set no
    deadline, so the API passes None.
    """

    async def generate(
        self, request: rpb.GenerateRequest, *, tenant: str, deadline_s: float | None
    ) -> rpb.GenerateResponse:
        """Answers a completion in one response (also model loads and unloads)."""
        ...

    def generate_stream(
        self, request: rpb.GenerateStreamRequest, *, tenant: str, deadline_s: float | None
    ) -> AsyncIterator[rpb.GenerateStreamResponse]:
        """Streams a completion; the last chunk has done set."""
        ...

    async def chat(
        self, request: rpb.ChatRequest, *, tenant: str, deadline_s: float | None
    ) -> rpb.ChatResponse:
        """Answers a chat in one response (also model loads and unloads)."""
        ...

    def chat_stream(
        self, request: rpb.ChatStreamRequest, *, tenant: str, deadline_s: float | None
    ) -> AsyncIterator[rpb.ChatStreamResponse]:
        """Streams a chat answer; the last chunk has done set."""
        ...

    async def embed(
        self, request: rpb.EmbedRequest, *, tenant: str, deadline_s: float | None
    ) -> rpb.EmbedResponse:
        """Embeds the inputs."""
        ...

    async def list_models(
        self, request: rpb.ListModelsRequest, *, tenant: str, deadline_s: float | None
    ) -> rpb.ListModelsResponse:
        """The union of the fleet's models with their placements."""
        ...


@runtime_checkable
class ShowCapable(Protocol):
    """Optional: a core that forwards an `/api/show` body to a node holding the model."""

    async def show(self, body: dict[str, Any], *, tenant: str, deadline_s: float | None) -> dict[str, Any]:
        """Returns the node's `/api/show` JSON; raises NotFound for an unknown model."""
        ...

"""Building response messages: assembling streamed pieces, stream chunks, and replaying cached answers."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from corral.v1 import common_pb2, router_service_pb2

from services.router.forward import Final, Piece
from services.router.translate import timestamp_from, tool_calls_from

Answer = router_service_pb2.GenerateResponse | router_service_pb2.ChatResponse
GenerateChunk = router_service_pb2.GenerateStreamResponse
ChatChunk = router_service_pb2.ChatStreamResponse

REPLAY_CHUNK_CHARS = 64


@dataclass(slots=True)
class Done:
    """The complete answer of a request.

    Attributes:
        answer: The full response (text, stats, routing).
        live: True when its text was already streamed piece by piece; False for a cache hit or a
            coalesced answer, whose text a stream must replay.
    """

    answer: Answer
    live: bool


class Assembler:
    """Accumulates a live answer's pieces into the unary response."""

    def __init__(self, model: str, chat: bool) -> None:
        self._model = model
        self._chat = chat
        self._text: list[str] = []
        self._thinking: list[str] = []
        self._tool_calls: list[common_pb2.ToolCall] = []

    def add(self, piece: Piece) -> None:
        """Adds one piece."""
        if piece.text:
            self._text.append(piece.text)
        if piece.thinking:
            self._thinking.append(piece.thinking)
        if piece.tool_calls:
            self._tool_calls.extend(tool_calls_from(piece.tool_calls))

    def finish(self, final: Final) -> Answer:
        """The complete response."""
        created = timestamp_from(final.created_at)
        if self._chat:
            message = common_pb2.ChatMessage(
                role="assistant",
                content="".join(self._text),
                thinking="".join(self._thinking),
                tool_calls=self._tool_calls,
            )
            return router_service_pb2.ChatResponse(
                model=self._model,
                message=message,
                done_reason=final.done_reason,
                stats=final.stats,
                routing=final.routing,
                created_at=created,
            )
        return router_service_pb2.GenerateResponse(
            model=self._model,
            response="".join(self._text),
            thinking="".join(self._thinking),
            done_reason=final.done_reason,
            stats=final.stats,
            routing=final.routing,
            created_at=created,
            context=final.context or [],
        )


def generate_chunk(model: str, piece: Piece) -> GenerateChunk:
    """A stream chunk for one piece of a completion."""
    return GenerateChunk(
        model=model, response=piece.text, thinking=piece.thinking, created_at=timestamp_from(piece.created_at)
    )


def chat_chunk(model: str, piece: Piece) -> ChatChunk:
    """A stream chunk for one piece of a chat answer."""
    message = common_pb2.ChatMessage(role="assistant", content=piece.text, thinking=piece.thinking)
    if piece.tool_calls:
        message.tool_calls.extend(tool_calls_from(piece.tool_calls))
    return ChatChunk(model=model, message=message, created_at=timestamp_from(piece.created_at))


def split_text(text: str, size: int = REPLAY_CHUNK_CHARS) -> list[str]:
    """Splits text into pieces of about `size` characters, cutting after whitespace where possible."""
    parts: list[str] = []
    while len(text) > size:
        cut = text.rfind(" ", 0, size) + 1 or size
        parts.append(text[:cut])
        text = text[cut:]
    if text:
        parts.append(text)
    return parts


def generate_chunks(answer: router_service_pb2.GenerateResponse, replay: bool) -> Iterator[GenerateChunk]:
    """The stream for a complete completion: its text in pieces (when replaying), then the final chunk."""
    if replay:
        if answer.thinking:
            yield GenerateChunk(model=answer.model, thinking=answer.thinking, created_at=answer.created_at)
        for part in split_text(answer.response):
            yield GenerateChunk(model=answer.model, response=part, created_at=answer.created_at)
    yield GenerateChunk(
        model=answer.model,
        done=True,
        done_reason=answer.done_reason,
        stats=answer.stats,
        routing=answer.routing,
        created_at=answer.created_at,
        context=answer.context,
    )


def chat_chunks(answer: router_service_pb2.ChatResponse, replay: bool) -> Iterator[ChatChunk]:
    """The stream for a complete chat answer: its message in pieces (when replaying), then the final chunk."""
    if replay:
        msg = answer.message
        if msg.thinking:
            yield ChatChunk(
                model=answer.model,
                message=common_pb2.ChatMessage(role="assistant", thinking=msg.thinking),
                created_at=answer.created_at,
            )
        for part in split_text(msg.content):
            yield ChatChunk(
                model=answer.model,
                message=common_pb2.ChatMessage(role="assistant", content=part),
                created_at=answer.created_at,
            )
        if msg.tool_calls:
            yield ChatChunk(
                model=answer.model,
                message=common_pb2.ChatMessage(role="assistant", tool_calls=msg.tool_calls),
                created_at=answer.created_at,
            )
    yield ChatChunk(
        model=answer.model,
        message=common_pb2.ChatMessage(role="assistant"),
        done=True,
        done_reason=answer.done_reason,
        stats=answer.stats,
        routing=answer.routing,
        created_at=answer.created_at,
    )

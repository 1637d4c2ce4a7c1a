"""ModelService refuses a request without a model name before asking any node (no I/O)."""

from __future__ import annotations

from typing import Any

import pytest
from corral.v1 import model_service_pb2 as mpb

from services.common.errors import InvalidArgument
from services.router.model_servicer import ModelServicer


class _Admin:
    """Records every call; a servicer that validates never reaches it."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def select(self, selector: Any) -> list[Any]:
        self.calls.append("select")
        return []

    async def delete(self, model: str, nodes: Any) -> list[Any]:
        self.calls.append("delete")
        return []

    async def copy(self, source: str, destination: str, nodes: Any) -> list[Any]:
        self.calls.append("copy")
        return []

    def pull(self, model: str, nodes: Any) -> Any:
        self.calls.append("pull")
        raise AssertionError("not reached")


@pytest.fixture
def admin() -> _Admin:
    return _Admin()


@pytest.fixture
def servicer(admin: _Admin) -> ModelServicer:
    return ModelServicer(admin)  # type: ignore[arg-type]


async def test_a_pull_without_a_model_is_refused(servicer: ModelServicer, admin: _Admin) -> None:
    with pytest.raises(InvalidArgument) as caught:
        async for _ in servicer.PullModel(mpb.PullModelRequest(), None):  # type: ignore[arg-type]
            pass
    assert caught.value.field == "model"
    assert admin.calls == []


async def test_a_delete_without_a_model_is_refused(servicer: ModelServicer, admin: _Admin) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await servicer.DeleteModel(mpb.DeleteModelRequest(), None)  # type: ignore[arg-type]
    assert caught.value.field == "model"
    assert admin.calls == []


@pytest.mark.parametrize(
    ("source", "destination", "field"),
    [("", "b", "source"), ("a", "", "destination"), ("a", " ", "destination")],
)
async def test_a_copy_without_source_or_destination_is_refused(
    servicer: ModelServicer, admin: _Admin, source: str, destination: str, field: str
) -> None:
    request = mpb.CopyModelRequest(source=source, destination=destination)
    with pytest.raises(InvalidArgument) as caught:
        await servicer.CopyModel(request, None)  # type: ignore[arg-type]
    assert caught.value.field == field
    assert admin.calls == []


async def test_a_named_copy_reaches_the_fleet(servicer: ModelServicer, admin: _Admin) -> None:
    await servicer.CopyModel(mpb.CopyModelRequest(source="a", destination="b"), None)  # type: ignore[arg-type]
    assert admin.calls == ["select", "copy"]

"""`corral models pull` progress rendered without a terminal: one line per node and state."""

from __future__ import annotations

import io

from corral.v1 import model_service_pb2 as mpb
from corral.v1 import prewarm_service_pb2 as ppb
from rich.console import Console

from services.cli.manage import PullView, node_line
from services.cli.render import required_models_view

MB = 1_000_000


def _snapshot(
    *nodes: tuple[str, mpb.NodeModelState.ValueType, int, int, str], done: bool = False
) -> mpb.PullModelResponse:
    return mpb.PullModelResponse(
        nodes=[
            mpb.NodeModelProgress(node_id=n, state=s, total=t, completed=c, error=e)
            for n, s, t, c, e in nodes
        ],
        done=done,
    )


def test_pull_progress_is_one_line_per_node_and_state_without_a_terminal() -> None:
    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=False)
    queued, pulling = mpb.NODE_MODEL_STATE_QUEUED, mpb.NODE_MODEL_STATE_PULLING
    done, failed = mpb.NODE_MODEL_STATE_DONE, mpb.NODE_MODEL_STATE_FAILED
    refused = "cannot reach the node (ClientConnectorError: refused)"
    snapshots = [
        _snapshot(("node-1", pulling, 0, 0, ""), ("node-2", pulling, 0, 0, ""), ("node-3", queued, 0, 0, "")),
        _snapshot(
            ("node-1", pulling, 400 * MB, 100 * MB, ""),
            ("node-2", pulling, 400 * MB, 50 * MB, ""),
            ("node-3", queued, 0, 0, ""),
        ),
        _snapshot(
            ("node-1", pulling, 400 * MB, 300 * MB, ""),
            ("node-2", failed, 400 * MB, 50 * MB, refused),
            ("node-3", pulling, 0, 0, ""),
        ),
        _snapshot(
            ("node-1", done, 400 * MB, 400 * MB, ""),
            ("node-2", failed, 400 * MB, 50 * MB, refused),
            ("node-3", done, 400 * MB, 400 * MB, ""),
            done=True,
        ),
    ]
    with PullView(console) as view:
        for snapshot in snapshots:
            view.update(snapshot)
    lines = out.getvalue().splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["node-1", "pulling"],
        ["node-2", "pulling"],
        ["node-3", "queued"],
        ["node-2", "failed"],
        ["node-3", "pulling"],
        ["node-1", "done"],
        ["node-3", "done"],
    ]
    assert refused in lines[3]
    assert lines[5].split()[2:] == ["400.0", "MB", "/", "400.0", "MB"]
    assert all(len(line) <= 80 for line in lines)
    assert "\x1b" not in out.getvalue()


def test_node_line_shows_bytes_while_pulling_and_the_error_when_failed() -> None:
    pulling = mpb.NODE_MODEL_STATE_PULLING
    line = node_line(mpb.NodeModelProgress(node_id="node-1", state=pulling, total=4 * MB, completed=MB))
    assert line.split()[:2] == ["node-1", "pulling"] and "/" in line
    line = node_line(mpb.NodeModelProgress(node_id="node-2", state=mpb.NODE_MODEL_STATE_FAILED, error="boom"))
    assert line.split() == ["node-2", "failed", "boom"]


def test_required_models_show_where_each_is_missing_pulling_or_present() -> None:
    states = [
        ppb.RequiredModelStatus(node_id="node-1", model="mistral:7b", state=ppb.REQUIRED_MODEL_STATE_PRESENT),
        ppb.RequiredModelStatus(node_id="node-2", model="mistral:7b", state=ppb.REQUIRED_MODEL_STATE_PRESENT),
        ppb.RequiredModelStatus(
            node_id="node-10",
            model="mistral:7b",
            state=ppb.REQUIRED_MODEL_STATE_PULLING,
            completed=45 * MB,
            total=100 * MB,
        ),
        ppb.RequiredModelStatus(node_id="node-3", model="mistral:7b", state=ppb.REQUIRED_MODEL_STATE_MISSING),
        ppb.RequiredModelStatus(
            node_id="node-4", model="qwen2.5:0.5b", state=ppb.REQUIRED_MODEL_STATE_FAILED, error="disk full"
        ),
    ]
    out = io.StringIO()
    Console(file=out, width=80, force_terminal=False).print(required_models_view(states))
    text = out.getvalue()
    rows = {" ".join(line.split()[:2]): line for line in text.splitlines() if line.strip()}
    assert "node-1, node-2" in rows["mistral:7b present"]
    assert "node-10 45%" in rows["mistral:7b pulling"]
    assert "node-3" in rows["mistral:7b missing"]
    assert "node-4" in rows["qwen2.5:0.5b failed"]
    assert "node-4 qwen2.5:0.5b: disk full" in text
    assert all(len(line) <= 80 for line in text.splitlines())

"""devstack.ports: ports outside the ephemeral range, locked across processes, free when handed out."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack import ports
from tests.helpers.procs import ROOT, PortInUse, ServiceProcess, base_env

# A child that allocates, reports what it got on one line, and holds its locks until stdin closes.
_HOLDER = """
import json, sys
from devstack import ports
got = {"single": ports.allocate_many(40), "block": list(ports.allocate_block(8))}
print(json.dumps(got), flush=True)
sys.stdin.read()
"""


def _holder() -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _HOLDER],
        cwd=ROOT,
        env=base_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _report(child: subprocess.Popen[str]) -> dict[str, list[int]]:
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line, f"the holder exited with {child.wait(10)}"
    report: dict[str, list[int]] = json.loads(line)
    return report


@pytest.fixture
def bound_port() -> Iterator[int]:
    """A port in the allocator's range that no allocator holds, bound by a plain listening socket."""
    port = ports.allocate()
    ports.release(port)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        yield port


def test_ports_lie_outside_the_ephemeral_range() -> None:
    first, last = ports.ephemeral_range()
    handed_out = [ports.allocate(), *ports.allocate_many(5), *ports.allocate_block(4)]
    assert len(set(handed_out)) == len(handed_out)
    for port in handed_out:
        assert not first <= port <= last
        assert port in ports.port_range()


def test_the_range_follows_the_kernel_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    setting = tmp_path / "ip_local_port_range"
    monkeypatch.setattr(ports, "_RANGE_FILE", setting)
    assert ports.ephemeral_range() == (32768, 60999)  # unreadable: the Linux default
    setting.write_text("1024\t63000\n")
    assert ports.port_range() == range(63001, 65536)  # no room below: above it
    setting.write_text("40000 60999\n")
    assert ports.port_range() == range(ports.FLOOR, 40000)


def test_two_processes_allocating_at_once_get_disjoint_ports() -> None:
    children = [_holder() for _ in range(3)]
    try:
        reports = [_report(child) for child in children]
    finally:
        for child in children:
            child.communicate(timeout=30)
    seen: list[int] = []
    for report in reports:
        block = report["block"]
        assert block == list(range(block[0], block[0] + 8))
        seen += report["single"] + block
    assert len(seen) == len(set(seen)) == 3 * 48


def test_a_port_bound_by_another_socket_is_skipped(bound_port: int) -> None:
    # A fresh process: nothing but the bind check keeps it off the port (not its own bookkeeping).
    probe = (
        "import sys; from devstack import ports; port = int(sys.argv[1]); "
        "reserved = ports.try_reserve(port); "
        "ports._cursor = port; "  # start the search at the bound port: it must be stepped over
        "print(reserved, ports.allocate() != port)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, str(bound_port)],
        cwd=ROOT,
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert not ports.is_bindable(bound_port)
    assert result.stdout.split() == ["False", "True"]


def test_a_lock_is_released_when_its_holder_exits() -> None:
    child = _holder()
    try:
        held = _report(child)["single"][0]
        assert not ports.try_reserve(held)  # free to bind, but locked by the other process
    finally:
        child.send_signal(signal.SIGKILL)  # no clean-up code runs: the kernel drops the lock
        child.communicate(timeout=30)
    assert ports.try_reserve(held)
    ports.release(held)


def test_a_block_is_consecutive_and_free() -> None:
    block = ports.allocate_block(6)
    assert block == tuple(range(block[0], block[0] + 6))
    assert all(ports.is_bindable(port) for port in block)
    assert not set(block) & set(ports.allocate_block(6))


def test_port_in_use_messages_are_recognised() -> None:
    for message in (
        "corral-sim: error: [Errno 98] Address already in use",
        "OSError: error while attempting to bind on address ('127.0.0.1', 5): address already in use",
        "RuntimeError: Failed to bind to address 127.0.0.1:5; set GRPC_VERBOSITY=debug",
        "Warning: Could not create server TCP listening socket 127.0.0.1:5: bind: Address already in use",
        "redis start: redis: port 5 is already in use",
    ):
        assert ports.mentions_port_in_use(message), message
    assert not ports.mentions_port_in_use("corral-router: serving on 127.0.0.1:5")


async def test_a_child_that_finds_its_port_taken_raises_port_in_use(bound_port: int) -> None:
    node = ServiceProcess("sim", args=("--port", str(bound_port), "--no-admin"))
    with pytest.raises(PortInUse, match="already in use"):
        await node.start()

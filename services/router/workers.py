"""`router.workers`: several router processes on the same ports, so one host or pod uses several cores.

One Python process runs one event loop on one core; the router's CPU per request (docs/router.md,
"Performance") makes that core the limit before the nodes are. With `workers: N` the process started
as `python -m services.router` becomes a small supervisor: it starts N workers (`--worker i`), each
a complete router with its own channels and streams to health and the cache, all listening on the
same gRPC and HTTP ports with SO_REUSEPORT, so the kernel spreads new connections over them.

The supervisor forwards SIGTERM and SIGINT to every worker, each drains its own calls (`grace_s`), and
it exits when all have, with the highest exit status. A worker that exits while no stop was asked for
takes the others down with it (SIGTERM, so they drain) and the supervisor exits non-zero: the
orchestrator restarts the whole router rather than leaving it at a fraction of its capacity unseen.

A gRPC port of 0 is resolved once, by the supervisor, which keeps the port bound (not listening)
until the workers are gone, so every worker gets the same port. What a worker does not share: its
in-process state (single-flight, near cache, learned costs, admission queue), exactly as between
router replicas.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
from types import FrameType

from services.common.config import CorralConfig

# NOTE: prctl(2): the signal a process gets when its parent dies.
_PR_SET_PDEATHSIG = 1


def worker_config(cfg: CorralConfig, index: int) -> CorralConfig:
    """The configuration of worker `index`: its metrics on `metrics_port` + index (0 stays off), one
    worker (it does not supervise)."""
    router = cfg.router
    metrics_port = router.metrics_port + index if router.metrics_port else 0
    return cfg.model_copy(
        update={"router": router.model_copy(update={"metrics_port": metrics_port, "workers": 1})}
    )


def _reserve(host: str) -> socket.socket:
    """A socket bound to a free port on `host` with SO_REUSEPORT and not listening: it holds the port
    for the workers, which bind it too, and takes no connections itself."""
    family, kind, proto, _, address = socket.getaddrinfo(host.strip("[]"), 0, type=socket.SOCK_STREAM)[0]
    reservation = socket.socket(family, kind, proto)
    reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    reservation.bind(address)
    return reservation


def _die_with_parent() -> None:
    """In the worker before exec (Linux): SIGTERM when the supervisor dies, even by SIGKILL, so no
    worker outlives it holding the ports."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def supervise(cfg: CorralConfig) -> int:
    """Runs `router.workers` worker processes until they have all exited; their highest exit status."""
    router = cfg.router
    env = dict(os.environ)
    reservation = None
    if router.port == 0:
        reservation = _reserve(router.host)
        env["CORRAL_ROUTER__PORT"] = str(reservation.getsockname()[1])
    workers: dict[int, subprocess.Popen[bytes]] = {}
    stopping = False

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for proc in workers.values():
            if proc.poll() is None:
                proc.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    try:
        for index in range(router.workers):
            if stopping:
                break
            proc = subprocess.Popen(
                [sys.executable, "-m", "services.router", "--worker", str(index)],
                env=env,
                # NOTE: preexec_fn is safe here: the supervisor runs no threads.
                preexec_fn=_die_with_parent,
            )
            workers[proc.pid] = proc
        print(
            f"corral-router: {router.workers} workers (pids {', '.join(map(str, workers))})",
            file=sys.stderr,
            flush=True,
        )
        status = 0
        while workers:
            pid, code = os.waitpid(-1, 0)
            if pid not in workers:
                continue
            proc = workers.pop(pid)
            returncode = os.waitstatus_to_exitcode(code)
            proc.returncode = returncode
            status = max(status, returncode if returncode >= 0 else 128 - returncode)
            if not stopping:
                print(
                    f"corral-router: worker {pid} exited with status {returncode}; stopping the others",
                    file=sys.stderr,
                    flush=True,
                )
                status = max(status, 1)
                forward(signal.SIGTERM, None)
        return status
    finally:
        if reservation is not None:
            reservation.close()

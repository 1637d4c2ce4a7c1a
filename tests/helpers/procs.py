"""Run Corral services (or any module) as separate OS processes in tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from devstack import ports
from devstack._process import PortInUseError

ROOT = Path(__file__).resolve().parents[2]
_READY = re.compile(r"serving on [^:\s]+:(\d+)|listening on [^:\s]+:(\d+)")


def free_port() -> int:
    """Returns a TCP port on 127.0.0.1 that is free and reserved for this process (devstack.ports)."""
    return ports.allocate()


class PortInUse(PortInUseError):
    """The child exited before it was ready because a port it had to bind was taken (EADDRINUSE).

    Whoever chose the port may pick another one and start the child again.
    """


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a child process: PYTHONPATH with the repo and gen/python, no stray config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "gen" / "python"), env.get("PYTHONPATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("CORRAL_LOGGING__LEVEL", "WARNING")
    # NOTE: the router's HTTP API defaults to the fixed port 11400; tests that want it pass a free port.
    env.setdefault("CORRAL_ROUTER__HTTP_PORT", "0")
    if extra:
        env.update(extra)
    return env


async def run_cli(env: Mapping[str, str], *args: str, stdin: bytes = b"") -> tuple[int, str, str]:
    """Runs the `corral` CLI as a separate process, as an operator would, 80 columns wide.

    Returns:
        (exit code, stdout, stderr).
    """
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        *args,
        env=base_env({**env, "COLUMNS": "80"}),
        cwd=str(ROOT),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), 60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def configuration_error_of(service: str, env: Mapping[str, str]) -> str:
    """Starts `services.<service>` with `env`, expects it to refuse its configuration, returns the line.

    The service must exit with status 2 and print exactly one `corral-<service>: configuration
    error:` line on stderr, as every service does for a configuration it cannot use.
    """
    done = subprocess.run(
        [sys.executable, "-m", f"services.{service}"],
        env=base_env(env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    prefix = f"corral-{service}: configuration error:"
    lines = [line for line in done.stderr.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, done.stderr
    return lines[0]


class ServiceProcess:
    """A Python module run as a child process that announces readiness on stdout.

    The child prints a line containing "serving on HOST:PORT" (Corral services) or
    "listening on HOST:PORT" (the simulator) once it accepts connections.
    """

    def __init__(self, module: str, env: Mapping[str, str] | None = None, args: tuple[str, ...] = ()) -> None:
        self.module = module
        self.env = base_env(env)
        self.args = args
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0
        self.output: list[str] = []
        self._reader: asyncio.Task[None] | None = None

    async def start(self, timeout_s: float = 30.0) -> ServiceProcess:
        """Starts the process and waits for its readiness line."""
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            self.module,
            *self.args,
            env=self.env,
            cwd=str(ROOT),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read(ready))
        try:
            self.port = await asyncio.wait_for(ready, timeout_s)
        except EOFError as exc:
            # NOTE: the process is exiting on its own; signalling it now would make Popen reap it
            # first and asyncio's child watcher report 255 instead of its real exit status.
            await self.wait(10)
            output = "".join(self.output[-40:])
            if ports.mentions_port_in_use(output):
                raise PortInUse(f"{self.module}: a port it needs is already in use:\n{output}") from exc
            raise RuntimeError(f"{self.module} did not become ready:\n{output}") from exc
        except TimeoutError as exc:
            await self.kill()
            raise RuntimeError(f"{self.module} did not become ready:\n" + "".join(self.output[-40:])) from exc
        return self

    async def _read(self, ready: asyncio.Future[int]) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                if not ready.done():
                    ready.set_exception(EOFError("process exited"))
                return
            text = line.decode(errors="replace")
            self.output.append(text)
            if len(self.output) > 2000:
                del self.output[:1000]
            match = _READY.search(text)
            if match and not ready.done():
                ready.set_result(int(match.group(1) or match.group(2)))

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, sig: int) -> None:
        """Sends a signal to the process."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(sig)

    async def wait(self, timeout_s: float = 30.0) -> int:
        """Waits for the process to exit and returns its exit code."""
        assert self.proc is not None
        code = await asyncio.wait_for(self.proc.wait(), timeout_s)
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 5)
        return code

    async def terminate(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, then wait for exit."""
        self.signal(signal.SIGTERM)
        return await self.wait(timeout_s)

    async def kill(self) -> None:
        """SIGKILL (after SIGCONT, in case it was stopped) and reap."""
        if self.proc is None or self.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
        with contextlib.suppress(Exception):
            await self.wait(10)

    async def __aenter__(self) -> ServiceProcess:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.kill()
